"""Harness overhead: offline throughput through pytest-inferbench vs a hand-written tight loop.

Both sides drive the same ONNX Runtime session of a tiny MLP (intra-op threads set once on the
session, `--threads`, default 1) in the same process, interleaved in many short slices (default
0.1 s each, order alternating harness-loop, loop-harness, ...). Each pair gives a ratio
harness/tight loop of throughput; the script prints the geometric-mean ratio with a 95%
bootstrap CI over pairs and a verdict against the target >= 0.97: holds (whole CI >= 0.97),
fails (whole CI below), or too noisy to tell. Undecided after --pairs, it adds pairs (up to
--max-pairs, within --budget-s) while the verdict is undecided.

A harness slice is one measure_callable(run, Settings(warmup=0, min_duration=slice,
max_duration=slice, min_queries=1), "offline", batch). Its throughput covers the measured
window only: from the clock read before the first query to the end of the last one, with the
harness's per-query clock read and append, chunking and stopping checks inside (busy time also
drops the time spent consulting the stopping rule; `wall` keeps it; for slices under 0.25 s the
rule is never consulted and the two coincide). Outside the window, and so outside both
ratios: measure_callable's per-call setup (gc.collect, process monitor start/stop) and the
summary statistics afterwards; that per-call cost is printed separately, with an "end to end"
ratio that includes it (informative only: it shrinks as the slice grows). The tight loop
times its own window the same way: first call to last return, gc off as in the harness.

    python benchmarks/harness_overhead.py [--pairs 60] [--max-pairs 600] [--slice 0.1]
        [--batch 192] [--threads 1] [--budget-s 180] [--verbose]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _paired  # noqa: E402

from pytest_inferbench.workload.engine import measure_callable  # noqa: E402
from pytest_inferbench.models.artifacts import export_onnx  # noqa: E402
from pytest_inferbench.models.families import build  # noqa: E402
from pytest_inferbench.spec.families import MLPSpec  # noqa: E402
from pytest_inferbench.spec import Settings  # noqa: E402

TARGET = _paired.Target(lo=0.97)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=60, help="pairs always run (default 60)")
    ap.add_argument("--max-pairs", type=int, default=600,
                    help="adaptive cap: add pairs while undecided, up to this (default 600; "
                         "equal to --pairs turns adaptation off)")
    ap.add_argument("--slice", type=float, default=0.1, help="seconds per slice (default 0.1)")
    ap.add_argument("--batch", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads of the one session both sides use")
    ap.add_argument("--budget-s", type=float, default=180.0,
                    help="seconds for the pairs (warm-up pair included): no pair starts that would "
                         "end past this (default 180)")
    ap.add_argument("--verbose", action="store_true", help="print every pair")
    args = ap.parse_args()

    spec = MLPSpec(layers=2, hidden=64, features=32, classes=10)
    module, signature = build(spec)
    params = sum(p.numel() for p in module.parameters())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "mlp.onnx")
        export_onnx(module.eval(), signature, path)
        session = ort.InferenceSession(str(path), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
    feeds = signature.generate(args.batch, seed=0)
    run = functools.partial(session.run, None, feeds)
    for _ in range(200):
        run()
    settings = Settings(warmup=0, min_duration=args.slice, max_duration=args.slice,
                        min_queries=1)
    clock = time.perf_counter

    def harness():
        t0 = clock()
        r = measure_callable(run, settings, "offline", args.batch)
        outer = clock() - t0
        n = r.latency.n
        return {"busy": r.throughput.queries_per_s, "wall": n / r.wall_s,
                "end_to_end": n / outer, "fixed_ms": (outer - r.wall_s) * 1e3}

    def tight():
        n, s = _paired.tight_loop(run, args.slice)
        return {"qps": n / s}

    def on_pair(i, p):
        if args.verbose:
            a, b = p.a[-1], p.b[-1]
            print(f"  pair {i:>4} ({'H-L' if p.a_first[-1] else 'L-H'}): harness "
                  f"{a['busy']:>9,.0f} q/s  loop {b['qps']:>9,.0f} q/s  "
                  f"ratio {a['busy'] / b['qps']:.3f}", flush=True)

    opts_used = session.get_session_options()
    print(f"model: MLP {params} parameters, batch {args.batch}, onnxruntime {ort.__version__}, "
          f"intra-op threads {opts_used.intra_op_num_threads} (one session, both sides)")
    print(f"{args.pairs} pairs of {args.slice:g} s slices, order alternating"
          + (f"; then up to {args.max_pairs} pairs while undecided" if args.max_pairs > args.pairs
             else "") + f"; budget {args.budget_s:g} s", flush=True)
    decided = _paired.undecided_until(TARGET, lambda p: p.ratios("busy", "qps"))
    pairs = _paired.interleave(harness, tight, args.pairs, max_pairs=args.max_pairs,
                               budget_s=args.budget_s, decided=decided, on_pair=on_pair)

    loop_qps = pairs.side("b", "qps")
    rows, claims = [], []
    for key, name, claim in (("busy", "harness/tight loop throughput (busy time)", True),
                             ("wall", "harness/tight loop throughput (window wall time)", True),
                             ("end_to_end", "end to end incl. per-call setup (info)", False)):
        est = _paired.ratio_estimate(pairs.ratios(key, "qps"))
        rows.append([key, f"{np.median(pairs.side('a', key)):,.0f}", f"{np.median(loop_qps):,.0f}",
                     f"{est.ratio:.3f}", est.interval(), f"{est.median:.3f}",
                     _paired.verdict(est, TARGET) if claim else "-"])
        if claim:
            claims.append(_paired.summary_line(name, est, TARGET))
    print()
    print(_paired.table(["harness q/s", "median", "loop q/s", "ratio", "95% CI", "med ratio",
                         "verdict"], rows))
    print(f"pairs: {len(pairs)} in {pairs.seconds:.1f} s (stopped: {pairs.stopped}); "
          f"call time (tight loop): {1e6 / np.median(loop_qps):.1f} us; measure_callable's "
          f"per-call setup outside the window: {np.median(pairs.side('a', 'fixed_ms')):.2f} ms "
          f"median")
    print()
    for line in claims:
        print(line)


if __name__ == "__main__":
    main()
