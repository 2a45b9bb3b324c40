"""Failed queries are results: every scenario counts them, by kind, apart from timeouts.

A load generator records each failed query here (exception type and message; the first few
distinct kinds are kept with their counts). Recording happens only on the failure path, so a
query that succeeds pays nothing for it. The engine then judges the cell: it fails when the
share of failed queries (errors plus timeouts) is over `max_error_rate`, or when no query
succeeded at all.
"""

from __future__ import annotations

import re
import threading

MAX_KINDS = 5          # distinct (type, message) pairs kept; the rest are counted as "other"
_MAX_MESSAGE = 300


_NUMBER = re.compile(r"\d+")


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or repr(exc)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


def is_timeout(exc: BaseException) -> bool:
    """Client libraries signal a deadline in different ways: TimeoutError (asyncio, socket),
    gevent's Timeout, gRPC's DEADLINE_EXCEEDED inside tritonclient's exception."""
    if isinstance(exc, TimeoutError):
        return True
    name = type(exc).__name__.lower()
    text = str(exc).lower()
    return "timeout" in name or "deadline exceeded" in text or "timed out" in text


class ErrorLog:
    """Thread-safe tally of failed queries."""

    def __init__(self):
        self.errors = 0
        self.timeouts = 0
        self.other = 0                       # errors of kinds beyond the first MAX_KINDS
        self._kinds: dict[tuple[str, str], list] = {}   # (type, pattern) -> [message, count]
        self._lock = threading.Lock()

    def record(self, exc: BaseException | str) -> None:
        if isinstance(exc, BaseException) and is_timeout(exc):
            self.timeout()
            return
        kind, message = (type(exc).__name__, _message(exc)) if isinstance(exc, BaseException) \
            else ("Error", str(exc)[:_MAX_MESSAGE])
        # messages that differ only in numbers (ids, counters, sizes) are one kind
        key = (kind, _NUMBER.sub("#", message))
        with self._lock:
            self.errors += 1
            if key in self._kinds:
                self._kinds[key][1] += 1
            elif len(self._kinds) < MAX_KINDS:
                self._kinds[key] = [message, 1]     # the first message of the kind, verbatim
            else:
                self.other += 1

    def timeout(self, count: int = 1) -> None:
        with self._lock:
            self.timeouts += count

    def merge(self, other: "ErrorLog") -> None:
        """Add another log's counts (a run measured in slices keeps one log per side)."""
        with self._lock:
            self.errors += other.errors
            self.timeouts += other.timeouts
            self.other += other.other
            for key, (message, count) in other._kinds.items():
                if key in self._kinds:
                    self._kinds[key][1] += count
                elif len(self._kinds) < MAX_KINDS:
                    self._kinds[key] = [message, count]
                else:
                    self.other += count

    def merge_json(self, data: dict) -> None:
        """Add counts sent as `to_json` (from another process)."""
        other = ErrorLog()
        other.errors, other.timeouts = data["errors"], data["timeouts"]
        other.other = data.get("other_kinds", 0)
        for k in data.get("kinds", []):
            other._kinds[(k["type"], _NUMBER.sub("#", k["message"]))] = [k["message"], k["count"]]
        self.merge(other)

    @property
    def failed(self) -> int:
        return self.errors + self.timeouts

    def budget_exceeded(self, succeeded: int, max_error_rate: float) -> bool:
        """Stop early only when the cell is already certain to fail at this moment: any failure
        when no failure is allowed, else at least 100 failures and their share over the limit."""
        failed = self.failed
        if not failed:
            return False
        if max_error_rate <= 0:
            return True
        return failed >= 100 and failed / (failed + succeeded) > max_error_rate

    def first(self) -> str | None:
        """The first error kind as 'Type: message', or a timeout note."""
        if self._kinds:
            (kind, _), (message, _) = next(iter(self._kinds.items()))
            return f"{kind}: {message}"
        if self.timeouts:
            return f"{self.timeouts} queries timed out"
        return None

    def to_json(self, succeeded: int) -> dict:
        attempted = succeeded + self.failed
        return {
            "errors": self.errors,
            "timeouts": self.timeouts,
            "attempted": attempted,
            "error_rate": self.failed / attempted if attempted else 0.0,
            "kinds": [{"type": t, "message": m, "count": c}
                      for (t, _), (m, c) in self._kinds.items()],
            "other_kinds": self.other,
        }


def judge_errors(result, errors, max_error_rate: float) -> None:
    """Record failed queries in the result; fail it when nothing succeeded or too much failed.
    A cell that measured nothing never passes."""
    n = result.latency_ms.n
    result.errors = errors.to_json(n)
    first = errors.first()
    if not n:
        result.status = "failed"
        result.reason = "measured no successful query" + (f"; first error: {first}"
                                                           if first else "")
    elif errors.failed and result.errors["error_rate"] > max_error_rate:
        result.status = "failed"
        result.reason = (f"{first} ({errors.failed} of {result.errors['attempted']} queries "
                         f"failed: {errors.errors} errors, {errors.timeouts} timeouts; "
                         f"{100 * result.errors['error_rate']:.3g}% > max_error_rate "
                         f"{100 * max_error_rate:g}%)")
