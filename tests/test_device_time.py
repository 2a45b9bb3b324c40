"""Device time (measure/device_timer.py) and the cuda_graphs option, on the CPU: the timer's
sampling, reset and arithmetic with fake events on a fake device clock, its place in the
engine, the summary's launch-bound note, and the option's spec and CPU-side refusal. The CUDA
paths themselves are in test_gpu.py."""

import textwrap

import pytest

from pytest_inferbench.measure import device_timer
from pytest_inferbench.measure.device_timer import DeviceTimer, Unavailable
from pytest_inferbench.core.result import Latency, Percentile, Result, Stop
from pytest_inferbench.results.summary import _row
from pytest_inferbench.runtimes.base import LoadContext, RuntimeUnavailable


class FakeDevice:
    """A device timeline in ms: kernels run when launched (no queue) unless a hold is on, in
    which case launches queue behind it and start when it ends."""

    def __init__(self, kernel_ms=2.0, launch_gap_ms=0.0, enqueue_ms=0.0):
        self.now = 0.0              # device clock, ms
        self.kernel_ms = kernel_ms
        self.launch_gap_ms = launch_gap_ms
        self.enqueue_ms = enqueue_ms    # host time to launch one query
        self.hold_until = None
        self.queued_end = None
        self.syncs = 0
        self.calls = 0

    def launch(self):
        """One query, launched by the host: unheld, the device idles in the launch gaps."""
        self.calls += 1
        if self.hold_until is not None and self.enqueue_ms < self.hold_until - self.now:
            # the whole query is queued before the hold ends: kernels back to back after it
            self.queued_end = self.hold_until + self.kernel_ms
        else:
            self.queued_end = None
            self.now += self.launch_gap_ms + self.kernel_ms
        return "out"

    def hold(self, ms):
        self.hold_until = self.now + ms

    def sync(self):
        self.syncs += 1
        if self.queued_end is not None:
            self.now = self.queued_end
        self.hold_until = self.queued_end = None

    def event(self):
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, device):
        self.device = device
        self.t = None
        self.held = False

    def record(self, stream=None):
        d = self.device
        if d.queued_end is not None:        # after a query queued behind a hold
            self.t = d.queued_end
        elif d.hold_until is not None:      # behind a hold: reached when it ends
            self.t, self.held = d.hold_until, True
        else:
            self.t = d.now

    def query(self):
        """Done? A start recorded behind a hold is still pending while the host queues."""
        return not (self.held and self.device.queued_end is not None)

    def elapsed_time(self, other):
        return other.t - self.t


def timer_for(dev, every=10, **kw):
    return DeviceTimer(dev.launch, dev.sync, event=dev.event, every=every, hold=dev.hold, **kw)


def test_one_query_in_ten_is_sampled_and_reset_drops_the_warmup():
    dev = FakeDevice(kernel_ms=2.0)
    timer = timer_for(dev)
    for _ in range(37):             # warm-up: samples dropped by reset
        assert timer.fn() == "out"
    timer.reset()
    for _ in range(100):
        timer.fn()
    assert dev.syncs == 137          # every query synchronised, sampled or not
    out = timer.collect(queries=100, window_s=0.25, scenario="offline")
    assert out["available"] and out["every"] == 10 and out["sampled"] == 10
    assert out["span_ms"] == {"mean": 2.0, "p50": 2.0, "p99": 2.0}
    assert out["overlapped"] is False


def test_sampling_with_every_1_and_3():
    for every, calls, want in ((1, 7, 7), (3, 30, 10), (3, 31, 10), (3, 32, 10), (3, 33, 11)):
        dev = FakeDevice()
        timer = timer_for(dev, every=every)
        timer.reset()
        for _ in range(calls):
            timer.fn()
        assert timer.collect()["sampled"] == want, (every, calls)
    with pytest.raises(ValueError):
        DeviceTimer(lambda: None, lambda: None, event=object, every=0)


