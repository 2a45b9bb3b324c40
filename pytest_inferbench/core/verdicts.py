"""Judgements of a change, and the verdict rules.

A judgement is one metric of one cell: the ratio new/base on a log scale, with a standard
error and the distribution of its estimate (Student t with df degrees of freedom, or normal).
On the metric's "worse" scale (log ratio for latency, minus log ratio for throughput) with the
threshold L = log(1 + limit) (latency) or -log(1 - limit) (throughput), at confidence c:

* regression:  the interval lies entirely above +L, i.e. the change exceeds the threshold and
               that is significant (one-sided p <= (1 - c)/2, Holm-corrected over every
               judgement of the comparison, and over the looks of an adaptive paired run)
* improvement: entirely below -L (same correction)
* no change:   entirely below +L (and not an improvement): any slowdown there may be is
               within the threshold (the reason says when a large improvement is not excluded)
* undetermined otherwise, with the reason: the interval is wider than the threshold (the noise
  hides a change of that size: needs paired mode, more rounds or learnt noise), it straddles
  the threshold, or it is beyond the threshold only before the correction for many cells.

So a regression is never declared for a change that is not shown to exceed the threshold,
and "no change" is never declared for a slowdown that could exceed it (a non-inferiority
test). Where the data cannot tell, the verdict says so instead of passing or failing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .thresholds import GateConfig, is_latency, log_limit, threshold_text

REGRESSION, IMPROVEMENT, NO_CHANGE, UNDETERMINED = ("regression", "improvement", "no change",
                                                    "undetermined")
# a cell's verdict is the worst of its metrics', in this order
SEVERITY = {REGRESSION: 0, UNDETERMINED: 1, IMPROVEMENT: 2, NO_CHANGE: 3}

RESAMPLES = 10_000
SEED = 0


# ----------------------------------------------------------------------------- distributions

def quantile(prob: float, df: float | None) -> float:
    from scipy.stats import norm, t
    return float(norm.ppf(prob) if df is None else t.ppf(prob, df))


def cdf(x: float, df: float | None) -> float:
    from scipy.stats import norm, t
    return float(norm.cdf(x) if df is None else t.cdf(x, df))


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m = len(pvalues)
    rejected = [False] * m
    for k, i in enumerate(order):
        if pvalues[i] <= alpha / (m - k):
            rejected[i] = True
        else:
            break
    return rejected


# ----------------------------------------------------------------------------- a judgement

@dataclass
class Judgement:
    """One metric of one cell. `worse` and `se` are on the worse log scale (see module doc)."""
    metric: str
    limit: float                    # tolerated change, positive fraction
    worse: float                    # estimate; nan when not measured
    se: float                       # standard error; inf when unknown
    df: float | None = None         # Student t degrees of freedom; None: normal
    noise: str = ""                 # where the uncertainty comes from, for the reason
    detail: dict = field(default_factory=dict)   # n, values, ... (goes into the JSON)
    missing: str | None = None      # why there is nothing to judge
    # decided:
    verdict: str = UNDETERMINED
    reason: str = ""
    lo: float = math.nan            # interval of the ratio new/base at the nominal confidence
    hi: float = math.nan
    p_regression: float = 1.0
    p_improvement: float = 1.0

    @property
    def L(self) -> float:
        return log_limit(self.metric, self.limit)

    @property
    def sign(self) -> int:
        return 1 if is_latency(self.metric) else -1

    @property
    def ratio(self) -> float:
        return math.exp(self.sign * self.worse) if math.isfinite(self.worse) else math.nan

    @property
    def judgeable(self) -> bool:
        return self.missing is None and math.isfinite(self.worse) and math.isfinite(self.se)

    def half_width(self, confidence: float) -> float:
        """Half-width of the interval on the log scale."""
        if not self.judgeable:
            return math.inf
        return quantile((1 + confidence) / 2, self.df) * self.se

    def p_beyond(self, side: int) -> float:
        """Two-sided-convention p-value that the change lies beyond the threshold on `side`
        (+1: regression, -1: improvement): <= 1 - c exactly when the c-interval lies beyond."""
        if not self.judgeable:
            return 1.0
        if self.se == 0:
            return 0.0 if side * self.worse > self.L else 1.0
        z = (side * self.worse - self.L) / self.se
        return min(1.0, 2 * (1 - cdf(z, self.df)))

    def to_json(self) -> dict:
        def r(x, digits=6):
            return round(x, digits) if isinstance(x, float) and math.isfinite(x) else None
        return {"metric": self.metric, "threshold": threshold_text(self.metric, self.limit),
                "verdict": self.verdict, "ratio": r(self.ratio), "lo": r(self.lo),
                "hi": r(self.hi), "change": r(self.ratio - 1 if math.isfinite(self.ratio)
                                               else math.nan),
                "p_regression": r(self.p_regression, 8), "se_log": r(self.se),
                "df": self.df, "noise": self.noise, "reason": self.reason, **self.detail}


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:+.{digits}f}%" if math.isfinite(x) else "?"


def decide(judgements: list[Judgement], confidence: float, looks: int = 1,
           cells: int = 1) -> None:
    """Give every judgement its verdict and reason, in place. Holm over all judgements given
    (a stored comparison: every matched cell and metric; a paired cell: its metrics), at
    alpha = (1 - confidence) / (looks x cells): Bonferroni over the planned looks of an
    adaptive paired run and over the paired cells of a session, which are judged one by one
    as they run."""
    split = max(1, looks) * max(1, cells)
    alpha = (1 - confidence) / split
    judged = [j for j in judgements if j.judgeable]
    for j in judged:
        j.p_regression = j.p_beyond(+1)
        j.p_improvement = j.p_beyond(-1)
    worse = holm([j.p_regression for j in judged], alpha)
    better = holm([j.p_improvement for j in judged], alpha)
    m = len(judged)
    index = {id(j): k for k, j in enumerate(judged)}
    for j in judgements:
        if not j.judgeable:
            j.verdict = UNDETERMINED
            j.reason = j.missing or f"no estimate of the noise of {j.metric}"
            continue
        h = j.half_width(1 - (1 - confidence) / split)
        log_ratio = j.sign * j.worse
        j.lo, j.hi = math.exp(log_ratio - h), math.exp(log_ratio + h)
        L = j.L
        thr = threshold_text(j.metric, j.limit)
        note = f" ({j.noise})" if j.noise else ""
        interval = f"{pct(j.lo - 1)} .. {pct(j.hi - 1)}"
        k = index[id(j)]
        if worse[k]:
            j.verdict = REGRESSION
            j.reason = (f"{j.metric} {pct(j.ratio - 1)} [{interval}], beyond {thr} at "
                        f"{_conf(confidence)} confidence{_family(m, looks, cells)}{note}")
        elif better[k]:
            j.verdict = IMPROVEMENT
            j.reason = (f"{j.metric} {pct(j.ratio - 1)} [{interval}], better than the "
                        f"{thr} threshold mirrored{_family(m, looks, cells)}{note}")
        elif j.worse + h < L:
            # no change beyond the threshold in the worse direction: the question a gate asks
            j.verdict = NO_CHANGE
            j.reason = f"{j.metric} {pct(j.ratio - 1)} [{interval}], within {thr}{note}"
            if j.worse - h <= -L:
                j.reason += "; it may be better by more than that (not shown)"
        else:
            j.verdict = UNDETERMINED
            if h >= L:
                j.reason = (f"{j.metric} {pct(j.ratio - 1)} [{interval}]: the noise "
                            f"(±{100 * math.expm1(h):.0f}%) is wider than the threshold "
                            f"{thr}{note}")
            elif j.worse - h > L or j.worse + h < -L:
                j.reason = (f"{j.metric} {pct(j.ratio - 1)} [{interval}]: beyond {thr} at "
                            f"{_conf(confidence)}, but not after the correction for multiple "
                            f"comparisons{_family(m, looks, cells)}{note}")
            else:
                j.reason = (f"{j.metric} {pct(j.ratio - 1)} [{interval}] straddles the "
                            f"threshold {thr}{note}")


def _conf(c: float) -> str:
    return f"{100 * c:g}%"


def _family(m: int, looks: int, cells: int = 1) -> str:
    parts = []
    if m > 1:
        parts.append(f"Holm over {m} comparisons")
    if cells > 1:
        parts.append(f"Bonferroni over {cells} paired cells")
    if looks > 1:
        parts.append(f"{looks} looks")
    return f" ({', '.join(parts)})" if parts else ""


def cell_verdict(judgements: list[Judgement]) -> str:
    """The worst verdict of a cell's metrics (regression > undetermined > improvement >
    no change)."""
    if not judgements:
        return UNDETERMINED
    return min((j.verdict for j in judgements), key=SEVERITY.__getitem__)


# ----------------------------------------------------------------------------- paired rounds

# what a paired ratio is of (run/paired.py): its plural and its spread's name, for messages
PAIRED_UNITS = {"round": ("rounds", "round-to-round"),
                "process pair": ("process pairs", "pair-to-pair")}


def paired_judgement(metric: str, limit: float, ratios: Sequence[float],
                     unit: str = "round") -> Judgement:
    """Per-round (or per-pair of processes: `unit`) ratios candidate/baseline of one metric
    -> a judgement on the mean log ratio
    with a Student t interval (n - 1 df). With the 6-40 rounds a paired run has, a percentile
    bootstrap interval is too narrow (it undercovers by several points at n = 10); the t
    interval is its large-sample limit with the right small-sample width. The bootstrap
    interval is kept beside it (`bootstrap`) as a cross-check."""
    r = np.asarray([x for x in ratios if x is not None], dtype=np.float64)
    sign = 1 if is_latency(metric) else -1
    plural, spread_name = PAIRED_UNITS[unit]
    if len(r) < 3 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        return Judgement(metric, limit, math.nan, math.inf,
                         missing=f"{metric}: {len(r)} usable {plural} (need 3)")
    logs = np.log(r)
    n = len(logs)
    se = float(logs.std(ddof=1) / math.sqrt(n))
    spread = float(logs.std(ddof=1))
    est = ratio_estimate(r)
    detail = {"rounds": n, "round_sd": round(math.expm1(spread), 6),
              "bootstrap": [round(est.lo, 6), round(est.hi, 6)],
              "median_ratio": round(est.median, 6)}
    return Judgement(metric, limit, sign * float(logs.mean()), se, df=n - 1,
                     noise=f"paired, {n} {plural}, {spread_name} sd "
                           f"±{100 * math.expm1(spread):.1f}%",
                     detail=detail)


def look_schedule(rounds: int, cap: int) -> list[int]:
    """Round counts at which the verdict is looked at: rounds, 2 x rounds, ... and the cap."""
    looks, n = [], rounds
    while n < cap:
        looks.append(n)
        n *= 2
    looks.append(cap)
    return looks


def judge(ratios: dict, gate: GateConfig, looks: int, cells: int, unit: str = "round"):
    """Judgements of the gated metrics from per-round (or per-pair: `unit`) ratios (also
    used by `compare` to re-judge a stored paired result under another gate)."""
    judgements = []
    for metric, limit in gate.thresholds.items():
        judgements.append(paired_judgement(metric, limit, ratios.get(metric) or [], unit))
    decide(judgements, gate.confidence, looks=looks, cells=cells)
    return judgements



# ----------------------------------------------------------------------------- stored runs

@dataclass(frozen=True)
class Obs:
    """One run's value of a metric, and the standard error of its log from within the run
    (the percentile's distribution-free bounds, or the mean time per query's)."""
    value: float | None
    se_log: float = math.inf


def stored_judgement(metric: str, limit: float, base: Sequence[Obs], new: Sequence[Obs],
                     default_noise: float, confidence_of_noise: float = 0.95) -> Judgement:
    """Runs of the baseline against runs of the new session (one or more each: repeats).

    With repeats on either side (N + M - 2 >= 1 degrees of freedom) the between-run noise is
    learnt from them: the pooled spread of the log values within each side (the A/A ratios),
    never below the runs' own sampling error, and the interval is Student t on the difference
    of mean logs, se = s * sqrt(1/N + 1/M) (a prediction interval when the new side is one
    run). Without repeats nothing about the noise between runs is known: the default noise
    (a half-width at 95%) is added to the two runs' sampling errors, and the verdict says so.
    """
    sign = 1 if is_latency(metric) else -1
    b = [o for o in base if o.value is not None and o.value > 0 and math.isfinite(o.value)]
    n = [o for o in new if o.value is not None and o.value > 0 and math.isfinite(o.value)]
    if not b or not n:
        side = "baseline" if not b else "new run"
        return Judgement(metric, limit, math.nan, math.inf,
                         missing=f"{metric} was not measured in the {side}")
    lb = np.log([o.value for o in b])
    ln = np.log([o.value for o in n])
    worse = sign * float(ln.mean() - lb.mean())
    detail = {"base": _fmt_values(b), "new": _fmt_values(n), "repeats_base": len(b),
              "repeats_new": len(n)}
    df = len(b) + len(n) - 2
    sampling = [o.se_log for o in b + n]
    if df >= 1:
        pooled = (float(((lb - lb.mean()) ** 2).sum() + ((ln - ln.mean()) ** 2).sum())) / df
        floor = float(np.mean([s * s for s in sampling if math.isfinite(s)] or [0.0]))
        s2 = max(pooled, floor)
        se = math.sqrt(s2 * (1 / len(b) + 1 / len(n)))
        detail["aa_sd"] = round(math.expm1(math.sqrt(s2)), 6)
        return Judgement(metric, limit, worse, se, df=df, detail=detail,
                         noise=f"A/A noise learnt from {len(b)}+{len(n)} runs: run-to-run sd "
                               f"±{100 * math.expm1(math.sqrt(s2)):.1f}%")
    sd_noise = math.log1p(default_noise) / quantile((1 + confidence_of_noise) / 2, None)
    se = math.sqrt(b[0].se_log ** 2 + n[0].se_log ** 2 + sd_noise ** 2)
    detail["assumed_noise"] = default_noise
    return Judgement(metric, limit, worse, se, df=None, detail=detail,
                     noise=f"no A/A noise learnt: assumed ±{100 * default_noise:g}% between "
                           f"runs; learn it with --infer-save NAME --infer-repeat 5")


def _fmt_values(obs) -> list:
    return [float(f"{o.value:.6g}") for o in obs]


# ----------------------------------------------------------------------------- bootstrap

@dataclass(frozen=True)
class Estimate:
    """Geometric-mean ratio of paired slices with its bootstrap CI."""
    ratio: float
    lo: float
    hi: float
    median: float
    n: int
    confidence: float = 0.95

    def interval(self, digits: int = 3) -> str:
        return f"[{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def bootstrap_mean_ci(values: Sequence[float], confidence: float = 0.95,
                      resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of `values` (resampling the values themselves)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("need at least one value")
    if np.ptp(x) == 0:          # every resample has the same mean: the CI is that value
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    n = len(x)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // n)       # bounded memory: ~16 MB of indices at a time
    for s in range(0, resamples, step):
        k = min(step, resamples - s)
        means[s:s + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def ratio_estimate(ratios: Sequence[float], confidence: float = 0.95,
                   resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """Geometric mean of per-pair ratios and its percentile-bootstrap CI over pairs."""
    r = np.asarray(ratios, dtype=np.float64)
    if len(r) == 0:
        raise ValueError("no pairs")
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        bad = r[~(np.isfinite(r) & (r > 0))]
        raise ValueError(f"ratios must be finite and positive, got {bad}")
    logs = np.log(r)
    if np.ptp(logs) == 0:
        c = float(r[0])
        return Estimate(c, c, c, c, len(r), confidence)
    lo, hi = bootstrap_mean_ci(logs, confidence, resamples, seed)
    return Estimate(ratio=math.exp(float(logs.mean())), lo=math.exp(lo), hi=math.exp(hi),
                    median=float(np.median(r)), n=len(r), confidence=confidence)
