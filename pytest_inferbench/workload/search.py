"""Rate searches built from open-loop server runs: `ramp` (InferBench's progressive mode) and
`capacity` (the highest rate that meets the SLO). Each step is a full server run, long enough
for LoadGen's early-stopping rule to prove the SLO at that rate (between min_duration and
max_duration), judged by that rule; an undetermined step counts as not meeting the SLO (it
could not be proven)."""

from __future__ import annotations

import numpy as np

from ..measure.early_stopping import min_passing_queries, verdict
from . import arrivals
from .open_loop import run_open_loop

MAX_STEPS = 24


def _step_seconds(settings, workload, rate) -> float:
    """Long enough for a verdict with no query over the bound (plus 30% for Poisson
    variation), within min_duration and max_duration."""
    slo = workload.slo_target()
    need = min_passing_queries(0, slo[0] / 100) * 1.3 if slo else settings.min_queries
    return min(max(settings.min_duration, need / rate), settings.max_duration)


def _step(make_sut, settings, workload, rate, target):
    seconds = _step_seconds(settings, workload, rate)
    step_settings = settings.model_copy(update={"min_duration": seconds, "max_duration": seconds})
    sched = arrivals.schedule(workload.arrival, rate, seconds, seed=settings.seed,
                              burstiness=workload.burstiness, on_s=workload.on,
                              off_s=workload.off)
    samples = run_open_loop(make_sut(), sched, step_settings, workload.timeout,
                            workload.send_lag_bound, target)
    lat = samples.latencies_ns
    row = {"rate": rate, "achieved_rate": samples.extra["achieved_rate"],
           "seconds": seconds, "completed_per_s": len(lat) / seconds,
           "p99_ms": float(np.percentile(lat, 99)) / 1e6 if len(lat) else None,
           "valid": samples.extra["valid"], "errors": samples.extra["errors"],
           "timeouts": samples.extra["timeouts"]}
    slo = workload.slo_target()
    if slo is not None:
        v = verdict(lat, int(slo[1] * 1e9), slo[0])
        row["verdict"] = v["verdict"]
        row["ok"] = v["verdict"] == "pass" and samples.extra["valid"] and not row["timeouts"]
    else:
        row["ok"] = samples.extra["valid"] and not row["timeouts"]
    return samples, row


def run_capacity(make_sut, settings, workload, target):
    """Exponential search up from `rate`, then bisection to within 5%."""
    rate = workload.rate or 10.0
    steps, best, best_samples, fail = [], None, None, None
    while len(steps) < MAX_STEPS:
        samples, row = _step(make_sut, settings, workload, rate, target)
        steps.append(row)
        if not row["ok"]:
            fail = rate
            break
        best, best_samples = rate, samples
        rate *= 2
    lo, hi = best, fail
    while lo is not None and hi is not None and (hi - lo) / lo > 0.05 and len(steps) < MAX_STEPS:
        mid = (lo + hi) / 2
        samples, row = _step(make_sut, settings, workload, mid, target)
        steps.append(row)
        if row["ok"]:
            lo, best, best_samples = mid, mid, samples
        else:
            hi = mid
    if best_samples is None:        # even the first rate failed: report that step
        best_samples = samples
    best_samples.extra.update(steps=steps, max_rate=best, stop_reason="capacity_found"
                              if best is not None else "first_rate_failed")
    best_samples.stop_reason = "capacity_search"
    return best_samples


def run_ramp(make_sut, settings, workload, target):
    """Raise the rate by `step` until the SLO fails or throughput stops growing (< 5%)."""
    rate = workload.rate
    steps, knee, knee_samples, last_tp, why = [], None, None, None, "max_rate"
    while len(steps) < MAX_STEPS and (workload.max_rate is None or rate <= workload.max_rate):
        samples, row = _step(make_sut, settings, workload, rate, target)
        steps.append(row)
        if not row["ok"]:
            why = ("slo_not_met" if row.get("verdict") not in (None, "pass")
                   else "invalid_or_timeouts")
            break
        tp = row["completed_per_s"]
        if last_tp is not None and tp < last_tp * 1.05:
            why = "throughput_flat"
            break
        knee, knee_samples, last_tp = rate, samples, tp
        rate += workload.step
    if knee_samples is None:
        knee_samples = samples
    knee_samples.extra.update(steps=steps, knee_rate=knee, stop_reason=why)
    knee_samples.stop_reason = "ramp"
    return knee_samples
