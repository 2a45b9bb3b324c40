"""Statistics against numpy and against the definition of a confidence interval."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from pytest_inferbench.core.stats import (bound_ranks, percentile, percentile_with_bounds,
                                             rank, relative_half_width, samples_needed)

samples = st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=400)
# Percentiles whose p/100 is exact in binary, so numpy's float arithmetic agrees with ours.
exact_p = st.sampled_from([1, 12.5, 25, 37.5, 50, 62.5, 75, 87.5, 93.75, 99.609375])


@settings(max_examples=300, deadline=None)
@given(samples, exact_p)
def test_percentile_is_numpy_inverted_cdf(values, p):
    arr = np.sort(np.asarray(values))
    assert percentile(arr, p) == np.percentile(arr, p, method="inverted_cdf")


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10_000), st.floats(0.01, 99.99))
def test_rank_is_the_nearest_rank_definition(n, p):
    r = rank(n, p)
    # at least p% of the samples are at or below rank r, and fewer below r - 1
    assert r >= p / 100 * n - 1e-9 and (r - 1) < p / 100 * n + 1e-9
    assert r >= 1 and r <= n


@settings(max_examples=300, deadline=None)
@given(samples, st.sampled_from([50, 90, 95, 99, 99.9]), st.sampled_from([0.9, 0.95, 0.99]))
def test_bounds_bracket_the_estimate(values, p, confidence):
    arr = np.sort(np.asarray(values))
    value, lo, hi = percentile_with_bounds(arr, p, confidence)
    if lo is not None:
        assert lo <= value
    if hi is not None:
        assert value <= hi


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([50, 90, 99, 99.9]), st.sampled_from([0.9, 0.95]))
def test_bound_ranks_have_the_stated_coverage(n, p, confidence):
    lo, hi = bound_ranks(n, p, confidence)
    q = p / 100
    # coverage of [X_(lo), X_(hi)] for a continuous distribution = P(lo <= B <= hi - 1)
    upper = binom.cdf((hi if hi else n + 1) - 1, n, q)
    lower = binom.cdf((lo if lo else 0) - 1, n, q) if lo else 0.0
    assert upper - lower >= confidence - 1e-12
    if lo and hi:
        assert lo >= 1 and lo <= rank(n, p) <= hi <= n


def test_interval_covers_true_quantile_in_simulation():
    rng = np.random.default_rng(1)
    true_p99 = -math.log(0.01)          # exponential(1)
    hits = trials = 0
    for _ in range(400):
        x = np.sort(rng.exponential(size=2000))
        _, lo, hi = percentile_with_bounds(x, 99, 0.95)
        trials += 1
        hits += lo <= true_p99 <= hi
    assert hits / trials >= 0.92          # nominal 0.95; binomial noise over 400 trials


def test_too_few_samples_have_no_bound():
    assert bound_ranks(100, 99.9, 0.95)[1] is None
    n = samples_needed(99, 0.95)
    assert bound_ranks(n, 99, 0.95)[1] is not None
    assert n > 100


def test_relative_half_width_matches_sorted_computation():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=5000)
    s = np.sort(x)
    value, lo, hi = percentile_with_bounds(s, 90, 0.95)
    assert relative_half_width(x, 90, 0.95) == pytest.approx(max(value - lo, hi - value) / value)
    assert relative_half_width(x[:10], 99.9, 0.95) == math.inf
