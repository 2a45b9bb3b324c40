"""The two sides of a paired A/B cell: what each side is (in this process, behind a server,
or in another interpreter) and how it runs one slice of load.

Every side offers the same small interface, so the paired loop (run/paired.py) never asks
what is behind it:
- `warm(warmup)`, `close()`, `info()`, `batch_size`, `errors` (an ErrorLog of failed queries);
- `run(seconds, out)`: closed loop (the engine's: workload/closed_loop.py), queries back to
  back for `seconds`, each latency (ns) appended to out, failed queries counted in `errors`;
  returns the busy ns;
- `sut()`: an open-loop system under test (workload/open_loop.py's start/stop protocol),
  started once and reused by every slice (`PersistentSUT`);
- `describe(result)`: the result's model/runtime/serving fields, for the candidate side.
"""

from __future__ import annotations

from array import array

from ..models.check import check_cell
from ..runtimes import runner_class
from ..runtimes.base import LoadContext
from ..serving.launcher import LaunchedServer
from ..workload.closed_loop import run_closed_loop
from ..workload.engine import warm_up
from ..workload.failures import ErrorLog
from ..workload.open_loop import InProcessSUT
from .inprocess import threads_for
from .served import reach_endpoint, require_serving, served_inputs


def slice_settings(settings, seconds: float):
    """A paired sub-slice through the engine's closed loop: exactly `seconds`, no warm-up,
    no early stop but the cell's error budget (a side over it fails the cell anyway)."""
    return settings.model_copy(update={"warmup": 0, "min_duration": seconds,
                                       "max_duration": seconds, "max_queries": None})


class PersistentSUT:
    """An open-loop system under test started once and handed to many slices: each slice's
    `start(complete)` gets its own query numbering, and a straggler of an earlier slice (one
    still running when its slice gave up waiting) is dropped instead of landing in a later
    slice's arrays. Starting the real one per slice would open connections and threads inside
    the other side's pauses, and warm-up queries with them."""

    _SPAN = 1 << 40

    def __init__(self, make_sut):
        self._make = make_sut
        self._sut = None
        self._issue = None
        self._current = (0, None)       # (base, complete): swapped as one object

    def _dispatch(self, g, error=None, sent_ns=None):
        base, complete = self._current
        if complete is None or g < base:
            return
        if sent_ns is not None:          # the client's write time, for the send-lag rule
            complete(g - base, error, sent_ns=sent_ns)
        elif error is None:
            complete(g - base)
        else:
            complete(g - base, error)

    def start(self, complete):
        if self._sut is None:
            self._sut = self._make()
            self._issue = self._sut.start(self._dispatch)
        base = self._current[0] + self._SPAN
        self._current = (base, complete)
        issue = self._issue
        return lambda i: issue(base + i)

    def stop(self) -> None:
        self._current = (self._current[0], None)

    def close(self) -> None:
        if self._sut is not None:
            sut, self._sut = self._sut, None
            sut.stop()


class _CallableSide:
    """What both local sides share: a blocking query callable `fn` and an ErrorLog."""
    fn = None
    cell = None
    errors: ErrorLog
    _slices: dict

    def __init__(self):
        self._slices = {}         # sub-slice length -> its settings (built once)

    def warm(self, warmup) -> None:
        warm_up(self.fn, warmup)

    def run(self, seconds: float, out: array) -> int:
        """Queries back to back for `seconds` (the engine's closed loop); latencies (ns) of
        the successful ones appended to out, failures counted; returns the busy ns."""
        settings = self._slices.get(seconds)
        if settings is None:
            settings = self._slices[seconds] = slice_settings(self.cell.settings, seconds)
        samples = run_closed_loop(self.fn, settings, self.cell.workload.scenario_def.target)
        out.extend(samples.latencies_ns.tolist())
        self.errors.merge(samples.errors)
        return samples.busy_ns


