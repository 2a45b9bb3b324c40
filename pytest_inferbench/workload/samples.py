"""What a load generator hands the engine: the system under test it drives and the Samples it
measured. Plain data, shared by every scenario's generator (workload/engine.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .failures import ErrorLog

Progress = Callable[[float, int, float | None], None]   # (elapsed s, queries, current p99 ms)


@dataclass
class SystemUnderTest:
    """What a scenario drives. `call` is one blocking query (closed loop); `make_async()`
    builds a fresh asynchronous SUT for open loop (workload/open_loop.py says what one must
    do); `thread_init` runs first in every thread a generator starts to call `call`
    (thread-local runtime state such as torch's inference mode)."""
    call: Callable[[], object]
    make_async: Callable[[], Any]
    thread_init: Callable[[], None] | None = None


@dataclass
class Samples:
    """What a scenario measured: per-query start/end clock readings in ns (warm-up excluded)."""
    starts_ns: np.ndarray
    ends_ns: np.ndarray
    busy_ns: int                 # measured window minus the time the harness spent checking
    wall_ns: int
    stop_reason: str
    target_percentile: float
    ci_half_width_rel: float
    warmup_queries: int = 0
    warmup_s: float = 0.0
    extra: dict = field(default_factory=dict)
    errors: ErrorLog = field(default_factory=ErrorLog)
    sent_ns: np.ndarray | None = None    # open loop: actual sends of the answered queries

    @property
    def latencies_ns(self) -> np.ndarray:
        return self.ends_ns - self.starts_ns
