"""History mode's statistics on synthetic series with known steps: change points (Otava's
E-Divisive), the reference window, and the verdict of one new run against the history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_inferbench.core.verdicts import Obs, decide
from pytest_inferbench.history.changes import change_points
from pytest_inferbench.history.judge import history_judgement, reference


def _series(n_before, n_after, step, sd, seed):
    rng = np.random.default_rng(seed)
    return list(np.r_[rng.lognormal(0, sd, n_before), rng.lognormal(math.log1p(step), sd,
                                                                      n_after)] * 5.0)


@pytest.mark.parametrize("seed", range(5))
def test_a_20_percent_step_is_found_at_its_run(seed):
    found = change_points(_series(20, 8, 0.20, 0.02, seed))
    assert [c.index for c in found] == [20]
    assert found[0].ratio == pytest.approx(1.2, rel=0.05) and found[0].pvalue < 0.001


@pytest.mark.parametrize("seed", range(5))
def test_a_doubling_is_found_within_one_run_even_as_the_newest_runs(seed):
    found = change_points(_series(25, 2, 1.0, 0.05, seed))
    assert len(found) == 1 and abs(found[0].index - 25) <= 1


@pytest.mark.parametrize("seed", range(8))
def test_no_change_points_in_an_unchanged_series(seed):
    assert change_points(_series(40, 0, 0.0, 0.05, seed)) == []


def _judge(past, new, limit=0.10, **kw):
    j = history_judgement("p50", limit, [Obs(v) for v in past], [Obs(v) for v in new], **kw)
    decide([j], 0.95)
    return j


def test_one_new_run_against_a_history_of_twenty():
    past = _series(20, 0, 0, 0.02, 1)
    slow = _judge(past, [5.0 * 1.3])
    assert slow.verdict == "regression" and slow.df == 19
    assert "noise learnt from 20 earlier runs" in slow.reason
    same = _judge(past, [5.0])
    assert same.verdict == "no change"
    # throughput: a drop is the worse direction
    j = history_judgement("throughput", 0.10, [Obs(1000 / v) for v in past],
                          [Obs(1000 / (5.0 * 1.3))])
    decide([j], 0.95)
    assert j.verdict == "regression"


def test_one_outlier_run_barely_moves_the_learnt_noise():
    past = _series(20, 0, 0, 0.02, 2)
    clean = _judge(past, [5.0])
    bad = _judge(past[:10] + [past[10] * 3] + past[11:], [5.0])
    assert bad.detail["outliers"] == 1 and "1 outlier run set aside" in bad.reason
    assert bad.detail["aa_sd"] == pytest.approx(clean.detail["aa_sd"], rel=0.3)
    # without setting it aside the sd would be many times larger
    logs = np.log(past[:10] + [past[10] * 3] + past[11:])
    assert math.expm1(logs.std(ddof=1)) > 5 * clean.detail["aa_sd"]


def test_too_short_a_history_says_how_many_runs_it_needs():
    j = _judge([5.0, 5.1, 4.9], [5.0])
    assert j.missing is not None and "has 3 runs" in j.missing
    assert "needs at least 5 (2 more)" in j.missing and j.verdict == "undetermined"


def test_the_reference_is_the_level_before_a_change_until_it_has_lasted():
    series = _series(20, 2, 0.5, 0.02, 3)
    changes = change_points(series)
    assert [c.index for c in changes] == [20]
    ref = reference(len(series), changes, window=30, min_runs=5)
    assert ref.indices == list(range(20)) and "has lasted 2 runs" in ref.note
    longer = _series(20, 10, 0.5, 0.02, 3)
    ref = reference(len(longer), change_points(longer), window=30, min_runs=5)
    assert ref.indices == list(range(20, 30)) and "since the change at run 21" in ref.note
    # the window caps how far back it looks
    ref = reference(40, [], window=30)
    assert ref.indices == list(range(10, 40))
