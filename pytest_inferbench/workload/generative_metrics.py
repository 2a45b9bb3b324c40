"""The metrics of generative serving, from per-request records: TTFT, ITL, TPOT, E2E, goodput
and the SLO verdict. Pure computation (no clock, no client): workload/generative.py issues the
requests and records them.

Metric definitions (docs/workloads-and-serving.md repeats them), per request, every time from
the request's *scheduled* send (open loop: its slot in the arrival schedule; concurrency: the
moment its client was ready to send, i.e. the previous request's end), so a late send or a
queue in front of the server makes them worse, never better:

- TTFT = first chunk carrying text - scheduled.
- ITL = each gap between two consecutive chunks carrying text (TTFT is not one of them).
  A server that puts several tokens in a chunk shows fewer, longer gaps: ITL is per chunk.
- E2E = last chunk carrying text - scheduled (the response's end when it had no text).
- TPOT = (E2E - TTFT) / (output tokens - 1), output tokens from the server's `usage`;
  undefined for one output token and for non-streamed requests.
- Output tokens come from `usage.completion_tokens`; the chunks carrying text are counted
  too and every request where the two disagree is reported, never silently mixed.

Per cell: percentiles with distribution-free bounds (core/stats.py through Latency) of
each metric, requests/s, output tokens/s and total tokens/s over the window (first scheduled
send to last response), and goodput: the rate of requests that succeeded and met *every*
bound of the SLO (`ttft_p99: 2s` bounds that request's TTFT by 2 s; `itl_pNN`: every gap of
the request). The SLO verdict applies LoadGen's early-stopping rule (core/early_stopping.py)
to each metric: `pass` only when each is proven, `fail` when one is over its bound,
`undetermined` with "too few requests" and the count a verdict needs otherwise.
"""

from __future__ import annotations

import numpy as np

from ..core.early_stopping import verdict
from ..core.result import Latency
from ..core.stats import percentile
from ..serving.openai_client import RequestRecord
from ..spec.generative import METRICS, parse_slo_key
from . import arrivals
from .failures import ErrorLog
from .open_loop import lag_validity, offered_window_s

MAX_LAG_EFFECT = 0.10            # as open_loop.py: the client's lag may move TTFT this much


def request_metrics(records: list[RequestRecord], streamed: bool = True) -> dict:
    """Per-request metric arrays (ns) of the successful requests, and the ITL gaps pooled.
    Keys: ttft, e2e, tpot (NaN where undefined), itl (all gaps), output, prompt (tokens),
    and `good_itl_max` (each request's largest gap, 0 without gaps)."""
    ok = [r for r in records if r.ok]
    n = len(ok)
    ttft = np.full(n, np.nan)
    e2e = np.empty(n)
    tpot = np.full(n, np.nan)
    itl_max = np.zeros(n)
    output = np.empty(n)
    prompt = np.full(n, np.nan)
    gaps = []
    for k, r in enumerate(ok):
        last = r.chunk_ns[-1] if r.chunk_ns else r.end_ns
        e2e[k] = last - r.scheduled_ns
        tokens = r.output_tokens if r.output_tokens is not None else len(r.chunk_ns)
        output[k] = tokens
        if r.prompt_tokens is not None:
            prompt[k] = r.prompt_tokens
        if r.first_token_ns is not None:
            ttft[k] = r.first_token_ns - r.scheduled_ns
        if len(r.chunk_ns) > 1:
            g = np.diff(np.asarray(r.chunk_ns, dtype=np.int64))
            gaps.append(g)
            itl_max[k] = g.max()
        if streamed and tokens > 1 and r.first_token_ns is not None:
            tpot[k] = (e2e[k] - ttft[k]) / (tokens - 1)
    itl = np.concatenate(gaps) if gaps else np.empty(0)
    return {"ttft": ttft, "e2e": e2e, "tpot": tpot, "itl": itl, "itl_max": itl_max,
            "output": output, "prompt": prompt}


def metric_values(m: dict, metric: str) -> np.ndarray:
    """The values a metric's percentiles are computed over (ns, defined ones only)."""
    v = m[metric]
    return v[~np.isnan(v)] if metric != "itl" else v


def meets_slo(m: dict, slo: dict[str, float]) -> np.ndarray:
    """Per successful request: True when it met every bound (seconds) of the SLO. An
    undefined TPOT (one output token) has no second token to be late: it meets the bound;
    an undefined TTFT (no text at all) does not."""
    good = np.ones(len(m["e2e"]), dtype=bool)
    for key, bound in slo.items():
        metric, _ = parse_slo_key(key)
        b = bound * 1e9
        if metric == "itl":
            good &= m["itl_max"] <= b
        elif metric == "tpot":
            good &= np.isnan(m["tpot"]) | (m["tpot"] <= b)
        else:
            good &= ~np.isnan(m[metric]) & (m[metric] <= b)
    return good


