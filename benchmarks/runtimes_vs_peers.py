"""Every CPU runtime and precision on one small ResNet, measured by the harness and by a peer
in the same process, interleaved in short slices, with the ratio's 95% confidence interval.

Per cell, the runner loads the model with LoadContext(threads=Threads(intra=--threads)) (default
1 thread, so the two sides cannot differ) and prepares one callable; both sides time that same
callable, in pairs of short slices (default 0.2 s each, order alternating harness-peer,
peer-harness, ...):

* harness: measure_callable(fn, Settings(warmup=0, min_duration=slice, max_duration=slice,
  min_queries=1), "offline", batch); ms per query = 1000 / busy-time queries_per_s (the
  measured window only; gc.collect and the monitors of each call are outside it);
* peer, ONNX Runtime cells: a hand-written tight loop over the callable (one clock read per
  ~5 ms chunk, gc off as in the harness and timeit);
* peer, torch cells: torch.utils.benchmark.Timer(num_threads=the runner's intra-op threads)
  .blocked_autorange(min_run_time=slice).mean (its block-size estimate runs before and is not
  counted; a slice is therefore up to ~2x longer).

Ratio = harness ms / peer ms per pair; the script prints the geometric mean over pairs with a
95% bootstrap CI and a verdict against "within 3%" ([0.97, 1.03]): holds (whole CI inside),
fails (whole CI outside), or too noisy to tell. Undecided after --pairs, a cell adds pairs (up
to --max-pairs) while undecided and while its share of --budget-s lasts (the remaining budget
split evenly over the remaining cells; loading counts against it).

    python benchmarks/runtimes_vs_peers.py [--pairs 20] [--max-pairs 60] [--slice 0.2]
        [--batch 8] [--threads 1] [--cells onnxruntime,torch/fp32] [--budget-s 220]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _paired  # noqa: E402

from pytest_inferbench.workload.engine import measure_callable  # noqa: E402
from pytest_inferbench.models.cache import ArtifactCache  # noqa: E402
from pytest_inferbench.runtimes import runner_class  # noqa: E402
from pytest_inferbench.runtimes.base import LoadContext, RuntimeUnavailable  # noqa: E402
from pytest_inferbench.spec import ResNetSpec, Settings, Threads  # noqa: E402

CELLS = [("torch", "fp32", {}), ("torch", "bf16", {}), ("torchscript", "fp32", {}),
         ("torchscript", "bf16", {}), ("torch_compile", "fp32", {}),
         ("onnxruntime", "fp32", {}), ("onnxruntime", "fp16", {}), ("onnxruntime", "int8", {}),
         ("onnxruntime", "fp32", {"graph_optimization": "basic"})]

TARGET = _paired.Target(lo=0.97, hi=1.03)


def cell_label(runtime: str, precision: str, options: dict) -> str:
    opts = f"({','.join(f'{k}={v}' for k, v in options.items())})" if options else ""
    return f"{runtime}{opts}/{precision}"


def peer_for(runtime: str, runner, fn, slice_s: float, threads: int):
    """(name, measure() -> ms per query, threads the peer runs with)."""
    if runtime == "onnxruntime":
        def tight_ms():
            n, s = _paired.tight_loop(fn, slice_s)
            return s / n * 1e3
        return "tight loop", tight_ms, runner.info().get("intra_op_threads")
    from torch.utils.benchmark import Timer
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)

    def autorange_ms():
        return timer.blocked_autorange(min_run_time=slice_s).mean * 1e3
    return "blocked_autorange", autorange_ms, timer._task_spec.num_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20, help="pairs always run per cell (20)")
    ap.add_argument("--max-pairs", type=int, default=60,
                    help="adaptive cap per cell while undecided (60; = --pairs: off)")
    ap.add_argument("--slice", type=float, default=0.2, help="seconds per slice (0.2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads given to every runner and to its peer (1)")
    ap.add_argument("--cells", default="",
                    help="comma-separated substrings of cell labels such as torch/fp32, "
                         "onnxruntime(graph_optimization=basic)/fp32; default: all")
    ap.add_argument("--budget-s", type=float, default=220.0,
                    help="total seconds for the script, split over the cells (220)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    terms = [t.strip() for t in args.cells.split(",") if t.strip()]
    cells = [c for c in CELLS if not terms or any(t in cell_label(*c) for t in terms)]
    if not cells:
        sys.exit(f"--cells {args.cells!r} matches none of: "
                 + ", ".join(cell_label(*c) for c in CELLS))
    model = ResNetSpec(depth=18, width=16, resolution=64, classes=10)
    settings = Settings(warmup=0, min_duration=args.slice, max_duration=args.slice,
                        min_queries=1)
    print(f"model: {model.label()}, batch {args.batch}, intra-op threads {args.threads} on both "
          f"sides; {args.pairs} pairs of {args.slice:g} s slices per cell, order alternating"
          + (f", up to {args.max_pairs} while undecided" if args.max_pairs > args.pairs else "")
          + f"; budget {args.budget_s:g} s")
    print("ratio = harness ms / peer ms per pair: geometric mean, 95% bootstrap CI over pairs; "
          f"target {TARGET.describe()}", flush=True)

    headers = ["cell", "threads", "harness ms", "peer ms", "ratio", "95% CI", "med", "pairs",
               "verdict", "peer"]
    rows, skipped, summary = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = ArtifactCache(tmp)
        for k, (runtime, precision, options) in enumerate(cells):
            label = cell_label(runtime, precision, options)
            runner = runner_class(runtime)()
            ctx = LoadContext(cache=cache, options=options, threads=Threads(intra=args.threads))
            try:
                runner.load(model, "cpu", precision, ctx)
                fn = runner.prepare(ctx.signature.generate(args.batch, seed=0))
            except RuntimeUnavailable as exc:
                skipped.append(f"{label}: skipped: {exc}")
                print(skipped[-1], flush=True)
                runner.close()
                continue
            try:
                harness_threads = runner.info().get("intra_op_threads")
                peer_name, peer, peer_threads = peer_for(runtime, runner, fn, args.slice,
                                                         args.threads)
                if harness_threads != peer_threads:
                    raise RuntimeError(f"{label}: thread settings differ: harness "
                                       f"{harness_threads}, peer {peer_threads}")

                def harness_ms():
                    r = measure_callable(fn, settings, "offline", args.batch)
                    return 1e3 / r.throughput.queries_per_s

                left = args.budget_s - (time.perf_counter() - t_start)
                share = max(left / (len(cells) - k), 0.0)
                decided = _paired.undecided_until(TARGET, lambda p: p.ratios())
                pairs = _paired.interleave(harness_ms, peer, args.pairs,
                                           max_pairs=args.max_pairs, budget_s=share,
                                           decided=decided)
            finally:
                runner.close()
            est = _paired.ratio_estimate(pairs.ratios())
            rows.append([label, f"{harness_threads}/{peer_threads}",
                         f"{np.median(pairs.side('a')):.4f}", f"{np.median(pairs.side('b')):.4f}",
                         f"{est.ratio:.3f}", est.interval(), f"{est.median:.3f}",
                         f"{len(pairs)}", _paired.verdict(est, TARGET), peer_name])
            summary.append(_paired.summary_line(f"{label} harness/{peer_name} time per query",
                                                est, TARGET))
            print(f"{label}: {est.ratio:.3f} {est.interval()} over {len(pairs)} pairs in "
                  f"{pairs.seconds:.1f} s (stopped: {pairs.stopped})", flush=True)
    print()
    print(_paired.table(headers, rows))
    for line in skipped:
        print(line)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    print()
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