def test_busy_share_from_probed_device_time_marks_a_launch_bound_cell():
    # 1 ms of kernels a query, launched with 3 ms of host gaps: spans ~4 ms, device 1 ms
    dev = FakeDevice(kernel_ms=1.0, launch_gap_ms=3.0, enqueue_ms=3.0)
    timer = timer_for(dev)
    timer.reset()
    for _ in range(200):
        timer.fn()
    out = timer.collect(queries=200, window_s=200 * 4.2e-3, scenario="single_stream")
    assert out["span_ms"]["mean"] == 4.0          # the span includes the launch gaps
    assert out["device_ms"]["mean"] == 1.0 and out["probes"] == device_timer.PROBES
    assert out["busy_share"] == pytest.approx(1.0 * 200 / (200 * 4.2), abs=1e-4)
    assert out["launch_bound"] is True
    assert out["busy_share_basis"] == "device_ms.mean x queries / duration_s"


def test_device_bound_cell_is_not_launch_bound():
    dev = FakeDevice(kernel_ms=4.0, launch_gap_ms=0.0, enqueue_ms=0.5)
    timer = timer_for(dev)
    timer.reset()
    for _ in range(50):
        timer.fn()
    out = timer.collect(queries=50, window_s=50 * 4.1e-3, scenario="offline")
    assert out["busy_share"] == pytest.approx(4.0 / 4.1, abs=1e-3)
    assert out["launch_bound"] is False


def test_a_short_hold_is_retried_longer_and_open_loop_is_not_judged():
    # host needs 30 ms to launch a query; the hint (sampled wall) is ~0 on the fake clock,
    # so the first hold (1 ms) is too short: 4 ms, 16 ms, then 64 ms holds the query
    dev = FakeDevice(kernel_ms=1.0, launch_gap_ms=0.0, enqueue_ms=30.0)
    timer = timer_for(dev, probes=2)
    timer.reset()
    for _ in range(20):
        timer.fn()
    out = timer.collect(queries=20, window_s=0.1, scenario="server")
    assert out["device_ms"]["mean"] == 1.0 and out["probes"] == 2
    assert out["hold_ms"] == 64.0
    assert out["launch_bound"] is None and "open-loop" in out["launch_bound_note"]


def test_a_query_that_never_queues_gives_no_device_time():
    dev = FakeDevice(kernel_ms=1.0, enqueue_ms=1e9)
    timer = timer_for(dev, probes=3)
    out = timer.collect(queries=10, window_s=0.1, scenario="offline")
    assert out["device_ms"] is None and "did not finish launching" in out["device_reason"]
    assert out["busy_share"] is None and out["launch_bound"] is None
    # no way to hold the stream: spans only
    plain = DeviceTimer(dev.launch, dev.sync, event=dev.event, hold_unavailable="no _sleep")
    assert plain.collect(10, 0.1)["device_reason"] == "no _sleep"


def test_launch_that_synchronises_is_not_synchronised_again():
    dev = FakeDevice()
    timer = DeviceTimer(dev.launch, dev.sync, event=dev.event, every=5, launch_syncs=True)
    for _ in range(10):
        timer.fn()
    assert dev.syncs == 0 and timer.collect()["sampled"] == 2


def test_a_failing_query_records_no_sample():
    dev = FakeDevice()

    def boom():
        raise RuntimeError("x")
    timer = DeviceTimer(boom, dev.sync, event=dev.event, every=1)
    with pytest.raises(RuntimeError):
        timer.fn()
    assert timer.collect()["sampled"] == 0


def test_unavailable_says_why():
    u = Unavailable("no events")
    u.reset()
    assert u.collect(5, 1.0, "offline") == {"available": False, "reason": "no events"}


