import textwrap

import pytest

# under CI=true a skip other than a missing GPU fails the session (tests/ci_skips.py)
from ci_skips import pytest_configure  # noqa: F401
# under -n the tests that judge timing against a neighbour run last, alone
from xdist_alone import pytest_xdist_make_scheduler  # noqa: F401
# ... and, on three workers, the tests that judge figures run at a higher CPU priority
from worker_priority import pytest_runtest_setup  # noqa: F401

# pytester's in-process runs drop the modules they import when they end; extension modules
# (numpy, torch, onnxruntime) cannot be imported twice in one process, so import them here first.
import numpy.fft  # noqa: F401
import optuna  # noqa: F401
import onnxruntime  # noqa: F401
import scipy.stats  # noqa: F401
import torch  # noqa: F401
import pytest_inferbench.run.cell  # noqa: F401
import pytest_inferbench.models.artifacts  # noqa: F401
import pytest_inferbench.runtimes.onnxruntime_runner  # noqa: F401
import pytest_inferbench.runtimes.torch_eager  # noqa: F401
import pytest_inferbench.results.summary  # noqa: F401


def _import_lazy_modules():
    """Export and load one tiny model, so every module the exporters load lazily is loaded."""
    import tempfile
    from pathlib import Path

    from pytest_inferbench.models.artifacts import export_onnx, onnx_signature
    from pytest_inferbench.spec.families import MLPSpec
    from pytest_inferbench.models.families import build
    module, signature = build(MLPSpec(layers=1, hidden=4, features=4, classes=2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "m.onnx")
        export_onnx(module, signature, path)
        onnx_signature(str(path))
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


_import_lazy_modules()

# Defaults that keep a measured cell to a fraction of a second in the plugin's own tests.
# No test judges such a cell's figures, so it may share the CPU with other cells that say
# `colocate: true` (those of another xdist worker's test), never with a cell measured for its
# figures, which holds its CPU lease alone: SHARE is that placement, on its own for specs
# whose settings are their own.
SHARE = "placement: {colocate: true}"
FAST = f"warmup: 3, min_duration: 0.05s, max_duration: 0.25s, min_queries: 20, {SHARE}"


def measured_enough(result: dict, min_queries: int = 20) -> bool:
    """min_queries reached, or max_duration came first (a loaded machine)."""
    return result["latency_ms"]["n"] >= min_queries or (
        result["latency_ms"]["n"] > 0 and result["stop"]["reason"] == "max_duration")


@pytest.fixture
def write(tmp_path):
    """write(name, yaml_text) -> path, with the text dedented."""
    def _write(name, text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return _write


def xfail_if_client_lag(valid: bool, reasons: list[str]) -> None:
    """A known defect, not a pass: on this 2-core machine the in-process generative client's
    event loop sometimes writes a request 5-10 ms after its dispatch, and with 16 requests
    that moves TTFT p99 past the 10% validity limit (seen with the code before and after the
    engine rework). Issue 27 (a client that costs less than the server) is the fix; any other
    reason to be INVALID fails."""
    if valid:
        return
    assert reasons and all("client's event loop sent late" in m for m in reasons), reasons
    pytest.xfail(f"INVALID for the client's own send lag (issue 27): {reasons[0]}")


def xfail_if_send_lag(load: dict) -> None:
    """The open loop's own send lag against a server a few ms fast: in a 1 s window of 60
    queries p99 is the slowest send, and on a shared 2-core CI runner one late send (seen: the
    gRPC lean client at p99 0.57 ms against Triton's 3.5 ms) crosses the 10% validity limit.
    The rule applying is right; a cell INVALID for anything else fails. Issue 27 is the fix
    (benchmarks/open_loop_validity.py measures it with nothing else running)."""
    if load["valid"]:
        return
    reasons = load["invalid_reasons"]
    assert reasons and all(m.startswith("send lag (p99") for m in reasons), reasons
    pytest.xfail(f"INVALID for the client's own send lag (issue 27): {reasons[0]}")


def assert_ttft_matches(ttft_ms: float, ref_ms: float, client_lag_p50_ms: float | None,
                        label="") -> None:
    """TTFT p50 timed from the scheduled send within 5% of a reference client's. Seen on this
    2-core machine: the harness's client adds its own cost on top (send lag p50 2-3 ms, TTFT
    +5-10%), the known defect of issue 27: a TTFT above the reference xfails saying so, with
    the lag; one below it (the harness never sees a faster server) fails."""
    if abs(ttft_ms / ref_ms - 1) < 0.05:
        return
    assert ttft_ms > ref_ms, (label, ttft_ms, ref_ms)
    pytest.xfail(f"TTFT p50 {ttft_ms:.3g} ms vs the reference client's {ref_ms:.3g} ms, the "
                 f"client's send lag p50 {client_lag_p50_ms} ms: the client's cost (issue 27)")
