"""Under CI (CI=true) a skip is a failure unless a GPU is what is missing: a green CI must
have run the browser, follower, PostgreSQL, generative and MLServer tests, not skipped them.
Locally skips stay skips. tests/conftest.py imports pytest_configure from here; a GPU test
says so with @pytest.mark.gpu (its skip on a machine without one is expected)."""

from __future__ import annotations

import pytest

from required_parts import ci


class CISkips:
    """Collects the skips that are not a missing GPU; under CI, fails the session on them."""

    def __init__(self):
        self.skips: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report):
        if not report.skipped or hasattr(report, "wasxfail") or "gpu" in report.keywords:
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        self.skips.append((report.nodeid, reason))

    def pytest_sessionfinish(self, session, exitstatus):
        if ci() and self.skips and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not (ci() and self.skips):
            return
        terminalreporter.section("skips fail under CI (only a missing GPU may skip)", red=True)
        for nodeid, reason in self.skips:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
        terminalreporter.line(
            f"{len(self.skips)} test(s) skipped under CI=true: install the missing part "
            f"(`python tests/required_parts.py` lists them), or mark a GPU-only test "
            f"@pytest.mark.gpu", red=True)


def pytest_configure(config):
    config.pluginmanager.register(CISkips(), "inferbench-ci-skips")
