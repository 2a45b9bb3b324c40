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
    if r.status != "passed" and not lat.n and r.search is None:
        return {"benchmark": name, "n": "-", "p50 ms": r.status.upper(), "p99 ms": "",
                "mean ms": "", "queries/s": "", "samples/s": "", "cores": "", "rss MB": "",
                "stop": clip(r.reason)}
    if r.search is not None:
        return _config_search_row(name, r)
    search = _search_row(name, r)
    if search is not None:
        return search
    stop = _stop_text(r)
    if r.status != "passed":
        stop = f"{r.status.upper()}: {clip(r.reason) or stop}"
    return {
        "benchmark": name, "n": lat.n,
        "p50 ms": _fmt(p["p50"].value) if "p50" in p else "-",
        "p99 ms": _fmt(p["p99"].value) if "p99" in p else "-",
        "mean ms": _fmt(lat.mean),
        "queries/s": _fmt(r.throughput.queries_per_s),
        "samples/s": _fmt(r.throughput.samples_per_s),
        "cores": _fmt(r.process.cpu_cores_used, 2),
        "rss MB": _fmt(r.process.peak_rss_mb),
        "stop": stop,
    }


def _stop_text(r: Result) -> str:
    """Why it stopped, then what the reader must know: SLO, validity, disturbances."""
    stop = r.stop.reason or "-"
    if r.stop.ci_half_width_rel is not None:
        stop += f" ±{100 * r.stop.ci_half_width_rel:.1f}%"
    if r.generative is not None:
        stop += " " + _generative(r)
    if r.slo is not None and r.slo.metrics is not None:   # generative: one bound per metric
        bounds = ",".join(f"{k}<={v.bound_ms:g}ms" for k, v in r.slo.metrics.items())
        stop += f" slo {bounds}: {r.slo.verdict}"
    elif r.slo is not None:
        stop += f" slo p{r.slo.percentile:g}<={r.slo.bound_ms:g}ms: {r.slo.verdict}"
    if not r.valid:
        why = (r.load.invalid_reasons if r.load is not None else None) or \
            ["generator fell behind"]
        stop += f" INVALID: {why[0]}"
    return stop + _disturbances(r)


def _disturbances(r: Result) -> str:
    out = ""
    if r.device_time is not None and r.device_time.launch_bound:
        out += f" launch-bound (device busy {100 * r.device_time.busy_share:.0f}%)"
    no_split = r.serving.breakdown_note if r.serving is not None else None
    if no_split:        # why a served cell has no server-side latency breakdown
        out += f" no breakdown: {no_split.split(' (')[0]}"
    offered = r.load.offered if r.load is not None else None
    if offered is not None and offered.flagged and offered.offered_rate is not None:
        out += (f" OFFERED {offered.offered_rate:.3g}/s (target "
                f"{offered.target_rate or 0:.3g}/s)")
    if r.process.host_contended:
        out += f" HOST BUSY ({r.process.other_cpu_cores:.2f} cores used by other processes)"
    return out


def _generative(r: Result) -> str:
    """TTFT and TPOT p50/p99, output tokens/s and goodput: a generative cell's headline (the
    row's p50/p99 columns are its end-to-end latency)."""
    g = r.generative

    def pct(metric):
        lat = getattr(g, f"{metric}_ms")
        p = lat.percentiles if lat is not None else {}
        return "/".join(_fmt(p[k].value) if k in p else "-" for k in ("p50", "p99"))
    out = (f"ttft {pct('ttft')}ms tpot {pct('tpot')}ms "
           f"{_fmt(g.output_tokens_per_s)} tok/s")
    if g.goodput is not None:
        out += f" goodput {_fmt(g.goodput.requests_per_s)}/s"
    return out


def _search_row(name: str, r: Result) -> dict | None:
    """A capacity search's headline is the capacity and its bracket; a ramp's, its knee.
    One step's percentiles would read as the answer, so they are not shown."""
    load = r.load
    if load is None or load.steps is None:
        return None
    what, rate = _search_headline(load)
    slo = (r.cell or {}).get("workload", {}).get("slo")     # the spec's Cell (JSON)
    if slo:
        what += " for " + ", ".join(f"{k}<={1e3 * float(v):g}ms" for k, v in slo.items())
    what += f"; {len(load.steps)} steps, stop: {load.search_stop}"
    if r.status != "passed":
        what = f"{r.status.upper()}: {clip(r.reason) or what}"
    return {"benchmark": name, "n": r.latency_ms.n, "p50 ms": "", "p99 ms": "",
            "mean ms": "", "queries/s": _fmt(rate), "samples/s":
            _fmt(rate * r.batch_size) if rate else "-",
            "cores": _fmt(r.process.cpu_cores_used, 2),
            "rss MB": _fmt(r.process.peak_rss_mb), "stop": what}


def _search_headline(load) -> tuple[str, float | None]:
    # a capacity search leaves its bracket; a ramp, its knee
    if load.bracket is not None:
        b = load.bracket
        what = (f"capacity {_fmt(load.max_rate)}/s" if load.max_rate is not None
                else "capacity: none proven")
        what += (f" (passed {_fmt(b.passed)}, failed {_fmt(b.failed)}"
                 f"{' confirmed' if b.failure_confirmed else ''})")
        return what, load.max_rate
    what = (f"knee {_fmt(load.knee_rate)}/s" if load.knee_rate is not None
            else "knee: none found")
    return what, load.knee_rate


def _config_search_row(name: str, r: Result) -> dict:
    """A configuration search's row: the winner's measurement, and the answer (the winner,
    its interval, the runner-up, trials measured of the grid, why it stopped)."""
    s = r.search
    lat = r.latency_ms
    p = lat.percentiles
    what = s.verdict or ""
    if r.status != "passed":
        what = f"{r.status.upper()}: {clip(r.reason, 400) or what}"
    return {"benchmark": name, "n": lat.n or "-",
            "p50 ms": _fmt(p["p50"].value) if "p50" in p else "-",
            "p99 ms": _fmt(p["p99"].value) if "p99" in p else "-",
            "mean ms": _fmt(lat.mean), "queries/s": _fmt(r.throughput.queries_per_s),
            "samples/s": _fmt(r.throughput.samples_per_s),
            "cores": _fmt(r.process.cpu_cores_used, 2),
            "rss MB": _fmt(r.process.peak_rss_mb),
            "stop": f"search {s.measured}/{s.grid} trials: {what}"}
