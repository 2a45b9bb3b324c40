"""The suite's xdist scheduler (tests/xdist_alone.py): the tests it holds back run after all
the others, on one worker, with nothing beside them; the others use both workers. Under xdist
as root, the tests that judge figures run at normal CPU priority, the others at a lower priority
(tests/worker_priority.py)."""

import json
import os
from pathlib import Path

TESTS = Path(__file__).parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from xdist_alone import AloneLastScheduling
import worker_priority
from worker_priority import pytest_runtest_setup

worker_priority.JUDGE_FIGURES = ("test_suite.py::test_one[alone",)

def pytest_xdist_make_scheduler(config, log):
    return AloneLastScheduling(config, log, alone=lambda nodeid: "alone" in nodeid)
"""

# Twelve ordinary tests with three held ones among them, in collection order; each records
# when it ran and in which worker.
SUITE = """
import json, os, time
import pytest

def _record(name):
    start = time.time()
    time.sleep(0.3)
    with open("ran.jsonl", "a") as out:
        out.write(json.dumps({"name": name, "start": start, "end": time.time(),
                              "worker": os.environ["PYTEST_XDIST_WORKER"],
                              "nice": os.getpriority(os.PRIO_PROCESS, 0)}) + "\\n")

NAMES = [f"alone{i}" if i % 5 == 2 else f"plain{i}" for i in range(15)]

@pytest.mark.parametrize("name", NAMES, ids=NAMES)     # held tests are chosen by node id
def test_one(name):
    _record(name)
"""


def test_held_tests_run_last_alone_on_one_worker_and_the_rest_on_both(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-q")
    result.assert_outcomes(passed=15)
    ran = [json.loads(line) for line in Path(pytester.path, "ran.jsonl").read_text().splitlines()]
    plain = [r for r in ran if r["name"].startswith("plain")]
    held = sorted((r for r in ran if r["name"].startswith("alone")), key=lambda r: r["start"])
    assert len(plain) == 12 and len(held) == 3
    assert {r["worker"] for r in plain} == {"gw0", "gw1"}, "the others ran on one worker only"
    last_plain = max(r["end"] for r in plain)
    assert all(r["start"] >= last_plain for r in held), (
        "a held test ran beside an ordinary one", held, last_plain)
    assert len({r["worker"] for r in held}) == 1
    assert all(a["end"] <= b["start"] for a, b in zip(held, held[1:]))
    if os.geteuid() == 0:          # only root may lower a nice value again
        from worker_priority import BACKGROUND, NORMAL
        assert {r["nice"] for r in plain} == {BACKGROUND} and {r["nice"] for r in held} == \
            {NORMAL} and BACKGROUND > NORMAL, ran


def test_every_file_that_judges_figures_exists():
    from worker_priority import JUDGE_FIGURES
    for prefix in JUDGE_FIGURES:
        assert (TESTS.parent / prefix.partition("::")[0]).is_file(), f"{prefix}: no such file"


def test_every_test_held_back_exists():
    """A renamed test would silently run beside a worker again: each RUN_ALONE prefix names a
    test function in its module."""
    from xdist_alone import RUN_ALONE
    for prefix in RUN_ALONE:
        path, _, name = prefix.partition("::")
        source = (TESTS.parent / path).read_text()
        assert f"\ndef {name}" in source, f"{prefix}: no such test"
