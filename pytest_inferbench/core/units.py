"""Durations as users write them ("500ms", "2s", "1m") and as the engine uses them (seconds)."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0,
          "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


def parse_duration(value) -> float:
    """Seconds from '500ms', '2s', '1.5m', or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '500ms' or '2s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match or (match.group(2) and match.group(2) not in _UNITS):
            raise ValueError(f"expected a duration such as '500ms' or '2s', got '{value}'")
        seconds = float(match.group(1)) * _UNITS.get(match.group(2) or "s")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds
