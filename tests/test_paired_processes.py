"""Paired mode across fresh processes (`processes: P` on an `ab` cell): each pair of processes
runs rounds of both sides, and the pairs' ratios are judged. A controlled system whose every
process runs at its own known speed shows that a pair measured once per side (a baseline in
another interpreter) calls an identical pair a change, and that pairs of processes do not,
while still catching a real slowdown; each pair's ratio is the known one."""

import json
import math
import sys

import pytest
from spin_models import SPIN

from pytest_inferbench.spec import load_spec
from pytest_inferbench.schedule.runs import paired_processes

# Every process runs at a known speed, from its pair (INFERBENCH_PROCESS "k/N", set by the
# harness) and its side: the baseline loads `base`, the candidate `cand` (the same work), so
# the k-th pair's true ratio is RATIOS[k - 1] however the two processes happen to start.
RATIOS = [1.12, 0.9, 1.05]
MODEL = SPIN + f'''
RATIOS = {RATIOS!r}

def _k():
    return int(os.environ.get("INFERBENCH_PROCESS", "1/1").split("/")[0])

def base():
    return Spin(1000), {{"x": [4]}}

def cand():
    return Spin(1000 * RATIOS[_k() - 1]), {{"x": [4]}}

def cand_2x():
    return Spin(2000 * RATIOS[_k() - 1]), {{"x": [4]}}
'''

FAST = "warmup: 3, min_duration: 0.1s, max_duration: 0.3s, min_queries: 20"


def _run(pytester, name: str, entries: str) -> dict:
    """Run a spec of paired entries; each cell's `ab` section by its model."""
    pytester.makefile(".yaml", **{f"bench_{name}": f"""
name: {name}
defaults: {{{FAST}}}
benchmarks:
{entries}
"""})
    pytester.runpytest_subprocess(f"bench_{name}.yaml", "-p", "no:cacheprovider",
                                  "--infer-no-html", "--infer-no-progress", "--infer-store",
                                  "none")
    run = max((pytester.path / ".inferbench" / "runs").glob("*.json"),
              key=lambda p: p.stat().st_mtime)
    return {r["model"]["label"].split(":")[-1]: r["ab"]
            for r in json.loads(run.read_text())["results"]}


PAIRS = """
  - model: "offsetmods:{model}"
    runtime: python
    gate: {{p50: "+5%"}}
    processes: 3
    ab: {{rounds: 3, slice: 0.05s, max_processes: 3, baseline: {{model: "offsetmods:base"}}}}
"""


def test_pairs_of_processes_judge_the_process_effect_that_one_pair_calls_a_change(pytester):
    pytester.makepyfile(offsetmods=MODEL)
    # one process per side (the baseline in another interpreter, the candidate here): the
    # processes' speeds differ by 12%, and rounds inside one pair cannot see that
    (once,) = _run(pytester, "once", f"""
  - model: "offsetmods:cand"
    runtime: python
    gate: {{p50: "+5%"}}
    ab: {{rounds: 4, max_rounds: 4, slice: 0.05s,
         baseline: {{model: "offsetmods:base", python: {sys.executable}}}}}
""").values()
    assert once["unit"] == "round" and once["verdict"] == "regression", once["metrics"]
    # three pairs of fresh processes: the same work on both sides is not called a change,
    # and a real 2x slowdown under the same process offsets is caught
    got = _run(pytester, "pairs", PAIRS.format(model="cand") + PAIRS.format(model="cand_2x"))
    pairs, slow = got["cand"], got["cand_2x"]
    assert pairs["unit"] == "process pair" and len(pairs["pairs"]) == 3
    assert len(pairs["ratios"]["p50"]) == 3         # the pairs are judged, not their rounds
    assert "3 process pairs, pair-to-pair sd" in pairs["metrics"][0]["reason"]
    assert pairs["verdict"] == "undetermined", pairs["metrics"]
    assert slow["verdict"] == "regression", slow["metrics"]
    _each_pair_ratio_is_the_known_one(pairs, RATIOS)
    _each_pair_ratio_is_the_known_one(slow, [2 * r for r in RATIOS])
    # the noise split puts the spread between the pairs, as the known offsets say
    truth = _sd([math.log(r) for r in RATIOS])
    between = pairs["noise"]["p50"]["between_sd"]
    assert abs(between - truth) <= 0.2 * truth, (between, truth)
    assert pairs["noise"]["p50"]["within_sd"] < 0.2 * truth


def _each_pair_ratio_is_the_known_one(ab, truths):
    pids = [p["pids"] for p in ab["pairs"]]
    assert len({pid for pair in pids for pid in pair.values()}) == 2 * len(pids), pids
    for pair, truth in zip(ab["pairs"], truths):
        assert abs(pair["ratios"]["p50"] / truth - 1) < 0.06, (pair, truth)


def _sd(x):
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))


@pytest.mark.parametrize("entry, message", [
    ("processes: 3\n    workload: {scenario: server, rate: 100}\n    ab: {}",
     "takes an in-process closed-loop cell"),
    ("processes: 1\n    ab: {}", "`processes` of at least 2"),
    ("processes: 4\n    ab: {max_processes: 3}", "max_processes (3) is below processes (4)"),
    ("ab: {max_processes: 3}", "give `processes` too"),
])
def test_processes_on_a_paired_cell_that_cannot_take_them(tmp_path, entry, message):
    spec = tmp_path / "bench_x.yaml"
    spec.write_text(f"""
name: x
benchmarks:
  - model: {{family: mlp, layers: 1, hidden: 8}}
    runtime: onnxruntime
    {entry}
""")
    (cell,) = load_spec(spec)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        paired_processes(cell, None)


def test_infer_processes_reaches_the_paired_cells_it_fits(tmp_path):
    spec = tmp_path / "bench_y.yaml"
    spec.write_text("""
name: y
benchmarks:
  - model: {family: mlp, layers: 1, hidden: 8}
    runtime: onnxruntime
    ab: {}
  - model: {family: mlp, layers: 1, hidden: 8}
    runtime: onnxruntime
    workload: {scenario: server, rate: 50}
    ab: {}
""")
    closed, open_loop = load_spec(spec)
    assert paired_processes(closed, 3) == 3 and paired_processes(closed, None) is None
    assert paired_processes(closed, 1) is None        # one process: the session's, rounds
    assert paired_processes(open_loop, 3) is None     # stays in the session
