"""Rate searches built from open-loop server runs: `ramp` (InferBench's progressive mode) and
`capacity` (the highest rate that meets the SLO).

Each step is an open-loop run at one rate that lasts until LoadGen's early-stopping rule
decides the SLO (proven met, or proven missed), at least `step_min_duration` (so a backlog
has time to show) and at most `step_max_duration`. A pass counts only once latency has
settled (the last third of the queries no slower on average than the middle third, within
25%): near capacity a queue that starts empty fills for seconds, and a step still rising at
its end fails. Queries still unanswered count as over the
bound once they have waited longer than it. A step still undecided at its limit is run once
more and judged on both runs together; only then is it "undetermined", which ends a search
without counting as a failure of the system. The capacity search doubles the rate until a
step fails, runs that failing rate again to confirm it (one unlucky step on a shared host must
not end the search), then bisects between the last rate proven to pass and the first proven
to fail, to within 5%. Its result is that bracket. Inside a configuration search
(optimize/), `prune_below(rate)` stops it as soon as it proves a failure at or below a rate
another configuration has passed: it cannot be the best, and its bracket says so.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from ..core.capacity_plan import CONFIDENCE, DEFAULT_START, SETTLE_QUERIES, step_limits
from ..core.early_stopping import min_passing_queries, verdict
from . import arrivals
from .open_loop import run_open_loop

MAX_STEPS = 24
SATURATED = 0.95                # ramp: a step whose completions fall below 95% of what was sent
BISECT_TO = 0.05                # stop bisecting when (fail - pass) / pass is within 5%
_PRUNE_BELOW: ContextVar[float | None] = ContextVar("inferbench_prune_below", default=None)


@contextmanager
def prune_below(rate: float | None):
    """Capacity searches in this context stop once they prove a failure at or below `rate`
    (queries/s): a configuration search's best proven capacity so far, in this cell's units."""
    token = _PRUNE_BELOW.set(rate)
    try:
        yield
    finally:
        _PRUNE_BELOW.reset(token)


def _pruned(failed, floor) -> bool:
    return floor is not None and failed is not None and failed <= floor


def _decider(workload):
    """Stop a step once the SLO verdict is proven either way."""
    slo = workload.slo_target()
    if slo is None:
        return None
    p, bound_ns = slo[0] / 100.0, int(slo[1] * 1e9)

    def decide(lat_ns, waiting_ns) -> bool:
        over = int(np.count_nonzero(lat_ns > bound_ns)) + int(np.count_nonzero(waiting_ns
                                                                             > bound_ns))
        within = len(lat_ns) - int(np.count_nonzero(lat_ns > bound_ns))
        state = _proven(within, over, p)
        # a pass counts only once the queue has settled: near capacity a queue that starts
        # empty takes seconds to fill, and an early look would pass an overloaded rate
        return state == "fail" or (state == "pass" and _settled(lat_ns, bound_ns, p))
    return decide


SETTLED = 1.25      # the last third's mean latency at most 25% above the middle third's
# ... or risen by at most this share of the bound: 0.1 -> 0.15 ms against 100 ms is a host's
# hiccup, not a queue (a fresh clone's CI failed a 1,000/s step, p99 1.9 ms, on this alone)
SETTLE_FLOOR = 0.02


def _settled(lat_ns, bound_ns=None, p=None) -> bool:
    """Latency is not still rising: the mean of the last third of the queries (in send order)
    within SETTLED of the middle third's (the first third is the queue filling up) or risen
    by under SETTLE_FLOOR of the bound, and the last third alone within the bound at the
    percentile."""
    n = len(lat_ns)
    if n < SETTLE_QUERIES:
        return False
    middle = float(np.mean(lat_ns[n // 3: 2 * n // 3]))
    last = lat_ns[2 * n // 3:]
    if bound_ns is not None and np.percentile(last, 100 * p) > bound_ns:
        return False
    if bound_ns is not None and float(np.mean(last)) - middle <= SETTLE_FLOOR * bound_ns:
        return True
    return float(np.mean(last)) <= SETTLED * middle


def _proven(within: int, over: int, p: float) -> str | None:
    """'pass' when early stopping proves the percentile within the bound, 'fail' when the
    number over it is implausible for a system that meets it (binomial tail < 1%)."""
    if within >= min_passing_queries(over, p, CONFIDENCE):
        return "pass"
    n = within + over
    from scipy.stats import binom  # lazy: scipy.stats costs ~0.4 s at pytest start
    if over and binom.sf(over - 1, n, 1.0 - p) < 1.0 - CONFIDENCE:
        return "fail"
    return None


def step_schedule(workload, rate, seconds, seed) -> np.ndarray:
    return arrivals.schedule(workload.arrival, rate, seconds, seed=seed,
                             burstiness=workload.burstiness, on_s=workload.on,
                             off_s=workload.off, exact_count=True)


def _run(sut, settings, workload, rate, target, seconds, min_s, seed, progress=None):
    sched = step_schedule(workload, rate, seconds, seed)
    step_settings = settings.model_copy(update={"max_duration": seconds})
    return run_open_loop(sut.make_async(), sched, step_settings, workload.timeout,
                         workload.send_lag_bound, target, progress=progress,
                         decide=_decider(workload), min_s=min_s)


def _step(sut, settings, workload, rate, target, seed_offset=0, progress=None,
          stepper=None):
    """One rate: run until decided; an undecided run is extended once (judged together).
    stepper: an object with run(rate, seconds, min_s, seed, progress) -> Samples-like and
    judge(runs) -> 'pass'|'fail'|'undetermined' that replaces the single-latency SLO (a
    generative SLO bounds several metrics: workload/generative.py)."""
    lo, hi = step_limits(workload, rate)
    seed = settings.seed + seed_offset
    if stepper is None:
        slo = workload.slo_target()
        run = lambda sd: _run(sut, settings, workload, rate, target, hi, lo,  # noqa: E731
                              sd, progress)
        judge = (lambda rs: _judge(np.concatenate([r.latencies_ns for r in rs]),  # noqa: E731
                                   sum(r.extra["timeouts"] for r in rs), slo)) \
            if slo is not None else None
    else:
        run = lambda sd: stepper.run(rate, hi, lo, sd, progress)  # noqa: E731
        judge = stepper.judge
    runs = [run(seed)]
    if judge is not None:
        state = judge(runs)
        if state == "undetermined":
            runs.append(run(seed + 1000))
            state = judge(runs)
    lat = np.concatenate([r.latencies_ns for r in runs])
    timeouts = sum(r.extra["timeouts"] for r in runs)
    extra = [r.extra for r in runs]
    seconds = sum(r.wall_ns for r in runs) / 1e9
    row = {"rate": rate, "runs": len(runs),
           "achieved_rate": extra[-1]["achieved_rate"], "seconds": round(seconds, 3),
           "completed": int(len(lat)), "completed_per_s": len(lat) / seconds if seconds else 0,
           "p99_ms": float(np.percentile(lat, 99)) / 1e6 if len(lat) else None,
           "valid": all(e["valid"] for e in extra),
           "invalid_reasons": [m for e in extra for m in e["invalid_reasons"]],
           "send_lag_p99_ms": max((e["send_lag_ms"]["p99"] or 0) for e in extra),
           "errors": sum(e["errors"] for e in extra), "timeouts": timeouts}
    if judge is not None:
        row["verdict"] = state
    elif row["errors"] or row["timeouts"]:
        row["verdict"] = "fail"
    else:
        row["verdict"] = "pass"
    if row["verdict"] == "pass" and row["errors"]:
        row["verdict"] = "fail"
    # Latency is charged from the scheduled send, so a lagging generator can only make a step
    # look worse: a pass stands; a fail may be the generator's, and the row says so.
    row["generator_limited"] = row["verdict"] == "fail" and not row["valid"]
    return runs[-1], row


def judge_bounds(bounds) -> str:
    """Several bounds judged together, each as one latency bound is judged: bounds is
    [(percentile, bound_ns, values_ns in send order, unanswered)], unanswered counting as
    over. 'fail' when one is proven over (or proven within but still rising), 'pass' when
    every one is proven within and settled, else 'undetermined'."""
    states = []
    for p, bound_ns, values, unanswered in bounds:
        values = np.asarray(values)
        over = int(np.count_nonzero(values > bound_ns))
        state = _proven(len(values) - over, over + unanswered, p / 100.0) or "undetermined"
        if state == "pass" and not _settled(values, bound_ns, p / 100.0):
            state = "fail"
        states.append(state)
    if "fail" in states:
        return "fail"
    return "pass" if states and all(s == "pass" for s in states) else "undetermined"


def bounds_decided(bounds) -> bool:
    """Early stop of a step with several bounds: one proven over, or every one proven within
    and settled (as _decider does for one bound; `unanswered`: those waited past it)."""
    passed = True
    for p, bound_ns, values, unanswered in bounds:
        values = np.asarray(values)
        over = int(np.count_nonzero(values > bound_ns))
        state = _proven(len(values) - over, over + unanswered, p / 100.0)
        if state == "fail":
            return True
        passed &= state == "pass" and _settled(values, bound_ns, p / 100.0)
    return bool(bounds) and passed


def _judge(lat_ns, timeouts, slo) -> str:
    v = verdict(lat_ns, int(slo[1] * 1e9), slo[0], CONFIDENCE)
    within = v["queries"] - v["overlatency"]
    state = _proven(within, v["overlatency"] + timeouts, slo[0] / 100.0) or "undetermined"
    if state == "pass" and not _settled(lat_ns, int(slo[1] * 1e9), slo[0] / 100.0):
        return "fail"       # still rising at the end of the step: the queue does not settle
    return state


def _steps_text(steps) -> str:
    return ", ".join(f"{s['rate']:g}/s {s['verdict']}" for s in steps)


def _budget_left(steps, settings) -> bool:
    return sum(s["seconds"] for s in steps) < settings.max_duration


class _Capacity:
    """A capacity search's state: the steps so far, the highest rate proven to pass (and its
    samples), the lowest proven to fail, and why it ended (None while it goes on)."""

    def __init__(self, sut, settings, workload, target, progress, stepper):
        self.step = lambda rate, **kw: _step(sut, settings, workload, rate, target,  # noqa: E731
                                             progress=progress, stepper=stepper, **kw)
        self.settings, self.workload = settings, workload
        self.steps, self.passed, self.failed, self.best, self.why = [], None, None, None, None
        self.samples = None
        self.confirmed_fail = False
        self.floor = _PRUNE_BELOW.get()

    def room(self) -> bool:
        return len(self.steps) < MAX_STEPS and _budget_left(self.steps, self.settings)

    def double(self) -> None:
        """From the start rate, double until a step fails, confirmed by a second run."""
        workload = self.workload
        rate = workload.rate or DEFAULT_START
        while self.room():
            self.samples, row = self.step(rate)
            self.steps.append(row)
            if row["verdict"] == "fail":
                _, again = self.step(rate, seed_offset=1)
                again["confirming"] = rate
                self.steps.append(again)
                if again["verdict"] == "fail":
                    self.failed, self.confirmed_fail = rate, True
                    return
                row = again         # a noisy first run: the rate stands or is undetermined
            if row["verdict"] != "pass":
                self.why = f"undetermined at {rate:g}/s"
                return
            self.passed, self.best = rate, self.samples
            if workload.max_rate is not None and rate >= workload.max_rate:
                self.why = f"max_rate {workload.max_rate:g}/s passed"
                return
            rate = rate * 2 if workload.max_rate is None else min(rate * 2, workload.max_rate)

    def bracketed(self) -> bool:
        return (self.passed is not None and self.failed is not None
                and (self.failed - self.passed) / self.passed <= BISECT_TO)

    def bisect(self) -> None:
        """Between the last rate proven to pass and the first proven to fail, to BISECT_TO."""
        while (self.passed is not None and self.failed is not None and not self.bracketed()
               and self.room() and not _pruned(self.failed, self.floor)):
            mid = (self.passed + self.failed) / 2
            self.samples, row = self.step(mid)
            self.steps.append(row)
            if row["verdict"] == "pass":
                self.passed, self.best = mid, self.samples
            elif row["verdict"] == "fail":
                self.failed = mid
            else:
                self.why = f"undetermined at {mid:g}/s"
                return

    def stop_reason(self) -> tuple[str, bool]:
        """(why the search ended, whether it was pruned)."""
        why, failed = self.why, self.failed
        pruned = why is None and self.confirmed_fail and _pruned(failed, self.floor)
        if pruned:
            why = (f"pruned: fails at {failed:g}/s, at or below {self.floor:.4g}/s, a rate a "
                   f"better configuration passed")
        if why is None:
            if self.bracketed():
                why = "bracketed"
            elif len(self.steps) >= MAX_STEPS:
                why = f"{MAX_STEPS} steps"
            elif not _budget_left(self.steps, self.settings):
                why = f"max_duration {self.settings.max_duration:g}s"
            elif self.passed is None:
                why = f"first rate {self.workload.rate or DEFAULT_START:g}/s failed"
        if failed is not None and any(st["generator_limited"] for st in self.steps
                                      if st["rate"] == failed):
            why += (f"; at {failed:g}/s the generator's send lag was a material share of "
                    f"latency: that failure may be the generator's, not the system's")
        return why, pruned


def run_capacity(sut, settings, workload, target, progress=None, stepper=None):
    """The capacity scenario (core/scenarios/capacity.py); sut: a SystemUnderTest (None with
    a stepper, which runs the steps itself). Double from `rate` until a step fails (confirmed
    by a second run), then bisect. Returns the highest passing step's samples (the last
    step's if none passed) with the search's steps and bracket in their extra."""
    search = _Capacity(sut, settings, workload, target, progress, stepper)
    search.double()
    if search.why is None:
        search.bisect()
    why, pruned = search.stop_reason()
    passed, failed, steps = search.passed, search.failed, search.steps
    best = search.best if search.best is not None else search.samples
    best.extra.update(steps=steps, max_rate=passed,
                      bracket={"passed": passed, "failed": failed,
                               "failure_confirmed": search.confirmed_fail},
                      search_stop=why, pruned=pruned)
    best.stop_reason = "capacity_search"
    if passed is None and not pruned:
        best.extra["search_failure"] = (f"the capacity search proved no rate ({why}); "
                                        f"steps: {_steps_text(steps)}")
    return best


def run_ramp(sut, settings, workload, target, progress=None):
    """The ramp scenario (core/scenarios/ramp.py): raise the rate by `step` until the SLO
    fails, the system stops keeping up with the offered load (completions under 95% of the
    rate sent) or throughput stops growing (< 5%). The knee is the last rate before that."""
    rate = workload.rate
    steps, knee, knee_samples, last_tp, why = [], None, None, None, "max_rate"
    while len(steps) < MAX_STEPS and (workload.max_rate is None or rate <= workload.max_rate):
        if not _budget_left(steps, settings):
            why = f"max_duration {settings.max_duration:g}s"
            break
        samples, row = _step(sut, settings, workload, rate, target, progress=progress)
        steps.append(row)
        if row["verdict"] == "fail":
            why = "slo_not_met" if workload.slo else "errors_or_timeouts"
            break
        if row["verdict"] != "pass":
            why = f"undetermined at {rate:g}/s"
            break
        tp = row["completed_per_s"]
        offered = row["achieved_rate"] or rate
        if tp < SATURATED * offered:
            # completions no longer follow the offered load
            why = (f"saturated at {rate:g}/s: {tp:,.0f}/s completed of {offered:,.0f}/s sent, "
                   f"under {SATURATED:.0%}")
            break
        if last_tp is not None and tp < last_tp * 1.05:
            why = "throughput_flat"
            break
        knee, knee_samples, last_tp = rate, samples, tp
        rate += workload.step
    if knee_samples is None:
        knee_samples = samples
    knee_samples.extra.update(steps=steps, knee_rate=knee, search_stop=why)
    knee_samples.stop_reason = "ramp"
    if knee is None:
        knee_samples.extra["search_failure"] = (f"the ramp found no good rate ({why}); "
                                                f"steps: {_steps_text(steps)}")
    return knee_samples
