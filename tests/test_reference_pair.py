"""A reference pair (`ab: {reference: true}`): a fixed reference measured alongside the cell in
its own process, its ratio judged against the ratio's history. A controlled system: SPEED
stands for the speed of the machine and the process (it slows the cell and the reference
alike), SPIN_FACTOR for a change in the cell's own model. History mode on the cell alone calls
a slower machine a regression; on the ratio it does not, and it still catches the model's."""

import json

from spin_models import SPIN

MODEL = SPIN + '''

def cell():
    speed = float(os.environ.get("SPEED", "1"))
    return Spin(400 * speed * float(os.environ.get("SPIN_FACTOR", "1"))), {"x": [4]}

def ref():
    return Spin(300 * float(os.environ.get("SPEED", "1"))), {"x": [4]}
'''

SPEC = """
name: r
defaults: {warmup: 3, min_duration: 0.1s, max_duration: 0.3s, min_queries: 20}
benchmarks:
  - model: "refmods:cell"
    runtime: python
    gate: {p50: "+10%"}
  - model: "refmods:cell"
    runtime: python
    gate: {p50: "+10%"}
    ab: {reference: true, rounds: 6, slice: 0.05s, baseline: {model: "refmods:ref"}}
"""

# the history's sessions: a machine a little noisy from run to run
HISTORY_SPEEDS = (1.0, 0.97, 1.03, 1.0, 0.98)


def _session(pytester, monkeypatch, speed, factor=1.0):
    monkeypatch.setenv("SPEED", str(speed))
    monkeypatch.setenv("SPIN_FACTOR", str(factor))
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                      "--infer-no-progress", "--infer-baseline", "history")
    runs = sorted((pytester.path / ".inferbench" / "runs").glob("*.json"),
                  key=lambda p: p.stat().st_mtime)
    return r, json.loads(runs[-1].read_text())


def _verdicts(doc) -> dict:
    return {("pair" if e.get("reference") else "alone"): e for e in doc["comparison"]["verdicts"]}


def test_a_reference_pair_tells_a_slower_machine_from_a_slower_model(pytester, monkeypatch):
    monkeypatch.delenv("INFERBENCH_STORE", raising=False)
    pytester.makepyfile(refmods=MODEL)
    pytester.makefile(".yaml", bench_r=SPEC)
    for speed in HISTORY_SPEEDS:
        r, doc = _session(pytester, monkeypatch, speed)
        assert r.ret == 0, r.stdout.str()
    pair = next(x for x in doc["results"] if x.get("ab"))
    assert pair["ab"]["reference"] is True and pair["ab"]["verdict"] is None
    assert pair["ab"]["rounds"] == 6 and pair["ab"]["stopped"] == "reference"
    assert pair["ab"]["baseline"]["changes"] == "model ref"
    # the ratio of a 400 us cell to a 300 us reference, every round
    assert all(1.2 < x < 1.45 for x in pair["ab"]["ratios"]["p50"]), pair["ab"]["ratios"]

    # the machine got 40% slower: the cell alone is called a regression, the pair is not
    r, doc = _session(pytester, monkeypatch, 1.4)
    v = _verdicts(doc)
    assert v["alone"]["verdict"] == "regression", r.stdout.str()
    assert v["pair"]["verdict"] == "no change", r.stdout.str()
    (m,) = v["pair"]["metrics"]
    assert m["reference"] == "model ref" and m["history_runs"] == 5
    assert 0.93 < m["ratio"] < 1.07
    r.stdout.fnmatch_lines(["*noise learnt from * earlier runs (its ratio to the reference, "
                            "model ref, measured alongside)*the cell alone: p50 x1.[345]* "
                            "against its own history, and the reference moved with it: the "
                            "machine or the runtime changed, which the ratio does not judge)"])
    assert 1.3 < m["alone"] < 1.5

    # the model got 30% slower on a machine as fast as the history's: both are regressions,
    # and the pair's ratio moved by the model's share
    r, doc = _session(pytester, monkeypatch, 1.0, factor=1.3)
    assert r.ret == 1, r.stdout.str()
    v = _verdicts(doc)
    assert v["pair"]["verdict"] == "regression", r.stdout.str()
    assert 1.2 < v["pair"]["metrics"][0]["ratio"] < 1.4
    assert "the reference moved with it" not in r.stdout.str()
    r.stdout.fnmatch_lines(["REGRESSION [[]history[]] bench_r.yaml::cell*"])


def test_a_reference_pair_alone_is_a_series_of_its_own(pytester, monkeypatch):
    """Without the plain cell beside it, the pair still finds its earlier runs (its own
    series in the store), and a slower machine is no regression."""
    monkeypatch.delenv("INFERBENCH_STORE", raising=False)
    pytester.makepyfile(refmods=MODEL)
    alone = SPEC.split("  - model")[0] + "  - model" + SPEC.split("  - model")[2]
    pytester.makefile(".yaml", bench_r=alone.replace("rounds: 6", "rounds: 3"))
    for speed in HISTORY_SPEEDS:
        _session(pytester, monkeypatch, speed)
    r, doc = _session(pytester, monkeypatch, 1.4)
    (entry,) = doc["comparison"]["verdicts"]
    assert entry["reference"] == "model ref" and entry["verdict"] == "no change", \
        r.stdout.str()
    assert entry["metrics"][0]["history_runs"] == 5


def test_a_reference_pair_stays_in_the_session_process_and_is_not_stored_compared(
        pytester, monkeypatch):
    pytester.makepyfile(refmods=MODEL)
    pytester.makefile(".yaml", bench_r=SPEC.replace("rounds: 6", "rounds: 3")
                      + "    processes: 2\n")
    bad = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html")
    assert bad.ret == 4
    bad.stderr.fnmatch_lines(["*`processes` on a reference pair (ab.reference) would put the "
                              "reference in another process*"])

    pytester.makefile(".yaml", bench_r=SPEC.replace("rounds: 6", "rounds: 3"))
    saved = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                          "--infer-no-progress", "--infer-store", "none",
                                          "--infer-processes", "2", "--infer-save", "s")
    assert saved.ret == 0, saved.stdout.str()
    doc = json.loads((pytester.path / ".inferbench" / "baselines" / "s.json").read_text())
    pair = [x for x in doc["results"] if x.get("ab")]
    assert len(pair) == 1 and not pair[0]["ab"]["pairs"]     # one pair, in the session
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html",
                                          "--infer-no-progress", "--infer-store", "none",
                                          "--infer-baseline", "s")
    again.stdout.fnmatch_lines(["not compared: bench_r.yaml::cell*: a reference pair "
                                "(ab.reference: model ref): its ratio is judged "
                                "against its own earlier runs (--infer-baseline history)"])


def test_a_reference_pair_must_share_the_cell_s_process(pytester):
    pytester.makepyfile(refmods=MODEL)
    pytester.makefile(".yaml", bench_r=SPEC.replace(
        'baseline: {model: "refmods:ref"}', 'baseline: {model: "refmods:ref", serving: http}'))
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-no-html")
    assert r.ret != 0
    out = r.stdout.str() + r.stderr.str()
    assert "bench_r.yaml" in out and "a reference (ab.reference) is measured in the cell's own " \
        "process" in out and "Traceback" not in out
