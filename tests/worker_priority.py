"""Under `-n 3` on two cores: the tests that judge a measured figure run at normal CPU
priority, every other test at nice 10.

A device lease keeps every other cell out of a measured window, but not the other workers'
own work (collecting an inner session, importing torch, starting or stopping a server): with
two neighbours that work can fill both cores (seen: 1.57 cores used by other processes in a
paired cell that then could not call a 2x slowdown). At nice 10 a neighbour sharing a core
with a normal-priority process gets about a tenth of it (CFS weights 110 against 1024), so
the suite still fills the cores while a judged window runs nearly as if alone. A process
inherits its parent's priority, so inner sessions, fresh processes and servers follow their
test. Only root may raise a priority again (CAP_SYS_NICE): elsewhere, and without xdist,
nothing is changed.
"""

from __future__ import annotations

import os

from xdist_alone import RUN_ALONE

# Test files (node-id prefixes) whose tests judge figures measured live: verdicts, ratios,
# capacities, send lag, CPU shares, stopping rules, or cells that must keep up with an
# offered rate (the runtime matrix's ramps and capacity searches at 1,000-2,000/s: at nice 19
# beside two busy workers, one ramp saturated at 1,000/s). They run at normal priority.
JUDGE_FIGURES = RUN_ALONE + (
    "tests/test_config_search.py",
    "tests/test_gate.py",
    "tests/test_generative.py",
    "tests/test_generative_guidellm.py",
    "tests/test_history.py",
    "tests/test_lean_grpc.py",
    "tests/test_lean_http.py",
    "tests/test_lean_stream.py",
    "tests/test_open_loop_truth.py",
    "tests/test_paired.py",
    "tests/test_paired_processes.py",
    "tests/test_processes.py",
    "tests/test_rate_search.py",
    "tests/test_reference_pair.py",
    "tests/test_runtime_matrix.py",
    "tests/test_scenarios.py",
    "tests/test_timing.py",
    "tests/test_workload.py",
)
# Not 19 (weights 15 against 1024): a test starved that hard can wait seconds between two
# steps (one likely did between its warm-up and its window, and MLServer closed its idle
# connection meanwhile; the client now checks such connections: serving/lean_pool.py).
NORMAL, BACKGROUND = 0, 10


def priority_for(nodeid: str) -> int:
    return NORMAL if nodeid.startswith(JUDGE_FIGURES) else BACKGROUND


def pytest_runtest_setup(item) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER") or os.geteuid() != 0:
        return
    # the calling thread's nice value (Linux keeps one per thread): the test runs in it, and
    # what it starts inherits it
    os.setpriority(os.PRIO_PROCESS, 0, priority_for(item.nodeid))
