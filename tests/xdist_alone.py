"""`pytest tests -n 3`: the tests that judge timing against a neighbour run last, alone.

Most of the suite runs on three xdist workers: the plugin's device leases keep a measured
window apart from every other cell (cells whose figures no test judges share the CPU only with
each other: `SHARE` in conftest.py), and the tests' margins hold beside other workers. The
tests named in `RUN_ALONE` compare a timing against a margin that a neighbour's imports,
servers or reference clients can cross (a TTFT against a reference client, a queue held at a
concurrency cap, a session that must not be HOST BUSY). xdist's own load scheduling hands out
items in collection order, so this scheduler holds those back: the other tests go to every
worker as `--dist load` sends them; once they are done, every worker but one is shut down
and that one runs the held tests, with nothing beside it. Without `-n`, the order is pytest's
own and this module does nothing.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScheduling

# Node-id prefixes of the tests that must run with no other worker beside them, and why.
RUN_ALONE = (
    # TTFT and inter-token latency against a reference client within a few per cent, and
    # queueing behind a concurrency cap (seen failing beside a second worker: +17.5% TTFT)
    "tests/test_generative.py::test_known_timings_match_a_reference_client",
    "tests/test_generative.py::test_queueing_behind_a_concurrency_cap_shows_in_ttft",
    # a client process's TTFT/ITL against a reference client within 8% (beside two other
    # workers a fresh clone's CI once saw ITL +8.3%)
    "tests/test_generative.py::test_a_client_process_keeps_known_timings",
    "tests/test_generative_guidellm.py::test_low_load_ttft_and_itl_match_a_reference_client",
    "tests/test_generative_guidellm.py::test_open_loop_above_the_cap_shows_queueing",
    # a stopping rule that must converge within 5 s on a 1 ms busy-wait (with a third
    # process on the two cores its p90 interval once did not)
    "tests/test_timing.py::test_stop_rules_are_recorded",
    # the open loop's stall detector: every late send of a 1 s window must fall in the
    # stalls the test makes (beside a second worker, 2 of 20 once fell outside them)
    "tests/test_lean_http.py::test_sends_a_stalled_host_made_late_are_told",
    "tests/test_lean_http.py::test_a_stretch_the_issuer_was_not_run_outside_its_polls",
    # a session beside a busy neighbour is HOST BUSY and (rightly) teaches the history nothing
    "tests/test_history.py::test_history_mode_gates_a_slowdown",
    "tests/test_reference_pair.py::test_a_reference_pair_tells_a_slower_machine",
    "tests/test_reference_pair.py::test_a_reference_pair_alone_is",
    # a paired +30% in the open loop (beside two other workers once undetermined at +15%)
    "tests/test_paired.py::test_paired_mode_in_the_open_loop_server_scenario",
    # a monitor's CPU share of a busy process against that process's own CPU time (beside
    # two other workers they once differed by 0.3 cores: the two windows are not one)
    "tests/test_open_loop_truth.py::test_a_local_endpoints_processes_are_the_system_under_test",
)


class AloneLastScheduling(LoadScheduling):
    """`--dist load`, then the `RUN_ALONE` tests on the last worker left."""

    def __init__(self, config, log=None, alone=lambda nodeid: nodeid.startswith(RUN_ALONE)):
        super().__init__(config, log)
        self.alone = alone
        self.held: list[int] = []       # RUN_ALONE tests not yet sent
        self.keeper = None              # the worker that will run them

    def schedule(self) -> None:
        if self.collection is not None or not self._check_nodes_have_same_collection():
            super().schedule()          # a worker added later, or collections that differ
            return
        self.collection = next(iter(self.node2collection.values()))
        self.held = [i for i, nodeid in enumerate(self.collection) if self.alone(nodeid)]
        held = set(self.held)
        self.pending[:] = [i for i in range(len(self.collection)) if i not in held]
        if self.maxschedchunk is None:
            self.maxschedchunk = len(self.collection)
        for node in self.nodes:
            self.check_schedule(node)

    def check_schedule(self, node, duration: float = 0) -> None:
        if self.pending or not self.held:
            super().check_schedule(node, duration)
        else:
            self._release()

    def remove_node(self, node):
        crashed = super().remove_node(node)
        if self.held and not self.pending and self.nodes:
            self._release()
        return crashed

    def _release(self) -> None:
        """Shut down every worker but the busiest; once it is the only one left, send it
        the held tests."""
        if self.keeper not in self.nodes:
            self.keeper = max(self.nodes, key=lambda n: len(self.node2pending[n]))
        for node in self.nodes:
            if node is not self.keeper and not node.shutting_down:
                node.shutdown()
        if self.nodes == [self.keeper]:
            held, self.held = self.held, []
            self.node2pending[self.keeper].extend(held)
            self.keeper.send_runtest_some(held)
            self.keeper.shutdown()

    @property
    def tests_finished(self) -> bool:
        return not self.held and super().tests_finished

    @property
    def has_pending(self) -> bool:
        return bool(self.held) or super().has_pending


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "load":
        return AloneLastScheduling(config, log)
    return None
