"""What a measured cell's own verdicts say about its pytest outcome: a missed SLO and an
INVALID measurement (the load generator fell behind its schedule). plugin.py fails the item
on the kinds named by `--infer-fail-on` / ini `inferbench_fail_on`, and warns on the others;
the measurement itself is always kept in the run file."""

from __future__ import annotations

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


def verdict_problems(result) -> list[tuple[str, str]]:
    """[(kind, message)] for a measured result whose SLO verdict is `fail` or that is not
    valid. A capacity or ramp search judges its steps' SLOs itself (its answer is a rate), and
    a configuration search's trials are explorations: neither is judged here."""
    load = result.load or {}
    if result.search_trial or "max_rate" in load or "knee_rate" in load:
        return []
    out = []
    slo = result.slo or {}
    if slo.get("verdict") == "fail":
        out.append(("slo", f"SLO not met: {_slo_text(slo)}"))
    if not result.valid:
        why = load.get("invalid_reasons") or ["the load generator fell behind its schedule"]
        out.append(("invalid", f"INVALID measurement: {'; '.join(why)}"))
    return out


def _slo_text(slo: dict) -> str:
    if "metrics" in slo:          # generative: one bound per metric
        over = [f"{k} over {v['bound_ms']:g} ms" for k, v in slo["metrics"].items()
                if v.get("verdict") == "fail"]
        return ", ".join(over) or (slo.get("reason") or "over the bound")
    return (f"p{slo['percentile']:g} over {slo['bound_ms']:g} ms "
            f"({slo.get('overlatency')} of {slo.get('queries')} queries over the bound)")
