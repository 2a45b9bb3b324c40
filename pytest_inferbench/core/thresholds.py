"""The gate: which metrics are judged, the change each may make before it is a regression, the
confidence of every verdict, and the between-run noise assumed when none was learnt.

Written as in a spec or on the command line:

    gate: {p99: "+10%", throughput: "-5%", confidence: 0.95, noise: "20%"}
    --infer-gate p99=+10%,throughput=-5%,confidence=0.99

Metrics: a latency percentile `pNN` (`p50`, `p99.9`; any percentile, read from the stored
histogram when the run did not list it) or `mean`, where higher is worse and the threshold is
an increase ("+10%"); `throughput` (samples per second), where lower is worse and the threshold
is a decrease ("-5%"). A threshold without a sign takes the metric's worse direction; one with
the other sign is refused (a latency regression is never "-10%"). `null`/`off` removes a metric
inherited from a wider gate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

LATENCY_KEY = re.compile(r"^p(\d+(?:\.\d+)?)$")
PERCENT = re.compile(r"^\s*([+-]?)\s*([0-9]*\.?[0-9]+)\s*%\s*$")

# Judged when no gate is written anywhere: the median and throughput, the figures a slowdown
# moves and noise moves least. A verdict of regression needs the whole interval beyond the
# threshold, so a 5% threshold catches a real 10% slowdown once the interval is narrower
# than about +-4% (paired mode), and never flags a change it cannot show is over 5%.
DEFAULT_THRESHOLDS = {"p50": 0.05, "throughput": 0.05}
DEFAULT_CONFIDENCE = 0.95

# Between-run noise assumed for a stored comparison without learnt A/A noise: the half-width,
# at the verdict's confidence, of the ratio of two runs of unchanged code at different times.
# Measured on the development and GPU machines: a small CNN's p50 under ONNX Runtime 4.5 to
# 7.4 ms between CPU runs (x1.64), a resnet50 fp16 cell's 4.54 and 6.16 ms back to back on an
# H200 (x1.36). A single run from another time is then evidence only of a change beyond x1.6
# (CPU) or x1.4 (GPU) plus the threshold; `noise:` in the gate overrides it for quieter machines.
DEFAULT_NOISE = {"cpu": 0.60, "cuda": 0.40}
OFF = ("off", "none", "null")


class GateError(ValueError):
    """A threshold or gate setting that cannot be used; the message says what was expected.
    `key`: the gate key it is about, when there is one (for the spec's file:line)."""
    key: str | None = None


def is_latency(metric: str) -> bool:
    return metric == "mean" or bool(LATENCY_KEY.match(metric))


def check_metric(metric: str) -> str:
    if metric == "throughput" or metric == "mean":
        return metric
    m = LATENCY_KEY.match(metric)
    if m and 0 < float(m.group(1)) < 100:
        return f"p{float(m.group(1)):g}"
    raise GateError(f"unknown gate metric '{metric}': expected a latency percentile such as "
                    f"p50 or p99.9, mean, or throughput")


def parse_percent(value, what: str = "value") -> tuple[str, float]:
    """'+10%' -> ('+', 0.10). Numbers are refused: '10' could mean 10% or x10."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise GateError(f"{what}: expected a percentage such as '+10%' or '-5%' (quoted in "
                        f"YAML), got {value!r}")
    m = PERCENT.match(value)
    if not m:
        raise GateError(f"{what}: expected a percentage such as '+10%' or '-5%', got {value!r}")
    return m.group(1), float(m.group(2)) / 100


def parse_threshold(metric: str, value) -> float:
    """The tolerated relative change in the metric's worse direction, as a positive fraction."""
    sign, limit = parse_percent(value, f"gate {metric}")
    latency = is_latency(metric)
    if sign == ("-" if latency else "+"):
        worse = "an increase ('+10%')" if latency else "a decrease ('-5%')"
        raise GateError(f"gate {metric}: {value!r} points the wrong way: a regression of "
                        f"{'latency' if latency else 'throughput'} is {worse}")
    if limit <= 0:
        raise GateError(f"gate {metric}: a threshold of 0% flags any noise; give the change "
                        f"you tolerate, e.g. '{'+' if latency else '-'}5%'")
    if not latency and limit >= 1:
        raise GateError(f"gate {metric}: throughput cannot fall by {100 * limit:g}% or more")
    return limit


@dataclass(frozen=True)
class GateConfig:
    """thresholds: metric -> tolerated change (positive fraction, in the metric's worse
    direction); confidence: of every interval; noise: assumed between-run half-width (fraction)
    where no A/A noise was learnt (None: the device type's default)."""
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    confidence: float = DEFAULT_CONFIDENCE
    noise: float | None = None

    def to_json(self) -> dict:
        return {"thresholds": dict(self.thresholds), "confidence": self.confidence,
                "noise": self.noise}

    def describe(self) -> str:
        parts = [f"{m} {threshold_text(m, v)}" for m, v in self.thresholds.items()]
        return ", ".join(parts) + f" at {self.confidence:.0%} confidence"

    @staticmethod
    def from_json(data) -> "GateConfig":
        if isinstance(data, GateConfig):
            return data
        if not data:
            return GateConfig()
        if hasattr(data, "model_dump"):
            data = data.model_dump()
        if "thresholds" in data:   # the stored form
            return GateConfig(thresholds=dict(data["thresholds"]),
                              confidence=float(data.get("confidence") or DEFAULT_CONFIDENCE),
                              noise=data.get("noise"))
        return parse_gate(data)


def threshold_text(metric: str, limit: float) -> str:
    return f"{'+' if is_latency(metric) else '-'}{100 * limit:g}%"


def parse_gate(data, base: GateConfig | None = None) -> GateConfig:
    """A written gate (mapping, or 'p99=+10%,throughput=-5%') over `base` (keys override; a
    metric set to off/null is removed). Raises GateError."""
    if isinstance(data, str):
        data = _parse_pairs(data)
    if not isinstance(data, dict):
        raise GateError(f"expected a mapping such as {{p99: '+10%', throughput: '-5%'}}, "
                        f"got {data!r}")
    thresholds = dict(base.thresholds) if base else {}
    confidence = base.confidence if base else DEFAULT_CONFIDENCE
    noise = base.noise if base else None
    for key, value in data.items():
        try:
            thresholds, confidence, noise = _apply(str(key), value, thresholds, confidence,
                                                   noise)
        except GateError as exc:
            exc.key = str(key)
            raise
    if not thresholds:
        raise GateError("the gate judges no metric: give at least one, e.g. p99: '+10%'")
    return GateConfig(thresholds=thresholds, confidence=confidence, noise=noise)


def _apply(key, value, thresholds, confidence, noise):
    """One written gate key applied over (thresholds, confidence, noise)."""
    off = value is None or value is False or (isinstance(value, str)
                                              and value.strip().lower() in OFF)
    if key == "confidence":
        if isinstance(value, str):
            value = (parse_percent(value, "gate confidence")[1] if value.strip().endswith("%")
                     else _float(value, "gate confidence"))
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.5 <= value < 1:
            raise GateError(f"gate confidence: expected a number in [0.5, 1) such as 0.95, "
                            f"got {value!r}")
        return thresholds, float(value), noise
    if key == "noise":
        if off:
            return thresholds, confidence, None
        sign, limit = parse_percent(value, "gate noise")
        if sign == "-" or limit <= 0:
            raise GateError(f"gate noise: expected a positive percentage such as '20%' (the "
                            f"half-width of the ratio between two unchanged runs), got {value!r}")
        return thresholds, confidence, limit
    metric = check_metric(key)
    if off:
        thresholds.pop(metric, None)
    else:
        thresholds[metric] = parse_threshold(metric, value)
    return thresholds, confidence, noise


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise GateError(f"{what}: expected a number, got {value!r}") from None


def _parse_pairs(text: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GateError(f"expected METRIC=CHANGE pairs such as p99=+10%,throughput=-5%, "
                            f"got {item!r}")
        value = value.strip()
        if key.strip() == "confidence":
            out["confidence"] = _float(value, "gate confidence")
        else:
            out[key.strip()] = value
    if not out:
        raise GateError("empty gate: expected e.g. p99=+10%,throughput=-5%")
    return out


def default_noise(device: str | None) -> float:
    kind = "cuda" if str(device or "cpu").startswith("cuda") else "cpu"
    return DEFAULT_NOISE[kind]


def log_limit(metric: str, limit: float) -> float:
    """The threshold on the 'worse' log scale: log(1 + limit) for latency (an increase),
    -log(1 - limit) for throughput (a decrease); > 0."""
    return math.log1p(limit) if is_latency(metric) else -math.log1p(-limit)
