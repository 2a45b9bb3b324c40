"""Every CPU runtime and precision on one small ResNet, each measured by the harness and by a
peer in the same process, alternating: ONNX Runtime cells against a hand-written tight loop
over the same session, torch cells against torch.utils.benchmark's blocked_autorange on the
same callable. Prints ms per query from each (medians) and the median of the per-round ratios
(harness / peer; 1.00 = the same).
Target: every ratio within 3% of 1.

    python benchmarks/runtimes_vs_peers.py [--seconds 2] [--rounds 3] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from pytest_inferbench.measure.engine import measure_callable
from pytest_inferbench.models.cache import ArtifactCache
from pytest_inferbench.runtimes import runner_class
from pytest_inferbench.runtimes.base import LoadContext, RuntimeUnavailable
from pytest_inferbench.spec import ResNetSpec, Settings

CELLS = [("torch", "fp32", {}), ("torch", "bf16", {}), ("torchscript", "fp32", {}),
         ("torchscript", "bf16", {}), ("torch_compile", "fp32", {}),
         ("onnxruntime", "fp32", {}), ("onnxruntime", "fp16", {}), ("onnxruntime", "int8", {}),
         ("onnxruntime", "fp32", {"graph_optimization": "basic"})]


def tight_loop_ms(fn, seconds: float) -> float:
    clock = time.perf_counter
    n = 0
    t0 = clock()
    while clock() - t0 < seconds:
        for _ in range(16):
            fn()
        n += 16
    return (clock() - t0) / n * 1e3


def torch_timer_ms(fn, seconds: float) -> float:
    import torch
    from torch.utils.benchmark import Timer
    # Timer defaults to one thread; give it the threads the harness runs with
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()
              ).blocked_autorange(min_run_time=seconds)
    return m.mean * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default="", help="run only runtimes whose name contains this")
    args = ap.parse_args()
    model = ResNetSpec(depth=18, width=16, resolution=64, classes=10)
    settings = Settings(warmup=0.3, min_duration=args.seconds, max_duration=args.seconds,
                        min_queries=1)
    print(f"model: {model.label()} batch {args.batch}; {args.rounds} alternating rounds of "
          f"{args.seconds:g}s each; ratio = median over rounds of harness ms / peer ms")
    header = f"{'runtime':<30} {'prec':<5} {'harness ms':>10} {'peer ms':>9} {'ratio':>6}  peer"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        cache = ArtifactCache(tmp)
        for runtime, precision, options in CELLS:
            if args.only not in runtime:
                continue
            label = runtime + (f"({','.join(f'{k}={v}' for k, v in options.items())})"
                               if options else "")
            runner = runner_class(runtime)()
            ctx = LoadContext(cache=cache, options=options)
            try:
                runner.load(model, "cpu", precision, ctx)
            except RuntimeUnavailable as exc:
                print(f"{label:<30} {precision:<5} skipped: {exc}")
                continue
            fn = runner.prepare(ctx.signature.generate(args.batch, seed=0))
            peer_name = "tight loop" if runtime == "onnxruntime" else "blocked_autorange"
            peer = tight_loop_ms if runtime == "onnxruntime" else torch_timer_ms
            ours, theirs = [], []
            for i in range(args.rounds):
                order = [0, 1] if i % 2 == 0 else [1, 0]
                for which in order:
                    if which == 0:
                        r = measure_callable(fn, settings, "offline", args.batch)
                        ours.append(1e3 / r.throughput.queries_per_s)
                    else:
                        theirs.append(peer(fn, args.seconds))
            runner.close()
            h, p = statistics.median(ours), statistics.median(theirs)
            # ratio of each round's adjacent pair, then the median: robust to machine drift
            ratio = statistics.median(o / t for o, t in zip(ours, theirs))
            print(f"{label:<30} {precision:<5} {h:>10.4f} {p:>9.4f} {ratio:>6.3f}  {peer_name}")


if __name__ == "__main__":
    main()
