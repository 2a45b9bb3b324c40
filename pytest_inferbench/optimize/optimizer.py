"""The search loop: Optuna chooses the next configuration, the caller measures it.

Sampler: Optuna's GPSampler (Gaussian-process Bayesian optimisation with log expected
improvement) by default. The budgets here are small (a trial is a capacity search of a
minute, so 5-30 trials), the space is a product of a few ordinal knobs (batch size,
instances, queue delay: integer indices, so the kernel sees their order) and categorical ones
(runtime, precision, serving system: GPSampler handles categorical parameters natively), and
GPSampler supports constraints (the SLO, through `Trial.set_constraint`). TPE needs more
trials than that before its density estimates beat random sampling (its own default is 10
random startup trials); `sampler: tpe` and `sampler: random` are there to compare
(benchmarks/config_search.py does).

Objective values are told on the log scale (rates and latencies are ratios: 10% better
means the same at any magnitude). A suggestion that is not a configuration still to measure
(an excluded combination, one measured already) is told as failed and replaced by the
nearest configuration that is, which the sampler is told about under its own parameters,
so no configuration is ever measured twice.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SAMPLERS = ("gp", "tpe", "random")


@dataclass
class Score:
    """What one trial established about its configuration's objective."""
    state: str = "measured"         # measured | pruned | infeasible | failed | unavailable
    value: float | None = None      # the objective (None: not established)
    lower: float | None = None      # its interval (capacity: the bracket; else the CI)
    upper: float | None = None
    estimate: float | None = None   # told to the sampler when value is None (a bound)
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.state == "measured" and self.value is not None


@dataclass
class Trial:
    number: int                     # 0, 1, ... in the order measured
    candidate: int                  # index into the space's candidates
    score: Score
    seconds: float
    suggested: bool                 # the sampler's own suggestion (else the nearest to it)
    best_so_far: float | None = None


@dataclass
class Outcome:
    trials: list[Trial] = field(default_factory=list)
    stop: str = ""
    sampler: str = ""
    seconds: float = 0.0


def make_sampler(name: str, seed: int, budget: int):
    import optuna  # lazy: optuna (and GPSampler's torch) only when a search runs
    startup = max(2, min(10, budget // 3))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup), \
            f"Optuna GPSampler ({startup} random startup trials, seed {seed})"
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                          multivariate=True), \
            f"Optuna TPESampler (multivariate, {startup} random startup trials, seed {seed})"
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed), f"random sampling (seed {seed})"
    raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")


def better(a: float, b: float | None, direction: str) -> bool:
    return b is None or (a > b if direction == "maximize" else a < b)


def run_search(space, evaluate: Callable[[int, float | None], Score], *, direction: str,
               trials: int, seconds: float | None = None, seed: int = 0,
               patience: int | None = None, sampler: str = "gp",
               excluded: set[int] | None = None, prune: bool = False,
               clock=time.monotonic) -> Outcome:
    """Measure up to `trials` candidates of `space` (fewer when time, patience or the space
    run out). evaluate(candidate, floor) measures one; floor is the best value proven so far
    when `prune` (a capacity trial that proves itself below it may stop early)."""
    import optuna  # lazy: optuna
    from optuna.trial import TrialState  # lazy: optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_obj, described = make_sampler(sampler, seed, trials)
    rng = np.random.default_rng(seed)
    out = Outcome(sampler=described)
    start = clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # Optuna's experimental-feature warnings
        study = optuna.create_study(direction=direction, sampler=sampler_obj)
        dists = space.distributions()
        left = set(range(len(space))) - set(excluded or ())
        best = None
        since_best = measured = 0
        while True:
            if not left:
                out.stop = (f"every configuration that can run here was measured "
                            f"({measured})" if excluded else
                            f"every configuration was measured ({measured})")
                break
            if measured >= trials:
                out.stop = f"budget: {trials} trials measured"
                break
            if seconds is not None and clock() - start >= seconds:
                out.stop = f"budget: time ({seconds:g}s) spent after {measured} trials"
                break
            if patience is not None and since_best >= patience:
                out.stop = f"no better configuration in the last {patience} trials"
                break
            trial = study.ask(dists)
            index = space.nearest(trial.params, left, rng)
            suggested = space.coordinates(index) == {k: int(v) for k, v in trial.params.items()}
            if not suggested:
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(space.coordinates(index))
                trial = study.ask(dists)
            left.discard(index)
            t0 = clock()
            score = evaluate(index, best if prune else None)
            spent = clock() - t0
            if score.state != "unavailable":
                measured += 1
            _tell(study, trial, score, direction)
            if score.usable and better(score.value, best, direction):
                best, since_best = score.value, 0
            elif score.state != "unavailable":
                since_best += 1
            out.trials.append(Trial(len(out.trials), index, score, round(spent, 3), suggested,
                                    best))
    out.seconds = round(clock() - start, 3)
    return out


def _tell(study, trial, score: Score, direction: str) -> None:
    from optuna.trial import TrialState  # lazy: optuna
    value = score.value if score.value is not None else score.estimate
    if score.state in ("failed", "unavailable") or value is None or value <= 0:
        study.tell(trial, state=TrialState.FAIL)
        return
    # every completed trial carries the constraint (GPSampler needs the same keys on all)
    trial.set_constraint("slo", 1.0 if score.state == "infeasible" else -1.0)
    study.tell(trial, math.log(value))
