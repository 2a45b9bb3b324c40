"""How long a capacity-search step must run to reach a verdict: pure arithmetic on the
workload, used by the search (workload/rate_search.py) and checked when a spec is loaded, so that
a search never runs for nothing."""

from __future__ import annotations

from .early_stopping import min_passing_queries

CONFIDENCE = 0.99               # LoadGen's early-stopping confidence


def queries_for_verdict(percentile: float) -> int:
    """Queries a pass verdict needs with none over the bound (459 for p99 at 99%)."""
    return min_passing_queries(0, percentile / 100.0, CONFIDENCE)


# A step passes only once latency has settled (workload/rate_search.py compares the last third of
# its queries with the middle third), which takes this many queries, whatever the percentile.
SETTLE_QUERIES = 150


def step_queries(workload) -> int:
    """Queries a passing step needs: its SLO's verdict, and the settling check."""
    p = verdict_percentile(workload)
    return max(queries_for_verdict(p), SETTLE_QUERIES) if p is not None else 100


def verdict_percentile(workload) -> float | None:
    """The percentile whose verdict needs the most queries: the SLO's, or the highest of a
    generative SLO's bounds ({ttft_p99: 2s, tpot_p90: 200ms} -> 99)."""
    slo = workload.slo_target()
    if slo is not None:
        return slo[0]
    if workload.slo:
        return max(float(k.rpartition("_p")[2]) for k in workload.slo)
    return None


def step_limits(workload, rate: float) -> tuple[float, float]:
    """(min, max) seconds of a step at `rate`. The default maximum gives room for a verdict
    with a few queries over the bound: twice the time the no-overlatency verdict needs."""
    lo = workload.step_min_duration
    if workload.step_max_duration is not None:
        return lo, max(lo, workload.step_max_duration)
    need = step_queries(workload)
    return lo, max(lo, 2.0 * need / rate + 1.0)


def settle_note(p: float, need: int) -> str:
    return " (the settling check's minimum)" if need > queries_for_verdict(p) else ""


def plan_problem(settings, workload) -> str | None:
    """Why the limits cannot produce a verdict at the starting rate, or None (checked when
    the spec is loaded, so that a search never runs for nothing)."""
    p = verdict_percentile(workload)
    if p is None:
        return None
    rate = workload.rate or DEFAULT_START
    need = step_queries(workload)
    _, hi = step_limits(workload, rate)
    if rate * hi < need:
        return (f"at the starting rate {rate:g}/s a step of at most {hi:g}s sends about "
                f"{rate * hi:.0f} queries, and a p{p:g} verdict needs at least {need}"
                f"{settle_note(p, need)}: "
                f"raise step_max_duration to {need / rate * 1.5:.3g}s or start at a rate "
                f"of at least {need / hi * 1.5:.3g}/s")
    if settings.max_duration < need / rate:
        return (f"max_duration {settings.max_duration:g}s bounds the whole search, and its "
                f"first step at {rate:g}/s needs at least {need / rate:.3g}s for a "
                f"p{p:g} verdict ({need} queries{settle_note(p, need)}): raise max_duration (e.g. "
                f"{max(60, need / rate * 10):.0f}s) or the starting rate")
    return None


DEFAULT_START = 10.0
