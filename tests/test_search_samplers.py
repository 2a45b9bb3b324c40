"""The samplers of configuration search besides the default GPSampler (docs/search.md:
`sampler: tpe` is Optuna's TPESampler, multivariate; `sampler: random` random sampling): each
is the sampler the study runs with, the same seed and the same measurements give the same
trials, a session records which sampler chose its trials, and an unknown name is a spec
error."""

import json

import optuna
import pytest
import search_surface
from conftest import FAST

from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.optimize.optimizer import Score, run_search
from pytest_inferbench.optimize.space import Space
from pytest_inferbench.spec import load_spec

KINDS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}


@pytest.fixture(scope="module")
def surface():
    return search_surface.true_capacities(queries=2_000)


def _search(surface, sampler, seed, monkeypatch):
    """(the sampler the study was created with, the outcome, candidates in trial order):
    15 trials on the known surface of tests/search_surface.py (100 configurations), its true
    capacities as the measurements."""
    keys = list(surface)
    made = []
    create = optuna.create_study

    def spy(*args, **kwargs):            # Optuna's own function, called as it is
        study = create(*args, **kwargs)
        made.append(study)
        return study
    monkeypatch.setattr(optuna, "create_study", spy)

    def evaluate(i, floor):
        v = surface[keys[i]]
        return Score(value=v, lower=v, upper=v) if v > 0 else \
            Score(state="infeasible", estimate=1.0)
    out = run_search(Space(search_surface.dims(), search_surface.params(keys)), evaluate,
                     direction="maximize", trials=15, seed=seed, patience=None,
                     sampler=sampler)
    monkeypatch.setattr(optuna, "create_study", create)
    (study,) = made
    return study.sampler, out, [t.candidate for t in out.trials]


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_the_named_sampler_chooses_the_trials_and_a_seed_reproduces_them(
        surface, name, monkeypatch):
    sampler, out, order = _search(surface, name, 3, monkeypatch)
    assert type(sampler) is KINDS[name], type(sampler)
    if name == "tpe":
        assert sampler._multivariate is True             # as docs/search.md says
        assert out.sampler.startswith("Optuna TPESampler (multivariate, ")
    else:
        assert out.sampler == "random sampling (seed 3)"
    assert out.sampler.endswith("seed 3)")
    assert len(order) == len(set(order)) == 15 and out.stop == "budget: 15 trials measured"
    _, again, same = _search(surface, name, 3, monkeypatch)
    assert same == order and again.sampler == out.sampler     # same seed, same trials
    _, _, other = _search(surface, name, 4, monkeypatch)
    assert other != order                                  # the seed is the sampler's


def test_tpe_and_random_choose_other_trials_than_the_default(surface, monkeypatch):
    """With one seed, the three samplers do not walk the same path: the name is used."""
    paths = {name: _search(surface, name, 0, monkeypatch)[2] for name in ("gp", "tpe", "random")}
    assert paths["tpe"] != paths["gp"] and paths["random"] != paths["gp"]
    assert paths["tpe"] != paths["random"]


SPEC = f"""
name: samplers
defaults: {{{FAST}}}
benchmarks:
"""
ENTRY = """
  - model: mlp-tiny
    name: {name}
    runtime: torch
    batch_size: [1, 2, 3, 4, 5, 6]
    search: {{objective: throughput, sampler: {sampler}, seed: 7, budget: {{trials: 2}}}}
"""


def test_a_session_searches_with_tpe_and_random_and_records_which(pytester):
    """Four searches in one session: tpe and random, each twice with seed 7. Both budgets'
    trials are the samplers' random start-up trials (TPE's first 2), so the same seed gives
    the same configurations in the same order whatever was measured; the run file records
    the sampler and the seed of each."""
    entries = [("tpe-a", "tpe"), ("tpe-b", "tpe"), ("random-a", "random"),
               ("random-b", "random")]
    pytester.makefile(".yaml", bench_s=SPEC + "".join(
        ENTRY.format(name=n, sampler=s) for n, s in entries))
    result = pytester.runpytest("--infer-json", "run.json", "--infer-no-html", "--infer-store",
                                "none", "--infer-no-leases", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    doc = json.loads((pytester.path / "run.json").read_text())
    searches = {r["id"].split("::")[1].split("[")[0]: r["search"] for r in doc["results"]
                if r.get("search")}
    assert set(searches) == {n for n, _ in entries}
    for name, sampler in entries:
        s = searches[name]
        assert s["seed"] == 7 and s["measured"] == 2 and s["grid"] == 6, s
        want = ("Optuna TPESampler (multivariate, 2 random startup trials, seed 7)"
                if sampler == "tpe" else "random sampling (seed 7)")
        assert s["sampler"] == want, s["sampler"]
        assert all(t["state"] == "measured" for t in s["trials"]), s["trials"]

    def path(name):
        return [t["params"] for t in searches[name]["trials"]]
    assert path("tpe-a") == path("tpe-b") and path("random-a") == path("random-b")
    assert len({json.dumps(p, sort_keys=True) for p in path("tpe-a")}) == 2


def test_an_unknown_sampler_is_a_spec_error_naming_the_choices(write):
    f = write("bench_bad.yaml", """
        name: bad
        benchmarks:
          - model: mlp-tiny
            batch_size: [1, 4]
            search: {objective: throughput, sampler: bayes}
        """)
    with pytest.raises(SpecError) as info:
        load_spec(f)
    assert info.value.render() == (f"{f}:5: benchmarks[0].search.sampler: got 'bayes', "
                                   f"expected 'gp', 'tpe' or 'random'")


def test_an_unknown_sampler_stops_the_session_at_collection(pytester):
    pytester.makefile(".yaml", bench_bad="""
        name: bad
        benchmarks:
          - model: mlp-tiny
            batch_size: [1, 4]
            search: {objective: throughput, sampler: TPE}
        """)
    result = pytester.runpytest("--infer-no-html", "--infer-store", "none",
                                "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*bench_bad.yaml:5: benchmarks[[]0[]].search.sampler: got "
                                 "'TPE', expected 'gp', 'tpe' or 'random'"])
    assert "Traceback" not in result.stdout.str()
