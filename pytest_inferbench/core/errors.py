"""User-facing errors: each one names the file, the line, the field and what was expected."""

from __future__ import annotations

import difflib
from pathlib import Path


class SpecError(Exception):
    """A problem with a spec or job file; rendered as one clear message, never a traceback."""

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


def did_you_mean(word: str, choices) -> str:
    """A ' (did you mean X?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_field_path(path) -> str:
    """('benchmarks', 0, 'batch_size') -> 'benchmarks[0].batch_size'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class RuntimeUnavailable(Exception):
    """This cell cannot run on this machine; the message says what is missing and how to get it."""


class CellStepError(RuntimeError):
    """A step of a cell failed: one clean message (the step, the cause) and what the step had
    recorded (conversions done) so far."""

    def __init__(self, step: str, exc: BaseException, recorded: dict | None = None):
        self.cause = exc
        self.recorded = recorded or {}
        text = str(exc).strip() or type(exc).__name__
        if not isinstance(exc, ValueError):     # our own messages are ValueErrors
            text = f"{type(exc).__name__}: {text}"
        super().__init__(f"{step}: {text}")
