"""Where a GPU cell's time goes: device time beside the wall-clock latency.

Two measurements, taken so that the measured queries pay (almost) nothing for them:

* **span** (inside the window, on a sample): every `every`-th query records a CUDA event on the
  runner's stream before it launches anything and another after its last launch, *before* the
  host synchronises (an event recorded after the synchronisation would be reached by an idle
  device at once and time the host). The span is the device's timeline from the query's start
  to the end of its last kernel. It includes the gaps in which the device waited for the host to
  launch the next kernel, so it stays close to the wall-clock latency even when the device is
  idle most of the time: it says how much host time lies *outside* the device's work (Python
  before the first launch, waking from the synchronisation), not how busy the device was.
  A query that is not sampled pays one step of an `itertools.count` (atomic under the GIL, so
  open-loop worker threads need no lock) and a modulo; the sampled path takes a lock only to
  append its events. Elapsed times are read in `collect()`, after the window.
* **device time** (after the window, `probes` queries): the query is queued whole before the
  device may start it — a sleep kernel holds the stream while the host launches the query — and
  events on either side time its kernels back to back, without launch gaps. A probe counts
  only if its start event was still pending when the host had finished launching (else the hold
  was too short: it is retried with a four times longer one). This is the device's busy time
  per query; runs without a way to hold the stream report it as unavailable.

busy_share = device_ms.mean x queries measured / window busy time (`duration_s`): the share of
the measured window in which the device computed. For back-to-back closed loops (offline,
single_stream) this is device_ms / mean latency; for concurrency it is the device's
utilisation by the clients. `launch_bound` = busy_share < 0.5, judged only in scenarios that
keep the device fed (offline, single_stream, concurrency): in open-loop scenarios (server,
ramp, capacity) the device also idles for want of queries, so they are not judged (None).

With several threads on one stream (concurrency, instances > 1) a sampled span can include
other queries' kernels that interleave with it; the result then says `"overlapped": true`.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable

import numpy as np

from ..core.scenarios import scenario as scenario_of

EVERY = 10                  # sample one query in this many
PROBES = 5                  # queued queries timed after the window
LAUNCH_BOUND_BELOW = 0.5    # busy share under which a cell is called launch-bound
MAX_HOLD_MS = 250.0
MAX_SAMPLES = 10_000        # events kept per window; later sampled queries run unsampled
MIN_HOLD_MS = 1.0


class DeviceTimer:
    """Wrap a runner's query for device timing.

    launch: zero-argument callable that enqueues one query (its result is the query's result);
    sync: waits for the device; launch_syncs: launch already returns with the work done (it
    copies the outputs to the host), so queries do not call sync again (a sampled span then
    ends after that wait); event: factory of events with record(stream), elapsed_time(other)
    in ms and query() (torch.cuda.Event(enable_timing=True) on CUDA);
    stream: the stream the query runs on, passed to record(); compute: what a probe queues
    (default: launch), e.g. the model on staged inputs without the timed copies; hold(ms):
    enqueue work that keeps the stream busy for about ms milliseconds (None: no probes).
    `fn` is the per-query callable to measure.
    """

    def __init__(self, launch: Callable[[], Any], sync: Callable[[], Any], *,
                 event: Callable[[], Any], stream=None, every: int = EVERY,
                 launch_syncs: bool = False,
                 compute: Callable[[], Any] | None = None,
                 hold: Callable[[float], Any] | None = None, probes: int = PROBES,
                 hold_unavailable: str | None = None):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.launch, self.sync, self.event, self.stream = launch, sync, event, stream
        self.launch_syncs = launch_syncs
        self.every = every
        self.compute = compute or launch
        self.hold, self.probes = hold, probes
        self.hold_unavailable = hold_unavailable
        self._lock = threading.Lock()
        self._samples: list[tuple[Any, Any, int]] = []
        self._threads: set[int] = set()
        self.fn = self._build()

    def _build(self) -> Callable[[], Any]:
        count = itertools.count(1)
        every, launch, sync, sampled = self.every, self.launch, self.sync, self._sampled
        if self.launch_syncs:
            def query():
                if next(count) % every:
                    return launch()
                return sampled()
        else:
            def query():
                if next(count) % every:
                    out = launch()
                    sync()
                    return out
                return sampled()
        return query

    def _sampled(self):
        if len(self._samples) >= MAX_SAMPLES:
            out = self.launch()
            if not self.launch_syncs:
                self.sync()
            return out
        start, end = self.event(), self.event()
        t0 = time.perf_counter_ns()
        start.record(self.stream)
        out = self.launch()
        end.record(self.stream)         # after the last launch, before the synchronisation
        if not self.launch_syncs:
            self.sync()
        wall = time.perf_counter_ns() - t0
        with self._lock:
            self._samples.append((start, end, wall))
            self._threads.add(threading.get_ident())
        return out

    def reset(self) -> None:
        """Forget the samples so far (warm-up): called at the start of the measured window."""
        with self._lock:
            self._samples = []
            self._threads = set()

    def collect(self, queries: int = 0, window_s: float | None = None,
                scenario: str | None = None) -> dict:
        """After the window: the sampled spans, the probed device time, the busy share.
        queries: successful queries in the window; window_s: its busy time (duration_s)."""
        with self._lock:
            samples = list(self._samples)
            threads = len(self._threads)
        try:
            spans = [float(s.elapsed_time(e)) for s, e, _ in samples]
        except Exception as exc:  # noqa: BLE001 - device timing must not fail the cell
            return {"available": False, "reason": f"reading the sampled events failed: "
                                                  f"{type(exc).__name__}: {str(exc)[:200]}"}
        walls = [w / 1e6 for _, _, w in samples]
        out: dict[str, Any] = {"available": True, "every": self.every, "sampled": len(spans),
                               "span_ms": _stats(spans),
                               "span_share": (round(sum(spans) / sum(walls), 4)
                                              if spans and sum(walls) > 0 else None),
                               "overlapped": threads > 1}
        hint = float(np.mean(walls)) if walls else (1e3 * window_s / queries
                                                    if queries and window_s else MIN_HOLD_MS)
        out.update(self._probe(hint))
        device = out.get("device_ms")
        share = None
        if device and queries and window_s:
            share = round(device["mean"] * queries / (1e3 * window_s), 4)
        out["busy_share"] = share
        out["busy_share_basis"] = "device_ms.mean x queries / duration_s"
        if share is None:
            out["launch_bound"] = None
        elif scenario is not None and not scenario_of(scenario).closed_loop:
            out["launch_bound"] = None
            out["launch_bound_note"] = (f"not judged in an open-loop scenario ({scenario}): the "
                                        f"device also idles for want of queries")
        else:
            out["launch_bound"] = share < LAUNCH_BOUND_BELOW
        return out

    def _probe(self, hint_ms: float) -> dict:
        if self.hold is None or self.probes < 1:
            return {"device_ms": None, "device_reason": self.hold_unavailable
                    or "no way to hold the stream while a query is queued"}
        hold_ms = min(max(2.0 * hint_ms, MIN_HOLD_MS), MAX_HOLD_MS)
        times: list[float] = []
        short = 0
        try:
            for _ in range(self.probes + 3):
                if len(times) >= self.probes:
                    break
                self.sync()
                start, end = self.event(), self.event()
                self.hold(hold_ms)
                start.record(self.stream)
                self.compute()
                queued = not start.query()      # still held: the whole query waits behind it
                end.record(self.stream)
                self.sync()
                if queued:
                    times.append(float(start.elapsed_time(end)))
                else:
                    short += 1
                    if hold_ms >= MAX_HOLD_MS:
                        break
                    hold_ms = min(4 * hold_ms, MAX_HOLD_MS)
        except Exception as exc:  # noqa: BLE001 - a probe problem must not fail the cell
            return {"device_ms": None, "device_reason": f"probe failed: {type(exc).__name__}: "
                                                        f"{str(exc)[:200]}"}
        if not times:
            return {"device_ms": None, "probes": 0, "hold_ms": round(hold_ms, 3),
                    "device_reason": f"the host did not finish launching a query within a "
                                     f"{hold_ms:g} ms hold ({short} tries): more launches than "
                                     f"the device's queue holds, or a launch that waits for the "
                                     f"device"}
        return {"device_ms": {"mean": round(float(np.mean(times)), 4),
                              "p50": round(float(np.median(times)), 4),
                              "min": round(min(times), 4), "max": round(max(times), 4)},
                "probes": len(times), "hold_ms": round(hold_ms, 3)}


class Unavailable:
    """A runtime on a GPU without device timing: the result says so and why."""
    fn = None

    def __init__(self, reason: str):
        self.reason = reason

    def reset(self) -> None:
        pass

    def collect(self, queries: int = 0, window_s: float | None = None,
                scenario: str | None = None) -> dict:
        return {"available": False, "reason": self.reason}


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "p50": round(float(np.percentile(a, 50)), 4),
            "p99": round(float(np.percentile(a, 99)), 4)}


def cuda_timer(torch, device, launch, compute=None, launch_syncs: bool = False,
               every: int = EVERY) -> DeviceTimer:
    """A DeviceTimer for a torch runner on `device` (a torch.device of type cuda): events on the
    device's current stream, probes held by torch.cuda._sleep (calibrated once, lazily)."""
    import functools
    stream = torch.cuda.current_stream(device)
    hold, why = cuda_hold(torch, device)
    return DeviceTimer(launch, functools.partial(torch.cuda.synchronize, device),
                       event=lambda: torch.cuda.Event(enable_timing=True), stream=stream,
                       every=every, launch_syncs=launch_syncs, compute=compute, hold=hold,
                       hold_unavailable=why)


def cuda_hold(torch, device):
    """(hold(ms), None), or (None, reason): hold(ms) enqueues a spin kernel of about ms on the
    device's current stream. The cycles per ms are measured once with events (first use, which
    is after the window)."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        return None, f"torch {torch.__version__} has no torch.cuda._sleep to hold the stream"
    state: dict[str, float] = {}

    def hold(ms: float) -> None:
        with torch.cuda.device(device):
            if "cycles_per_ms" not in state:
                a = torch.cuda.Event(enable_timing=True)
                b = torch.cuda.Event(enable_timing=True)
                a.record()
                sleep(1_000_000)
                b.record()
                b.synchronize()
                state["cycles_per_ms"] = 1e6 / max(a.elapsed_time(b), 1e-3)
            sleep(max(1, int(ms * state["cycles_per_ms"])))
    return hold, None
