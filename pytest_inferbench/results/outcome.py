"""What a measured cell's own verdicts say about its pytest outcome: a missed SLO and an
INVALID measurement (the load generator fell behind its schedule). plugin.py fails the item
on the kinds named by `--infer-fail-on` / ini `inferbench_fail_on`, and warns on the others;
the measurement itself is always kept in the run file."""

from __future__ import annotations

from ..core.result import Result
from ..core.scenarios import SCENARIOS
from ..core.sections import Slo

VERDICT_KINDS = ("slo", "invalid")


def parse_fail_on(text: str | None) -> tuple[str, ...]:
    """'slo,invalid' (commas or spaces; 'none' or '' for nothing) -> the kinds; ValueError
    naming the unknown ones."""
    words = [w for w in (text or "").replace(",", " ").split() if w]
    if words == ["none"]:
        return ()
    unknown = [w for w in words if w not in VERDICT_KINDS]
    if unknown:
        raise ValueError(f"inferbench_fail_on: unknown {', '.join(map(repr, unknown))}; "
                         f"use {', '.join(VERDICT_KINDS)} or none")
    return tuple(k for k in VERDICT_KINDS if k in words)


def verdict_problems(result: Result) -> list[tuple[str, str]]:
    """[(kind, message)] for a measured result whose SLO verdict is `fail` or that is not
    valid. A capacity or ramp search judges its steps' SLOs itself (its answer is a rate), and
    a configuration search's trials are explorations: neither is judged here."""
    kind = SCENARIOS.get(result.scenario)
    if result.search_trial is not None or (kind is not None and kind.rate_search):
        return []
    out = []
    if result.slo is not None and result.slo.verdict == "fail":
        out.append(("slo", f"SLO not met: {_slo_text(result.slo)}"))
    if not result.valid:
        why = (result.load.invalid_reasons if result.load is not None else None) or [
            "the load generator fell behind its schedule"]
        out.append(("invalid", f"INVALID measurement: {'; '.join(why)}"))
    return out


def _slo_text(slo: Slo) -> str:
    if slo.metrics:          # generative: one bound per metric
        over = [f"{k} over {v.bound_ms:g} ms" for k, v in slo.metrics.items()
                if v.verdict == "fail"]
        return ", ".join(over) or (slo.reason or "over the bound")
    return (f"p{slo.percentile:g} over {slo.bound_ms:g} ms "
            f"({slo.overlatency} of {slo.queries} queries over the bound)")
