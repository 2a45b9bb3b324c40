"""The terminal summary: one aligned row per cell, grouped by spec and model."""

from __future__ import annotations

from ..core.result import Result


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits + 1}g}"


REASON_CHARS = 120


def clip(text: str | None, limit: int = REASON_CHARS) -> str:
    """A reason's first line within `limit` characters; what is left out shows as an ellipsis
    (the whole reason stays in the run file and the report)."""
    lines = (text or "").strip().splitlines()
    if not lines:
        return ""
    first = lines[0].rstrip()
    if len(first) > limit:
        return first[:limit - 1].rstrip() + "…"
    return first + (" …" if len(lines) > 1 else "")


def _sort_key(r: Result):
    c = r.cell or {}
    return (c.get("spec", ""), c.get("model_label", r.id), (c.get("workload") or {}).get("scenario", ""),
            c.get("runtime", ""), c.get("device", ""), c.get("precision", ""),
            c.get("batch_size", 0), r.id)


def summary_table(results: list[Result], width: int = 200) -> str:
    """Rows grouped under one heading per spec file (or test module), sorted within it."""
    groups: dict[str, list[dict]] = {}
    for r in sorted(results, key=_sort_key):
        if r.search_trial:      # a search's trials: its row names the winner
            continue
        spec, _, name = r.id.partition("::")
        groups.setdefault(spec, []).append(_row(name or r.id, r))
    return "\n\n".join(f"{spec}\n{_align(rows)}" for spec, rows in groups.items())


_TEXT_COLUMNS = ("benchmark", "stop")


def _align(rows: list[dict]) -> str:
    """Numbers right-aligned, names and reasons left-aligned, two spaces between columns.

    (Hand-written: pandas' to_string aligns every column one way, and pulling pandas in for
    a dozen lines of padding would pin numpy against PyTriton's numpy pin.)"""
    columns = list(rows[0])
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values):
        out = [v.ljust(w) if c in _TEXT_COLUMNS else v.rjust(w)
               for c, v, w in zip(columns, values, widths)]
        return "  ".join(out).rstrip()
    return "\n".join([line(columns)] + [line(r) for r in cells])


def _row(name: str, r: Result) -> dict:
    lat = r.latency_ms
    p = lat.percentiles
    if r.status != "passed" and not lat.n and not r.search:
        return {"benchmark": name, "n": "-", "p50 ms": r.status.upper(), "p99 ms": "",
                "mean ms": "", "queries/s": "", "samples/s": "", "cores": "", "rss MB": "",
                "stop": clip(r.reason)}
    if r.search:
        return _config_search_row(name, r)
    stop = r.stop.reason or "-"
    if r.stop.ci_half_width_rel is not None:
        stop += f" ±{100 * r.stop.ci_half_width_rel:.1f}%"
    search = _search_row(name, r)
    if search is not None:
        return search
    if r.generative:
        stop += " " + _generative(r)
    if r.slo and "metrics" in r.slo:        # generative: one bound per metric
        bounds = ",".join(f"{k}<={v['bound_ms']:g}ms" for k, v in r.slo["metrics"].items())
        stop += f" slo {bounds}: {r.slo['verdict']}"
    elif r.slo:
        stop += f" slo p{r.slo['percentile']:g}<={r.slo['bound_ms']:g}ms: {r.slo['verdict']}"
    if not r.valid:
        why = (r.load or {}).get("invalid_reasons") or ["generator fell behind"]
        stop += f" INVALID: {why[0]}"
    device = r.device_time or {}
    if device.get("launch_bound"):
        stop += f" launch-bound (device busy {100 * device['busy_share']:.0f}%)"
    no_split = (r.serving or {}).get("breakdown_note")
    if no_split:        # why a served cell has no server-side latency breakdown
        stop += f" no breakdown: {no_split.split(' (')[0]}"
    other = (r.process or {}).get("other_cpu_cores")
    offered = (r.load or {}).get("offered") or {}
    if offered.get("flagged") and offered.get("offered_rate") is not None:
        stop += (f" OFFERED {offered['offered_rate']:.3g}/s (target "
                 f"{offered.get('target_rate', 0):.3g}/s)")
    if (r.process or {}).get("host_contended"):
        stop += f" HOST BUSY ({other:.2f} cores used by other processes)"
    if r.status != "passed":
        stop = f"{r.status.upper()}: {clip(r.reason) or stop}"
    return {
        "benchmark": name, "n": lat.n,
        "p50 ms": _fmt(p["p50"].value) if "p50" in p else "-",
        "p99 ms": _fmt(p["p99"].value) if "p99" in p else "-",
        "mean ms": _fmt(lat.mean),
        "queries/s": _fmt(r.throughput.queries_per_s),
        "samples/s": _fmt(r.throughput.samples_per_s),
        "cores": _fmt(r.process.get("cpu_cores_used"), 2),
        "rss MB": _fmt(r.process.get("peak_rss_mb")),
        "stop": stop,
    }


