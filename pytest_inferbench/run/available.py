"""Whether a cell can run on this machine, decided before anything is loaded: the runtime
and its device and precision, the serving system's packages, the model's kind. A search
excludes such candidates up front (and lists them) instead of spending a trial on each."""

from __future__ import annotations

from ..core.errors import RuntimeUnavailable
from ..runtimes import runner_class
from .served import require_serving


def why_unavailable(cell) -> str | None:
    """The reason this machine cannot run the cell, or None (it may still fail later)."""
    try:
        if cell.serving.system != "inprocess":
            require_serving(cell)
        if cell.serving.system in ("endpoint", "openai") or cell.model is None:
            return None
        model = cell.model
        if (getattr(model, "kind", None) == "file" and model.format == "onnx"
                and cell.runtime != "onnxruntime"):
            raise RuntimeUnavailable("an ONNX file cannot run on a torch runtime (no ONNX -> "
                                     "torch conversion); benchmark it with runtime onnxruntime")
        try:
            runner = runner_class(cell.runtime)
        except ImportError as exc:
            raise RuntimeUnavailable(f"runtime {cell.runtime}: {exc}") from None
        check = getattr(runner, "check_available", None)
        if check is not None:
            check(cell.device, cell.precision, cell.runtime_options)
    except RuntimeUnavailable as exc:
        return str(exc)
    return None
