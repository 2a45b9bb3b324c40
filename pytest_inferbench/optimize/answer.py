"""The answer of a search, as the run file keeps it (Result.search): every trial in the order
measured, the winner with its interval, the runner-up and whether the two are told apart by
their intervals, the Pareto front, what was excluded, and why the search stopped."""

from __future__ import annotations

from .optimizer import Outcome, Score


def distinguishable(winner: Score, runner_up: Score, direction: str) -> bool:
    """The runner-up is proven worse: its interval lies wholly on the worse side of the
    winner's (capacity: it failed at a rate the winner passed)."""
    if direction == "maximize":
        return bool(runner_up.upper is not None and winner.lower is not None
                    and runner_up.upper <= winner.lower)
    return bool(runner_up.lower is not None and winner.upper is not None
                and runner_up.lower >= winner.upper)


def ranked(outcome: Outcome, direction: str) -> list:
    usable = [t for t in outcome.trials if t.score.usable]
    return sorted(usable, key=lambda t: t.score.value, reverse=direction == "maximize")


def pareto(points: list[tuple[int, float, float]], direction: str) -> list[int]:
    """Trials not dominated on (objective, p99 ms): a better objective or a lower p99."""
    sign = -1.0 if direction == "maximize" else 1.0     # minimise both after this
    keep = []
    for n, obj, p99 in points:
        a = (sign * obj, p99)
        dominated = any((sign * o2 <= a[0] and q2 <= a[1]) and (sign * o2 < a[0] or q2 < a[1])
                        for _, o2, q2 in points)
        if not dominated:
            keep.append(n)
    return sorted(keep)


def answer(plan, outcome: Outcome, results: dict[int, object], excluded: dict[int, str],
           ids: dict[int, str]) -> dict:
    """The Result.search of a search: plain JSON. results: trial number -> its Result."""
    spec = plan.spec
    direction = spec.direction
    order = ranked(outcome, direction)
    trials = []
    for t in outcome.trials:
        cand = plan.candidates[t.candidate]
        r = results.get(t.number)
        p99 = _p99(r)
        trials.append({"number": t.number, "id": ids.get(t.number), "cell_id": cand.cell.id,
                       "params": cand.params, "state": t.score.state,
                       "objective": t.score.value, "lower": t.score.lower,
                       "upper": t.score.upper, "note": t.score.note, "seconds": t.seconds,
                       "suggested": t.suggested, "best_so_far": t.best_so_far, "p99_ms": p99,
                       "entry": cand.entry})
    out = {"objective": spec.objective, "direction": direction, "unit": spec.unit(),
           "sampler": outcome.sampler, "seed": spec.seed, "stop": outcome.stop,
           "grid": plan.grid, "budget_trials": plan.trials,
           "budget_time_s": spec.budget.time,
           "measured": sum(1 for t in outcome.trials if t.score.state != "unavailable"),
           "seconds": outcome.seconds,
           "dims": [{"name": d.name, "choices": list(d.choices), "ordinal": d.ordinal}
                    for d in plan.dims],
           "excluded": [{"cell_id": plan.candidates[i].cell.id,
                         "params": plan.candidates[i].params, "reason": why}
                        for i, why in sorted(excluded.items())],
           "trials": trials, "winner": None, "runner_up": None, "distinguishable": None}
    if order:
        out["winner"] = order[0].number
        out["spec_entry"] = plan.candidates[order[0].candidate].entry
    if len(order) > 1:
        out["runner_up"] = order[1].number
        out["distinguishable"] = distinguishable(order[0].score, order[1].score, direction)
    points = [(t["number"], t["objective"], t["p99_ms"]) for t in trials
              if t["state"] == "measured" and t["objective"] is not None
              and t["p99_ms"] is not None]
    out["pareto"] = pareto(points, direction)
    out["verdict"] = verdict_text(out)
    return out


def _p99(result) -> float | None:
    if result is None:
        return None
    pct = result.latency_ms.percentiles.get("p99")
    return pct.value if pct is not None else None


def _fmt(x) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def interval_text(t: dict) -> str:
    lo, hi = t.get("lower"), t.get("upper")
    if lo is None and hi is None:
        return ""
    return f"[{_fmt(lo)}, {_fmt(hi) if hi is not None else 'not bounded'}]"


def verdict_text(s: dict) -> str:
    """One line: the winner, its objective and interval, the runner-up and whether they are
    told apart, trials of the grid, and why the search stopped."""
    unit, trials = s["unit"], {t["number"]: t for t in s["trials"]}
    counted = f"{s['measured']} of {s['grid']} configurations measured"
    if s["winner"] is None:
        return f"no configuration met the objective's conditions; {counted}; stop: {s['stop']}"
    w = trials[s["winner"]]
    text = f"best {w['cell_id']}: {s['objective']} {_fmt(w['objective'])} {unit} " \
           f"{interval_text(w)}"
    if s["runner_up"] is not None:
        r = trials[s["runner_up"]]
        if s["distinguishable"]:
            text += f"; runner-up {r['cell_id']} {_fmt(r['objective'])} is proven worse"
        else:
            text += (f"; runner-up {r['cell_id']} {_fmt(r['objective'])} {interval_text(r)} "
                     f"is NOT distinguishable from it (both are candidates")
            confirmation = s.get("confirmation")
            if confirmation is None:
                text += "; `search: {confirm: paired}` runs a paired A/B of the two)"
            elif confirmation.get("ran"):
                text += (f"; paired A/B at {confirmation['workload']}: "
                         f"{confirmation['meaning']}, {confirmation['summary']})")
            else:
                text += f"; no paired A/B: {confirmation['why']})"
    return f"{text}; {counted}; stop: {s['stop']}"