def _generative(r: Result) -> str:
    """TTFT and TPOT p50/p99, output tokens/s and goodput: a generative cell's headline (the
    row's p50/p99 columns are its end-to-end latency)."""
    g = r.generative

    def pct(metric):
        p = (g.get(f"{metric}_ms") or {}).get("percentiles") or {}
        return "/".join(_fmt(p[k]["value"]) if k in p else "-" for k in ("p50", "p99"))
    out = (f"ttft {pct('ttft')}ms tpot {pct('tpot')}ms "
           f"{_fmt(g.get('output_tokens_per_s'))} tok/s")
    if g.get("goodput"):
        out += f" goodput {_fmt(g['goodput']['requests_per_s'])}/s"
    return out


def _search_row(name: str, r: Result) -> dict | None:
    """A capacity search's headline is the capacity and its bracket; a ramp's, its knee.
    One step's percentiles would read as the answer, so they are not shown."""
    load = r.load or {}
    if "max_rate" in load or "knee_rate" in load:
        steps = load.get("steps") or []
        if "max_rate" in load:
            b = load.get("bracket") or {}
            what = (f"capacity {_fmt(load['max_rate'])}/s" if load["max_rate"] is not None
                    else "capacity: none proven")
            what += (f" (passed {_fmt(b.get('passed'))}, failed {_fmt(b.get('failed'))}"
                     f"{' confirmed' if b.get('failure_confirmed') else ''})")
        else:
            what = (f"knee {_fmt(load['knee_rate'])}/s" if load["knee_rate"] is not None
                    else "knee: none found")
        slo = (r.cell or {}).get("workload", {}).get("slo")
        if slo:
            what += " for " + ", ".join(f"{k}<={1e3 * float(v):g}ms" for k, v in slo.items())
        what += f"; {len(steps)} steps, stop: {load.get('search_stop')}"
        if r.status != "passed":
            what = f"{r.status.upper()}: {clip(r.reason) or what}"
        rate = load.get("max_rate", load.get("knee_rate"))
        return {"benchmark": name, "n": r.latency_ms.n, "p50 ms": "", "p99 ms": "",
                "mean ms": "", "queries/s": _fmt(rate), "samples/s":
                _fmt(rate * r.batch_size) if rate else "-",
                "cores": _fmt((r.process or {}).get("cpu_cores_used"), 2),
                "rss MB": _fmt((r.process or {}).get("peak_rss_mb")), "stop": what}
    return None


def _config_search_row(name: str, r: Result) -> dict:
    """A configuration search's row: the winner's measurement, and the answer (the winner,
    its interval, the runner-up, trials measured of the grid, why it stopped)."""
    s = r.search
    lat = r.latency_ms
    p = lat.percentiles
    what = s.get("verdict") or ""
    if r.status != "passed":
        what = f"{r.status.upper()}: {clip(r.reason, 400) or what}"
    return {"benchmark": name, "n": lat.n or "-",
            "p50 ms": _fmt(p["p50"].value) if "p50" in p else "-",
            "p99 ms": _fmt(p["p99"].value) if "p99" in p else "-",
            "mean ms": _fmt(lat.mean), "queries/s": _fmt(r.throughput.queries_per_s),
            "samples/s": _fmt(r.throughput.samples_per_s),
            "cores": _fmt((r.process or {}).get("cpu_cores_used"), 2),
            "rss MB": _fmt((r.process or {}).get("peak_rss_mb")),
            "stop": f"search {s['measured']}/{s['grid']} trials: {what}"}
