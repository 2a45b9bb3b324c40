"""Paired, interleaved comparisons that state their uncertainty.

Two measurement functions, A (the harness) and B (a peer), each measure one short slice
(~0.1-0.2 s) and return a number for it (a throughput or a time per query; or a dict of such
numbers). `interleave` runs them in pairs, alternating the order (A-B, B-A, A-B, ...), so that
slow drift of the machine (frequency, other tenants) hits both sides alike and cancels within
each pair of pairs; a burst of noise spoils one or two slices, not a whole side.

Each pair gives a ratio A/B. The estimate is the geometric mean of the per-pair ratios, with a
95% percentile-bootstrap confidence interval over pairs (10,000 resamples, fixed seed):

* geometric mean, not median: an overhead the harness adds only in some slices (a stall, a
  ramp-up) is exactly what the benchmark must see, and a median would hide it; the mean of
  log-ratios also treats A/B and B/A symmetrically and bootstraps smoothly with few pairs.
  The median ratio is printed next to it as a robustness check.
* bootstrap over pairs: pairs are the independent units (each pair shares its moment of
  machine state), so resampling pairs keeps that pairing.

A claim is a target interval for the ratio (e.g. >= 0.97, or [0.97, 1.03]). The verdict is
"holds" when the whole CI lies inside it, "fails" when the whole CI lies outside it, and
"too noisy to tell" otherwise: the machine's noise was larger than the difference the claim is
about, and nothing can be concluded either way.

Adaptive mode (as Chromium's Pinpoint adds repeats to an ambiguous comparison): after the
requested pairs, keep adding pairs while the verdict is undecided, up to a cap and within a
time budget. Stopping when decided makes the nominal 95% a little optimistic (optional
stopping); the cap bounds that, and the first `pairs` are always run.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# The statistics live in the package (the plugin's paired A/B cells use them too).
from pytest_inferbench.core.verdicts import (RESAMPLES, SEED, Estimate,  # noqa: E402,F401
                                          bootstrap_mean_ci, ratio_estimate)


# ----------------------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Target:
    """The claim: the ratio lies in [lo, hi] (either end may be open)."""
    lo: float = -math.inf
    hi: float = math.inf

    def describe(self) -> str:
        if math.isinf(self.hi):
            return f">= {self.lo:g}"
        if math.isinf(self.lo):
            return f"<= {self.hi:g}"
        mid = (self.lo + self.hi) / 2
        if abs(mid - 1) < 1e-12:
            return f"within {round((self.hi - 1) * 100, 6):g}% of 1"
        return f"in [{self.lo:g}, {self.hi:g}]"

    def edges(self) -> list[float]:
        return [e for e in (self.lo, self.hi) if math.isfinite(e)]


HOLDS, FAILS, NOISY = "holds", "fails", "too noisy to tell"


def verdict(est: Estimate, target: Target) -> str:
    """holds: the whole CI inside the target; fails: the whole CI outside; else too noisy."""
    if target.lo <= est.lo and est.hi <= target.hi:
        return HOLDS
    if est.hi < target.lo or est.lo > target.hi:
        return FAILS
    return NOISY


def verdict_text(est: Estimate, target: Target) -> str:
    v = verdict(est, target)
    if v == HOLDS:
        return f"holds ({target.describe()})"
    if v == FAILS:
        side = "below" if est.hi < target.lo else "above"
        edge = target.lo if side == "below" else target.hi
        return f"fails ({target.describe()}: the whole CI is {side} {edge:g})"
    crossed = [e for e in target.edges() if est.lo < e < est.hi] or target.edges()
    return (f"too noisy to tell ({target.describe()}: CI {est.interval()} crosses "
            f"{' and '.join(f'{e:g}' for e in crossed)}; the machine's noise is larger than "
            f"the difference the claim is about - rerun on a quieter machine or with more pairs)")


def summary_line(name: str, est: Estimate, target: Target) -> str:
    return (f"{name}: {est.ratio:.3f} {est.interval()} {est.confidence:.0%} CI over "
            f"{est.n} pairs -> {verdict_text(est, target)}")


# ----------------------------------------------------------------------------- interleaving

@dataclass
class Pairs:
    """What `interleave` measured: per pair, what A and B returned, and who went first."""
    a: list = field(default_factory=list)
    b: list = field(default_factory=list)
    a_first: list = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""           # "pairs" | "decided" | "max_pairs" | "budget"

    def __len__(self) -> int:
        return len(self.a)

    def side(self, which: str, key=None) -> np.ndarray:
        vals = self.a if which == "a" else self.b
        return np.array([v if key is None else v[key] for v in vals], dtype=np.float64)

    def ratios(self, key_a=None, key_b=None) -> np.ndarray:
        """Per-pair A/B (for dict results, A[key_a] / B[key_b])."""
        return self.side("a", key_a) / self.side("b", key_b)


def interleave(measure_a: Callable[[], object], measure_b: Callable[[], object],
               pairs: int = 40, *, max_pairs: int | None = None, budget_s: float | None = None,
               decided: Callable[[Pairs], bool] | None = None, check_every: int = 10,
               warmup_pairs: int = 1, min_pairs: int = 2,
               on_pair: Callable[[int, Pairs], None] | None = None) -> Pairs:
    """Run A and B in `pairs` interleaved pairs, order alternating A-B, B-A, ...

    warmup_pairs: pairs run first and thrown away (first-slice effects: caches, allocator).
    budget_s: stop before a pair that would end past this many seconds (counted from the call,
        warm-up included); at least `min_pairs` are run regardless.
    decided + max_pairs (adaptive): after `pairs`, keep adding pairs, `check_every` at a time,
        while decided(result) is false, up to max_pairs and within the budget.
    Budget and adaptive checks happen only at even pair counts, so both orders stay balanced.
    """
    clock = time.perf_counter
    t0 = clock()
    for _ in range(warmup_pairs):
        measure_a()
        measure_b()
    out = Pairs()
    cap = max(pairs, max_pairs or 0) if decided is not None else pairs
    t_pairs = clock()
    next_look = pairs          # first look at the verdict once the requested pairs are done
    i = 0
    while True:
        if i >= cap:
            out.stopped = "max_pairs" if cap > pairs else "pairs"
            break
        if i % 2 == 0:
            if decided is not None and i >= next_look:
                if decided(out):
                    out.stopped = "decided"
                    break
                next_look = i + max(1, check_every)
            if budget_s is not None and i >= min_pairs:
                per_pair = (clock() - t_pairs) / i
                if clock() - t0 + 2 * per_pair > budget_s:
                    out.stopped = "budget"
                    break
        a_first = i % 2 == 0
        if a_first:
            va = measure_a()
            vb = measure_b()
        else:
            vb = measure_b()
            va = measure_a()
        out.a.append(va)
        out.b.append(vb)
        out.a_first.append(a_first)
        i += 1
        if on_pair is not None:
            on_pair(i, out)
    out.seconds = clock() - t0
    return out


def undecided_until(target: Target, ratios_of: Callable[[Pairs], np.ndarray],
                    resamples: int = 2_000) -> Callable[[Pairs], bool]:
    """A `decided` callback for interleave: True once the verdict is holds or fails."""
    def decided(p: Pairs) -> bool:
        if len(p) < 4:
            return False
        return verdict(ratio_estimate(ratios_of(p), resamples=resamples), target) != NOISY
    return decided


# ----------------------------------------------------------------------------- peers

def tight_loop(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """What a careful person writes by hand: fn back to back, one clock read per ~5 ms chunk,
    the garbage collector off during the loop (as timeit and the harness do).
    Returns (calls, seconds)."""
    clock = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = clock()
        fn()
        first = clock() - t0
        chunk = max(1, min(4096, int(0.005 / max(first, 1e-9))))
        n = 1
        while True:
            for _ in range(chunk):
                fn()
            n += chunk
            t1 = clock()
            if t1 - t0 >= seconds:
                return n, t1 - t0
    finally:
        if gc_was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------- printing

def table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A compact text table; the first `left` columns are left-aligned, the rest right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]

    def fmt(r):
        return "  ".join(c.ljust(w) if j < left else c.rjust(w)
                         for j, (c, w) in enumerate(zip(r, widths))).rstrip()
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)