def slo_verdict(m: dict, slo: dict[str, float], confidence: float = 0.99) -> dict:
    """Each bound judged with LoadGen's early-stopping rule; the cell's verdict is `pass` only
    when every one is proven, `fail` as soon as one is over, else `undetermined` (too few
    requests, with how many a verdict needs)."""
    per = {}
    for key, bound in slo.items():
        metric, p = parse_slo_key(key)
        values = metric_values(m, metric)
        per[key] = verdict(values, int(bound * 1e9), p, confidence)
        per[key]["values"] = "gaps" if metric == "itl" else "requests"
    states = [v["verdict"] for v in per.values()]
    if "fail" in states:
        state = "fail"
        failing = [k for k, v in per.items() if v["verdict"] == "fail"]
        reason = f"{', '.join(failing)} over the bound"
    elif all(s == "pass" for s in states):
        state, reason = "pass", None
    else:
        state = "undetermined"
        short = [f"{k}: {v['queries']} of {v['queries_needed']} {v['values']}"
                 for k, v in per.items() if v["verdict"] == "undetermined"]
        reason = "too few requests for a verdict (" + "; ".join(short) + ")"
    return {"verdict": state, "reason": reason, "confidence": confidence,
            "queries": len(m["e2e"]), "metrics": per}


def _ms(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x) / 1e6, 6)


def _lag(values_ns: np.ndarray) -> dict:
    if not len(values_ns):
        return {"p50": None, "p99": None, "max": None}
    return {"p50": _ms(np.percentile(values_ns, 50)), "p99": _ms(np.percentile(values_ns, 99)),
            "max": _ms(values_ns.max())}


def summarise(records: list[RequestRecord], settings, slo: dict | None, streamed: bool,
              window_start_ns: int) -> dict:
    """The cell's generative figures (JSON) from its request records."""
    m = request_metrics(records, streamed)
    ok = [r for r in records if r.ok]
    ends = [r.end_ns for r in records if r.end_ns is not None]
    window_s = (max(ends) - window_start_ns) / 1e9 if ends else 0.0
    out: dict = {}
    for metric in METRICS:
        out[f"{metric}_ms"] = Latency.from_ns(metric_values(m, metric), settings.percentiles,
                                              settings.confidence).model_dump(mode="json")
    n_out = float(m["output"].sum())
    prompt_known = ~np.isnan(m["prompt"])
    n_in = float(m["prompt"][prompt_known].sum())
    rate = (lambda x: x / window_s if window_s > 0 else None)
    out.update({"requests": len(records), "completed": len(ok), "window_s": round(window_s, 6),
                "requests_per_s": rate(len(ok)), "output_tokens_per_s": rate(n_out),
                "total_tokens_per_s": rate(n_out + n_in) if prompt_known.all() else None,
                "streamed": streamed})
    out["tokens"] = token_report(ok, m)
    if slo:
        good = meets_slo(m, slo)
        out["goodput"] = {"requests_per_s": rate(float(good.sum())), "good": int(good.sum()),
                          "share": float(good.mean()) if len(good) else None,
                          "slo": {k: v * 1e3 for k, v in slo.items()}, "unit": "ms"}
    sched = np.array([r.scheduled_ns for r in records], dtype=np.int64)
    disp = np.array([r.dispatched_ns for r in records], dtype=np.int64)
    sent = np.array([r.sent_ns for r in records if r.sent_ns], dtype=np.int64)
    sched_sent = np.array([r.scheduled_ns for r in records if r.sent_ns], dtype=np.int64)
    out["send_lag_ms"] = {"issuer": _lag(disp - sched), "client": _lag(sent - sched_sent)}
    # the same TTFT percentile timed from the actual sends: what the client's lag changed
    ttft_sent = np.array([r.first_token_ns - r.sent_ns for r in ok
                          if r.first_token_ns is not None], dtype=np.float64)
    ttft = metric_values(m, "ttft")
    out["client_lag_effect"] = None
    if len(ttft) and len(ttft_sent):
        target = settings.target_percentile or 99.0
        # nearest rank, as every reported percentile (core/stats.py)
        a, b = percentile(np.sort(ttft), target), percentile(np.sort(ttft_sent), target)
        out["client_lag_effect"] = float(a / b - 1) if b > 0 else 0.0
    return out