def test_engine_resets_after_warmup_and_stores_device_time():
    from pytest_inferbench.workload.engine import measure_callable
    from pytest_inferbench.spec import Settings
    dev = FakeDevice(kernel_ms=1.0, launch_gap_ms=3.0, enqueue_ms=3.0)
    timer = timer_for(dev)
    settings = Settings(warmup=25, min_duration=0.01, max_duration=0.05, min_queries=5)
    result = measure_callable(timer.fn, settings, "offline", timer=timer)
    d = result.device_time
    n = result.latency_ms.n
    assert d["available"] and n >= 5
    # only the window's queries are sampled: calls 26..25+n, every tenth
    assert d["sampled"] == (25 + n) // 10 - 25 // 10
    assert d["busy_share"] == pytest.approx(1.0 * n / (1e3 * result.duration_s), rel=1e-3)
    assert result.to_json()["device_time"]["every"] == 10


def _passed(device_time):
    return Result(id="s.yaml::resnet50[torch-cuda-fp16-bs32-offline]", latency_ms=Latency(
        n=100, mean=5.0, percentiles={"p50": Percentile(value=4.5), "p99": Percentile(value=6)}),
        stop=Stop(reason="ci_converged", ci_half_width_rel=0.01), device_time=device_time)


def test_summary_says_launch_bound():
    row = _row("resnet50[torch-cuda-fp16-bs32-offline]",
               _passed({"available": True, "busy_share": 0.3412, "launch_bound": True}))
    assert row["stop"] == "ci_converged ±1.0% launch-bound (device busy 34%)"
    for quiet in (None, {"available": False, "reason": "x"},
                  {"available": True, "busy_share": 0.9, "launch_bound": False},
                  {"available": True, "busy_share": 0.2, "launch_bound": None}):
        assert "launch-bound" not in _row("x", _passed(quiet))["stop"]


def test_cuda_graphs_option_in_the_id_and_only_for_torch_and_torchscript(tmp_path):
    from pytest_inferbench.core.errors import SpecError
    from pytest_inferbench.spec import load_spec
    spec = tmp_path / "bench_g.yaml"
    spec.write_text(textwrap.dedent("""
        name: g
        benchmarks:
          - model: resnet-tiny
            runtime: [torch, {name: torch, cuda_graphs: true},
                      {name: torchscript, cuda_graphs: true, include_copies: true}]
            device: cuda
            precision: fp16
            batch_size: 8
        """))
    cells = load_spec(spec)
    assert [c.id for c in cells] == [
        "resnet-tiny[torch-cuda-fp16-bs8-offline]",
        "resnet-tiny[torch(graphs)-cuda-fp16-bs8-offline]",
        "resnet-tiny[torchscript(copies,graphs)-cuda-fp16-bs8-offline]"]
    assert cells[1].runtime_options == {"cuda_graphs": True}
    bad = tmp_path / "bench_bad.yaml"
    for runtime in ("torch_compile", "onnxruntime"):
        bad.write_text(f"name: b\nbenchmarks:\n  - model: resnet-tiny\n    device: cuda\n"
                       f"    runtime: {{name: {runtime}, cuda_graphs: true}}\n")
        with pytest.raises(SpecError, match="option 'cuda_graphs' does not apply"):
            load_spec(bad)
    with pytest.raises(SpecError, match="reduce-overhead"):
        bad.write_text("name: b\nbenchmarks:\n  - model: resnet-tiny\n    device: cuda\n"
                       "    runtime: {name: torch_compile, cuda_graphs: true}\n")
        load_spec(bad)


@pytest.mark.parametrize("runner", ["torch_eager:TorchRunner", "torchscript:TorchScriptRunner"])
def test_cuda_graphs_on_cpu_is_refused_before_anything_loads(runner):
    import importlib
    module, _, name = runner.partition(":")
    cls = getattr(importlib.import_module(f"pytest_inferbench.runtimes.{module}"), name)
    with pytest.raises(RuntimeUnavailable, match="cuda_graphs needs a CUDA device, not cpu"):
        cls().load(None, "cpu", "fp32", LoadContext(cache=None, options={"cuda_graphs": True}))