class LocalSide(_CallableSide):
    """A cell's runner loaded in this process, with its prepared query callable."""

    def __init__(self, cell, cache):
        super().__init__()
        self.cell = cell
        self.errors = ErrorLog()
        self.runner = runner_class(cell.runtime)()
        threads, self.threads_note = threads_for(cell)
        self.context = LoadContext(cache=cache, seed=cell.settings.seed,
                                   options=cell.runtime_options, threads=threads)
        self._sut = None
        try:
            self.runner.load(cell.model, cell.device, cell.precision, self.context)
            self.check = check_cell(cell, self.runner, self.context, cache.root)
            inputs = self.context.signature.generate(cell.batch_size, seed=cell.settings.seed)
            self.fn = self.runner.prepare(inputs)
            self.fn()               # lazy initialisation, outside any accounting
            self.runner.synchronize()
        except BaseException:
            self.runner.close()
            raise
        self.batch_size = cell.batch_size

    def sut(self) -> PersistentSUT:
        if self._sut is None:
            self._sut = PersistentSUT(lambda: InProcessSUT(
                self.fn, self.cell.serving.instances, getattr(self.runner, "enter_thread", None)))
        return self._sut

    def info(self) -> dict:
        cell = self.cell
        return {"model": cell.model_label, "runtime": self.runner.info(),
                "serving": cell.serving.label(),
                "model_info": {"label": cell.model_label, **self.context.model_info,
                               "check": self.check},
                "process": "in-process"}

    def describe(self, result) -> None:
        cell = self.cell
        result.runtime = self.runner.info()
        if self.threads_note:
            result.runtime["threads_note"] = self.threads_note
        result.model = {"label": cell.model_label, **self.context.model_info,
                        "check": self.check,
                        "inputs": {t.name: {"shape": [cell.batch_size, *t.shape],
                                            "dtype": t.dtype}
                                   for t in self.context.signature.inputs}}

    def close(self) -> None:
        if self._sut is not None:
            self._sut.close()
        self.runner.close()


class ServedSide(_CallableSide):
    """A cell behind a server: one the harness launches for this side (Triton, FastAPI), or
    an existing endpoint. Both sides' servers stay up for the whole pair, idle while the other
    side runs, on the same server CPUs (the generator keeps to its own: see `client_cpus`)."""

    def __init__(self, cell, cache):
        super().__init__()
        self.cell = cell
        self.errors = ErrorLog()
        self.batch_size = cell.batch_size
        self.server = None
        self._sut = None
        require_serving(cell)
        if cell.serving.system == "endpoint":
            self.endpoint = reach_endpoint(cell)
        else:
            server = LaunchedServer(cell, cache.root)
            server.__enter__()
            self.server = server
            self.endpoint = server.endpoint(cell.workload.timeout)
        try:
            self.inputs, self.check = served_inputs(cell, cache, self.endpoint)
            self.fn = self.endpoint.blocking_fn(self.inputs)
            self.fn()
        except BaseException:
            self.close()
            raise

    @property
    def client_cpus(self):
        return (self.server.affinity or {}).get("client") if self.server else None

    def sut(self) -> PersistentSUT:
        if self._sut is None:
            self._sut = PersistentSUT(lambda: self.endpoint.async_sut(self.inputs))
        return self._sut

    def info(self) -> dict:
        cell = self.cell
        return {"model": cell.model_label, "serving": cell.serving.label(),
                "url": self.endpoint.url,
                "launch_s": round(self.server.launch_s, 3) if self.server and
                self.server.launch_s is not None else None,
                "model_info": {"label": cell.model_label, "check": self.check},
                "process": "server"}

    def describe(self, result) -> None:
        cell = self.cell
        result.serving = {"system": cell.serving.system, "protocol": cell.serving.protocol,
                          "url": self.endpoint.url, "reused": False,
                          "launch_s": self.info()["launch_s"],
                          "cpu_affinity": self.server.affinity if self.server else None}
        result.model = {"label": cell.model_label, "check": self.check,
                        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                   for k, v in self.inputs.items()},
                        "inputs_source": cell.serving.data or "generated"}
        result.runtime = {"name": cell.runtime if cell.model is not None else None,
                          "served_by": cell.serving.label()}

    def close(self) -> None:
        if self._sut is not None:
            self._sut.close()
        if getattr(self, "fn", None) is not None:
            self.fn.close()
        if self.server is not None:
            server, self.server = self.server, None
            server.__exit__(None, None, None)