def token_report(ok: list[RequestRecord], m: dict) -> dict:
    """Input/output lengths from the server's usage; where usage and the counted chunks
    disagree; how the prompt lengths the server saw compare with the lengths built."""
    def stats(v):
        v = v[~np.isnan(v)]
        if not len(v):
            return None
        return {"mean": float(v.mean()), "stdev": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "min": int(v.min()), "max": int(v.max()), "total": int(v.sum())}
    no_usage = sum(1 for r in ok if r.output_tokens is None)
    differ = [r for r in ok if r.output_tokens is not None
              and r.output_tokens != len(r.chunk_ns)]
    short = sum(1 for r in ok if r.max_tokens and r.output_tokens is not None
                and r.output_tokens < r.max_tokens)
    report = {"input": stats(m["prompt"]), "output": stats(m["output"]),
              "output_source": "usage" if not no_usage else
              ("chunks" if no_usage == len(ok) else "usage, chunks where usage was missing"),
              "usage_missing": no_usage,
              "chunks_differ": len(differ),
              "chunks_differ_max": max((abs(r.output_tokens - len(r.chunk_ns))
                                        for r in differ), default=0),
              "shorter_than_max_tokens": short}
    pairs = np.array([(r.prompt_tokens - r.expected_prompt_tokens) for r in ok
                      if r.prompt_tokens is not None and r.expected_prompt_tokens is not None])
    if len(pairs):
        # a chat template adds a constant: the offset's spread is what says lengths are exact
        report["prompt_check"] = {"requests": len(pairs), "offset_median": float(np.median(pairs)),
                                  "offset_min": int(pairs.min()), "offset_max": int(pairs.max()),
                                  "exact": float(np.mean(pairs == 0))}
    return report


def e2e_ns(records) -> np.ndarray:
    return np.array([(r.chunk_ns[-1] if r.chunk_ns else r.end_ns) - r.scheduled_ns
                     for r in records if r.ok], dtype=np.int64)


def open_extra(records: list[RequestRecord], begin: int, end: int, reason: str,
               errors: ErrorLog, issued: int, send_lag_bound_s: float, target: float,
               schedule=None, limit_s: float | None = None) -> dict:
    """The open loop's figures (workload/open_loop.py's `extra`) from records of a run whose
    sends were timed by client processes: 'sent' is when a worker's timer fired for it.
    schedule: the arrivals.Schedule sent, for the offered rate against its target (as the
    in-process open loop reports it); limit_s: the run's longest duration."""
    recs = sorted((r for r in records if r.dispatched_ns), key=lambda r: r.index)
    sched = np.array([r.scheduled_ns for r in recs], dtype=np.int64)
    sent = np.array([r.dispatched_ns for r in recs], dtype=np.int64)
    lag = sent - sched
    ok = [r for r in recs if r.ok]
    lat = np.array([r.end_ns - r.scheduled_ns for r in ok], dtype=np.int64)
    lat_sent = np.array([r.end_ns - r.dispatched_ns for r in ok], dtype=np.int64)
    n = len(recs)
    scheduled_rate = (n - 1) / ((sched[-1] - sched[0]) / 1e9) if n > 1 and \
        sched[-1] > sched[0] else None
    order = np.sort(sent)
    achieved_rate = (n - 1) / ((order[-1] - order[0]) / 1e9) if n > 1 and \
        order[-1] > order[0] else None
    lag_p99 = float(np.percentile(lag, 99)) / 1e6 if n else None
    effect, problems = lag_validity(lat, lat_sent, target, lag_p99, scheduled_rate,
                                    achieved_rate)
    if not n:
        problems.append("no query was sent")
    late = int(np.count_nonzero(lag > send_lag_bound_s * 1e9))
    return {"issued": issued, "completed": len(ok), "errors": errors.errors,
            "timeouts": errors.timeouts, "scheduled_rate": scheduled_rate,
            "achieved_rate": achieved_rate,
            "send_lag_ms": {"p50": float(np.percentile(lag, 50)) / 1e6 if n else None,
                            "p99": lag_p99, "max": float(lag.max()) / 1e6 if n else None},
            "late_sends": late, "late_fraction": late / n if n else 0.0,
            "send_lag_bound_ms": send_lag_bound_s * 1e3, "lag_effect": effect,
            "valid": not problems, "invalid_reasons": problems,
            "wall_s": (end - begin) / 1e9, **_offered(schedule, issued, limit_s)}


def _offered(schedule, issued: int, limit_s: float | None) -> dict:
    """`offered` and `offered_rate` as open_loop.py reports them (the stop time is not known
    here: the window ends at the schedule's end when it was sent whole, else one mean gap
    past the last send)."""
    if schedule is None:
        return {"offered_rate": None, "offered": None}
    limit_ns = int(limit_s * 1e9) if limit_s is not None else np.iinfo(np.int64).max
    window = offered_window_s(schedule, np.asarray(schedule), issued, None, limit_ns)
    offer = arrivals.offered(schedule, issued, window)
    return {"offered_rate": offer["offered_rate"] if offer else None, "offered": offer}
