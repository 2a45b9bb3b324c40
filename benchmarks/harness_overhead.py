"""Harness overhead: offline throughput through pytest-inferbench vs a hand-written tight loop.

Both drive the same ONNX Runtime session of a tiny MLP in the same process, alternating, for
the same duration per round. Prints per-round throughputs and the median ratio
(harness / tight loop). Target: >= 0.97.

    python benchmarks/harness_overhead.py [--rounds 7] [--seconds 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from pytest_inferbench.measure.engine import measure_callable
from pytest_inferbench.models.artifacts import export_onnx
from pytest_inferbench.models.families import MLPSpec
from pytest_inferbench.spec import Settings


def tight_loop(run, seconds: float) -> float:
    """What a careful person writes by hand: chunked loop, one clock read per chunk."""
    clock = time.perf_counter
    n = 0
    t0 = clock()
    while True:
        for _ in range(256):
            run()
        n += 256
        if clock() - t0 >= seconds:
            break
    return n / (clock() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=192)   # ~20 us a call on 2 cores
    args = ap.parse_args()

    spec = MLPSpec(layers=2, hidden=64, features=32, classes=10)
    module, signature = spec.build()
    params = sum(p.numel() for p in module.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "mlp.onnx")
        export_onnx(module.eval(), signature, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = signature.generate(args.batch, seed=0)
    run = functools.partial(session.run, None, feeds)
    for _ in range(2000):
        run()
    settings = Settings(warmup=200, min_duration=args.seconds, max_duration=args.seconds,
                        min_queries=1)

    print(f"model: MLP {params} parameters, batch {args.batch}, onnxruntime {ort.__version__}")
    print(f"{'round':>5} {'harness q/s':>12} {'(wall q/s)':>12} {'tight q/s':>12} {'ratio':>7}")
    ratios, wall_ratios, call_us = [], [], []
    for i in range(args.rounds):
        loop_first = i % 2 == 1          # alternate the order to cancel drift
        if loop_first:
            loop_qps = tight_loop(run, args.seconds)
        result = measure_callable(run, settings, "offline", args.batch)
        if not loop_first:
            loop_qps = tight_loop(run, args.seconds)
        harness_qps = result.throughput.queries_per_s
        wall_qps = result.latency.n / result.wall_s
        ratios.append(harness_qps / loop_qps)
        wall_ratios.append(wall_qps / loop_qps)
        call_us.append(1e6 / loop_qps)
        print(f"{i:>5} {harness_qps:>12,.0f} {wall_qps:>12,.0f} {loop_qps:>12,.0f} "
              f"{ratios[-1]:>7.3f}")
    print(f"call time (tight loop): {statistics.median(call_us):.1f} us")
    print(f"median ratio harness/tight loop: {statistics.median(ratios):.3f} "
          f"(wall-clock based, including the harness's own checks: "
          f"{statistics.median(wall_ratios):.3f})")


if __name__ == "__main__":
    main()
