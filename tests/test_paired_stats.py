"""The statistics behind benchmarks/_paired.py: bootstrap CI of paired ratios and the verdict."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _paired  # noqa: E402
from _paired import FAILS, HOLDS, NOISY, Estimate, Target, ratio_estimate, verdict  # noqa: E402

AT_LEAST = Target(lo=0.97)
WITHIN_3 = Target(lo=0.97, hi=1.03)


def _sample(center, spread, n=60, seed=1):
    rng = np.random.default_rng(seed)
    return center * np.exp(rng.normal(0, spread, n))


def test_constant_sample_ci_is_the_constant():
    est = ratio_estimate([0.985] * 25)
    assert (est.ratio, est.lo, est.hi, est.median, est.n) == (0.985, 0.985, 0.985, 0.985, 25)
    assert _paired.bootstrap_mean_ci([2.5] * 7) == (2.5, 2.5)


def test_ci_contains_the_estimate_and_is_deterministic():
    r = _sample(1.0, 0.05)
    a, b = ratio_estimate(r), ratio_estimate(r)
    assert a == b                                    # fixed seed
    assert a.lo < a.ratio < a.hi
    assert a.ratio == pytest.approx(math.exp(np.log(r).mean()))
    # percentile bootstrap of a mean ~ mean +- 1.96 sd/sqrt(n) for a normal-ish sample
    logs = np.log(r)
    half = 1.96 * logs.std(ddof=1) / math.sqrt(len(r))
    assert math.log(a.hi) - math.log(a.lo) == pytest.approx(2 * half, rel=0.15)


def test_ci_inside_the_target_holds():
    est = ratio_estimate(_sample(1.0, 0.005))
    assert 0.99 < est.lo and est.hi < 1.01
    assert verdict(est, AT_LEAST) == HOLDS
    assert verdict(est, WITHIN_3) == HOLDS


def test_ci_outside_the_target_fails():
    assert verdict(ratio_estimate(_sample(0.90, 0.005)), AT_LEAST) == FAILS
    assert verdict(ratio_estimate(_sample(0.90, 0.005)), WITHIN_3) == FAILS
    assert verdict(ratio_estimate(_sample(1.10, 0.005)), WITHIN_3) == FAILS
    assert verdict(ratio_estimate(_sample(1.10, 0.005)), AT_LEAST) == HOLDS   # open above


def test_ci_straddling_an_edge_is_too_noisy():
    est = ratio_estimate(_sample(0.97, 0.05))
    assert est.lo < 0.97 < est.hi
    assert verdict(est, AT_LEAST) == NOISY
    assert verdict(ratio_estimate(_sample(1.0, 0.3)), WITHIN_3) == NOISY   # wider than the claim
    text = _paired.verdict_text(est, AT_LEAST)
    assert text.startswith("too noisy to tell") and "0.97" in text


def test_verdict_edges_are_inclusive():
    assert verdict(Estimate(1.0, 0.97, 1.03, 1.0, 10), WITHIN_3) == HOLDS
    assert verdict(Estimate(0.96, 0.95, 0.97, 0.96, 10), WITHIN_3) == NOISY
    assert verdict(Estimate(0.96, 0.95, 0.9699, 0.96, 10), WITHIN_3) == FAILS


def test_summary_line():
    line = _paired.summary_line("harness/tight loop throughput",
                                Estimate(0.991, 0.982, 1.001, 0.99, 60), AT_LEAST)
    assert line == ("harness/tight loop throughput: 0.991 [0.982, 1.001] 95% CI over 60 pairs "
                    "-> holds (>= 0.97)")
    assert WITHIN_3.describe() == "within 3% of 1"


def test_bad_ratios_are_refused():
    with pytest.raises(ValueError):
        ratio_estimate([1.0, 0.0])
    with pytest.raises(ValueError):
        ratio_estimate([])


def test_interleave_alternates_and_adapts():
    log = []
    a = lambda: log.append("A") or 1.0          # noqa: E731
    b = lambda: log.append("B") or 1.0          # noqa: E731
    p = _paired.interleave(a, b, 4, warmup_pairs=1)
    assert "".join(log) == "AB" + "AB" + "BA" + "AB" + "BA"
    assert len(p) == 4 and p.a_first == [True, False, True, False] and p.stopped == "pairs"
    # adaptive: undecided until 10 pairs, then decided
    p = _paired.interleave(a, b, 4, max_pairs=50, decided=lambda q: len(q) >= 10,
                           check_every=2, warmup_pairs=0)
    assert (len(p), p.stopped) == (10, "decided")
    p = _paired.interleave(a, b, 4, max_pairs=8, decided=lambda q: False, warmup_pairs=0)
    assert (len(p), p.stopped) == (8, "max_pairs")
    # an odd --pairs still looks at the verdict (at even counts, keeping the orders balanced)
    p = _paired.interleave(a, b, 5, max_pairs=50, decided=lambda q: len(q) >= 6,
                           check_every=3, warmup_pairs=0)
    assert (len(p), p.stopped) == (6, "decided")
    # a budget of zero still runs the minimum two pairs
    p = _paired.interleave(a, b, 40, budget_s=0.0, warmup_pairs=0)
    assert (len(p), p.stopped) == (2, "budget")
    assert list(p.ratios()) == [1.0, 1.0]
