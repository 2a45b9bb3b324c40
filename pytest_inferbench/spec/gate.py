"""The `gate` section (job < spec < entry, merged key by key): regression thresholds, the
confidence of every verdict and the assumed between-run noise (core/thresholds.py parses them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..core.thresholds import GateConfig, GateError, parse_gate
from .document import Document


class Gate(BaseModel):
    """Regression thresholds (metric -> tolerated change, a positive fraction in the metric's
    worse direction), the confidence of every verdict, and the between-run noise assumed where
    none was learnt. Written flat: {p99: "+10%", throughput: "-5%", confidence: 0.95}; see
    core/thresholds.py."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    thresholds: dict[str, float]
    confidence: float = 0.95
    noise: float | None = None


def gate_section(doc: Document, raw, path, base: Gate | None) -> Gate:
    """A written gate over a wider one (job < spec < entry; keys override, off removes)."""
    if not isinstance(raw, dict):
        raise doc.error("expected a mapping such as {p99: '+10%', throughput: '-5%'}", path)
    try:
        config = parse_gate(raw, GateConfig(**base.model_dump()) if base else None)
    except GateError as exc:
        raise doc.error(str(exc), path + ((exc.key,) if exc.key else ())) from None
    return Gate(**config.to_json())
