"""Load-generator capacity: the highest Poisson rate each generator sustains against a null
system under test (every query completes the moment it is issued), in one process.

"Sustained" means, over a run of --seconds: p99 of (completion - scheduled send) under 1 ms,
and completions at >= 99% of the target rate. For a null SUT that latency is the generator's
own send lag. Peer: MLPerf LoadGen's Python bindings (mlcommons-loadgen), server scenario,
whose SUT callback completes each query at once. Prints both sweeps and the ratio of the
highest sustained rates (target: >= 0.5).

    pip install mlcommons-loadgen && python benchmarks/loadgen_capacity.py
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

from pytest_inferbench.spec import Settings
from pytest_inferbench.workload.arrivals import schedule
from pytest_inferbench.workload.open_loop import NullSUT, run_open_loop

RATES = [5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 130_000,
         160_000, 200_000, 250_000, 300_000, 400_000, 500_000, 700_000, 1_000_000]


def ours(rate: float, seconds: float) -> tuple[float, float]:
    settings = Settings(warmup=0, min_duration=seconds, max_duration=seconds, min_queries=1,
                        ci_width=1e-12)
    sched = schedule("poisson", rate, seconds, seed=1)
    s = run_open_loop(NullSUT(), sched, settings, timeout_s=1.0)
    lat = s.latencies_ns
    p99_ms = float(np.percentile(lat, 99)) / 1e6
    done_rate = len(lat) / ((s.ends_ns.max() - s.starts_ns.min()) / 1e9)
    return p99_ms, done_rate


def loadgen(rate: float, seconds: float) -> tuple[float, float]:
    import mlperf_loadgen as lg

    def issue(samples):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in samples])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(1024, 1024, lambda s: None, lambda s: None)
    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = rate
    settings.server_target_latency_ns = 1_000_000
    settings.min_duration_ms = int(seconds * 1000)
    settings.max_duration_ms = int(seconds * 1000) + 1000
    settings.min_query_count = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        log = lg.LogSettings()
        log.log_output.outdir = tmp
        log.enable_trace = False
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
        text = Path(tmp, "mlperf_log_summary.txt").read_text()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    p99 = float(re.search(r"99\.00 percentile latency \(ns\)\s*:\s*(\d+)", text).group(1)) / 1e6
    done = float(re.search(r"Completed samples per second\s*:\s*([\d.]+)", text).group(1))
    return p99, done


def sweep(name, fn, seconds):
    best = 0.0
    print(f"\n{name}")
    print(f"{'target/s':>10} {'done/s':>10} {'p99 ms':>8}  sustained")
    for rate in RATES:
        p99, done = fn(rate, seconds)
        ok = p99 < 1.0 and done >= 0.99 * rate
        print(f"{rate:>10,} {done:>10,.0f} {p99:>8.3f}  {'yes' if ok else 'no'}")
        if ok:
            best = rate
        else:
            break
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    a = sweep("pytest-inferbench open loop (NullSUT)", ours, args.seconds)
    try:
        b = sweep("MLPerf LoadGen (Python bindings, null SUT)", loadgen, args.seconds)
    except ImportError:
        print("\nmlcommons-loadgen not installed: pip install mlcommons-loadgen")
        return
    print(f"\nhighest sustained Poisson rate: ours {a:,} /s, LoadGen {b:,} /s, ratio "
          f"{a / b if b else float('inf'):.2f}")


if __name__ == "__main__":
    main()
