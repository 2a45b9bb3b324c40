"""A trial's objective, read off its measured Result, with the interval it is known to:

    capacity          samples/s at the highest rate proven to meet the SLO; the interval is
                      the capacity search's bracket [passed, failed) x batch size
    throughput        samples/s; interval by batch means over ten spans of the window
                      (core/stats.rate_interval: within the trial, not between trials)
    cost_per_million  price per hour / (samples/s x 3600) x 1e6, the throughput's interval
    pNN               that latency percentile (ms), with its distribution-free bounds

and whether it is feasible: capacity needs a rate that met the SLO; the others, where the
workload has an SLO, need its verdict to be a proven pass (an undetermined one is not).
"""

from __future__ import annotations

from .optimizer import Score


def price_per_hour(cell, per_hour: dict, host: str | None) -> float | None:
    """The job's price for this cell: by host label, exact device, then device type."""
    for key in (host, cell.device, cell.device.split(":")[0]):
        if key is not None and key in per_hour:
            return float(per_hour[key])
    return None


def score_result(spec, cell, result, per_hour: dict | None = None,
                 host: str | None = None) -> Score:
    objective = spec.objective
    if objective == "capacity":
        return _capacity(cell, result)
    if result.status == "failed" or not result.latency_ms.n:
        return Score(state="failed", note=result.reason or "nothing measured")
    if objective in ("throughput", "cost_per_million"):
        score = _throughput(result)
        if objective == "cost_per_million":
            price = price_per_hour(cell, per_hour or {}, host)
            if price is None:
                return Score(state="failed", note=f"no price per hour for {cell.device} on "
                                                  f"host {host} in the job's cost section")
            score = _cost(score, price)
    else:
        key = f"p{spec.latency_percentile:g}"
        pct = result.latency_ms.percentiles.get(key)
        if pct is None:
            return Score(state="failed", note=f"{key} was not measured")
        score = Score(value=pct.value, lower=pct.lower, upper=pct.upper)
    slo = result.slo
    if slo is not None and slo.verdict != "pass":
        score.state = "infeasible"
        score.estimate, score.value = score.value, None
        score.note = (f"SLO p{slo.percentile:g} <= {slo.bound_ms:g} ms: "
                      f"{slo.verdict}")
    return score


def _capacity(cell, result) -> Score:
    load = result.load
    # a capacity search always leaves its bracket (and max_rate, None when none was proven)
    if load is None or load.bracket is None:
        return Score(state="failed", note=result.reason or "no capacity search ran")
    b = cell.batch_size
    passed, failed = load.bracket.passed, load.bracket.failed
    lower = passed * b if passed else None
    upper = failed * b if failed else None
    stop = load.search_stop or ""
    if load.pruned:
        return Score(state="pruned", value=None, lower=lower, upper=upper,
                     estimate=lower or (upper / 2 if upper else None), note=stop)
    if passed is None:
        first = load.steps[0].rate if load.steps else None
        bound = upper or (first * b if first else None)
        return Score(state="infeasible", lower=None, upper=bound,
                     estimate=bound / 2 if bound else None,
                     note=f"no rate met the SLO ({stop})")
    note = stop if stop != "bracketed" else ""
    if not result.valid:
        note = (note + "; " if note else "") + "the load generator fell behind at some step"
    return Score(value=lower, lower=lower, upper=upper, note=note)


def _throughput(result) -> Score:
    tp = result.throughput
    if not tp.samples_per_s:
        return Score(state="failed", note="no throughput measured")
    return Score(value=tp.samples_per_s, lower=tp.lower, upper=tp.upper)


def _cost(score: Score, price: float) -> Score:
    def cost(sps):
        return price / (sps * 3600.0) * 1e6 if sps else None
    return Score(state=score.state, value=cost(score.value), lower=cost(score.upper),
                 upper=cost(score.lower), note=score.note)
