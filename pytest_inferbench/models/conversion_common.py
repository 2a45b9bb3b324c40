"""What every conversion shares: its error, the notes it records in context.model_info, the
notes stamped into a cached build's own metadata (so a cache hit can report them), cached
intermediates, the total conversion time, and the quantizer's logging kept quiet."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

NOTES_KEY = "pytest_inferbench.notes"   # metadata_props entry: what a cached build did


class ConversionError(RuntimeError):
    """A conversion step failed; the message names the step and what would fix it."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def note(context, text: str) -> None:
    context.model_info.setdefault("conversion_notes", []).append(text)


def stamp(path: Path, notes: dict) -> None:
    """Write what a build did into the model's own metadata, so a cache hit can report it."""
    import onnx
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != NOTES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = NOTES_KEY, json.dumps(notes)
    onnx.save(model, str(path))


def stamped(path) -> dict:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == NOTES_KEY:
            return json.loads(prop.value)
    return {}


def intermediate(context, step: str, key: dict, filename: str, build) -> tuple[Path, dict]:
    """A cached intermediate artifact (not one a cell runs): recorded in the notes, its time
    counted in conversion_s."""
    path, meta = context.cache.get_or_build(key, filename, build)
    context.model_info.setdefault("intermediates", []).append(
        {"step": step, "cache_hit": meta["cache_hit"], "seconds": meta["conversion_s"]})
    return path, meta


def total_conversion_time(context) -> None:
    info = context.model_info
    info["conversion_s"] = round(sum(c["seconds"] for c in info.get("conversions", []))
                                 + sum(c["seconds"] for c in info.get("intermediates", [])), 4)


@contextlib.contextmanager
def quiet_quantizer():
    """The quantizer warns through the root logger and logs an optimiser failure (not raised)
    through its own: silence the first, collect the second's errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            errors.append(record.getMessage())

    logger = logging.getLogger("onnxruntime.quantization.shape_inference")
    handler, propagate = Collect(level=logging.ERROR), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield errors
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        root.setLevel(level)
