"""Configuration search against the grid it replaces.

    python benchmarks/config_search.py surface      # 1. a system of known response surface
    python benchmarks/config_search.py real         # 2. a real grid on this machine

1. tests/search_surface.py: 100 configurations (batch size x instances x queue delay) whose
   true capacities under p99 <= 12 ms are computed (M/D/k by simulation). (a) Each sampler
   (Optuna GPSampler, the default; TPESampler; random) over 5 seeds with a budget of 15
   trials (15%), the trials' values being the true capacities: the winner's true capacity
   as a share of the true best. (b) The same search, 5 seeds, every trial a real capacity
   search (the product's: workload/rate_search.py, pruning on) of the live system (sleeps: each
   query waits d, then holds one of k instances for T); the grid's winner measured the same
   way (the five truly best configurations, each measured: the live system is the known
   one, so the grid's winner is among them): do the two winners' capacities agree within 5%?

2. A real grid through the plugin: resnet-tiny on onnxruntime/torch x batch 1/4/16 x
   in-process / Triton with 1 or 2 instances (18 cells), capacity under p90 <= 50 ms from 50/s
   (a passing p90 step needs 150 queries, a p99 one 459: steps short enough for the whole grid).
   One session measures the grid, another the same entry with `search: {objective:
   capacity, budget: {trials: 6}}`. Printed: both winners, their capacities with brackets,
   trials, wall times, and where the search's winner stands in the grid's own measurement
   (the two sessions are minutes apart: on this machine sessions differ by 10-30%).

Nothing else may run on the machine meanwhile (DESIGN.md: two CPU benchmarks at once
double each other's latency).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import search_surface  # noqa: E402

from pytest_inferbench.optimize.optimizer import Score, run_search  # noqa: E402
from pytest_inferbench.optimize.space import Space  # noqa: E402

SEEDS = range(5)
BUDGET = 15


def _analytic(truth, keys, space, sampler):
    best = max(truth.values())
    shares = []
    for seed in SEEDS:
        def evaluate(i, floor):
            v = truth[keys[i]]
            return Score(value=v, lower=v, upper=v) if v > 0 else \
                Score(state="infeasible", estimate=1.0)
        out = run_search(space, evaluate, direction="maximize", trials=BUDGET, seed=seed,
                         sampler=sampler, patience=None)
        shares.append(max(truth[keys[t.candidate]] for t in out.trials if t.score.usable)
                      / best)
    return shares


def _live_capacity(key, floor=None):
    """One real capacity search of the live system (samples/s), as a search trial runs it."""
    from pytest_inferbench.optimize.objective import score_result
    from pytest_inferbench.spec import Settings, Workload
    from pytest_inferbench.workload.engine import measure_callable
    from pytest_inferbench.workload.rate_search import prune_below
    b, k, d = key
    settings = Settings(warmup=20, max_duration=60)
    workload = Workload(scenario="capacity", rate=150, slo={"p99": "12ms"},
                        step_min_duration=0.5)
    with prune_below(floor / b if floor else None):
        result = measure_callable(search_surface.live_system(b, k, d), settings, workload,
                                  batch_size=b, instances=32)

    class _Cell:
        batch_size = b
    spec = type("S", (), {"objective": "capacity"})()
    return score_result(spec, _Cell, result)


def surface() -> None:
    truth = search_surface.true_capacities()
    keys = list(truth)
    space = Space(search_surface.dims(), search_surface.params(keys))
    best_key = max(truth, key=truth.get)
    best = truth[best_key]
    print(f"# 1. known response surface: {len(keys)} configurations, true best {best:,.0f} "
          f"samples/s at (b, k, d) = {best_key}; "
          f"{sum(v >= 0.95 * best for v in truth.values())} within 95% of it")
    print(f"(a) true capacities as trial values, {BUDGET} trials "
          f"({100 * BUDGET / len(keys):.0f}% of the grid), seeds {list(SEEDS)}")
    print("| sampler | winner / true best, per seed | seeds >= 95% |")
    print("|---|---|---|")
    for sampler in ("gp", "tpe", "random"):
        shares = _analytic(truth, keys, space, sampler)
        print(f"| {sampler} | {', '.join(f'{s:.3f}' for s in shares)} | "
              f"{sum(s >= 0.95 for s in shares)}/5 |")
    print("(b) live: every trial a real capacity search of the live system (pruning on)")
    ranked = sorted(truth, key=truth.get, reverse=True)[:5]
    t0 = time.monotonic()
    grid = {key: _live_capacity(key) for key in ranked}
    grid_s = time.monotonic() - t0
    g_key = max(grid, key=lambda k: grid[k].value or 0)
    g = grid[g_key]
    print(f"grid's winner (the 5 truly best measured, {grid_s:.0f}s): {g_key} "
          f"{g.value:,.0f} samples/s [{g.lower:,.0f}, {g.upper:,.0f}]; the others: " +
          ", ".join(f"{k} {grid[k].value or 0:,.0f}" for k in ranked if k != g_key))
    print("| seed | trials (pruned) | winner (b, k, d) | its true share | measured capacity "
          "[bracket] | vs grid's winner | wall s |")
    print("|---|---|---|---|---|---|---|")
    walls, trail = [], []
    for seed in SEEDS:
        t0 = time.monotonic()
        out = run_search(space, lambda i, floor: _live_capacity(keys[i], floor),
                         direction="maximize", trials=BUDGET, seed=seed, patience=None,
                         prune=True)
        wall = time.monotonic() - t0
        walls.append(wall)
        usable = [t for t in out.trials if t.score.usable]
        win = max(usable, key=lambda t: t.score.value)
        w_key = keys[win.candidate]
        pruned = sum(t.score.state == "pruned" for t in out.trials)
        print(f"| {seed} | {len(out.trials)} ({pruned}) | {w_key} | "
              f"{truth[w_key] / best:.3f} | {win.score.value:,.0f} [{win.score.lower:,.0f}, "
              f"{win.score.upper:,.0f}] | {win.score.value / g.value:.3f} | {wall:.0f} |")
        trail.append(f"seed {seed}: " + "; ".join(
            f"{keys[t.candidate]} {t.score.state} {t.score.value or t.score.estimate or 0:,.0f}"
            for t in out.trials))
    print(f"mean wall time of a search: {statistics.mean(walls):.0f}s; a trial took "
          f"{grid_s / len(grid):.1f}s on average for the grid's best configurations")
    print("trials, in order ((b, k, d) state samples/s or the bound told):")
    print("\n".join(trail))


REAL_ENTRY = """
    - model: resnet-tiny
      runtime: [onnxruntime, torch]
      batch_size: [1, 4, 16]
      serving: [inprocess, {system: triton, instances: [1, 2]}]
      workload: {scenario: capacity, slo: {p90: 50ms}, rate: 50, step_min_duration: 1s}
"""


def _session(directory: Path, name: str, search: str | None) -> tuple[dict, float]:
    entry = textwrap.dedent(REAL_ENTRY).rstrip() + (f"\n  search: {search}\n" if search else "\n")
    job = directory / f"{name}.yaml"
    job.write_text(f"name: {name}\ndefaults: {{warmup: 1s, max_duration: 120}}\n"
                   f"benchmarks:\n{textwrap.indent(entry.strip(), '  ')}\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", str(job), "--infer-config", str(job),
                           "-p", "no:cacheprovider", "--infer-no-html", "-q", "--infer-store",
                           "none"], cwd=directory, capture_output=True, text=True)
    wall = time.monotonic() - t0
    runs = sorted((directory / ".inferbench" / "runs").glob("*.json"))
    if not runs:
        sys.exit(f"{name}: no run file\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    for path in runs:
        doc = json.loads(path.read_text())
        if doc["name"] == name:
            return doc, wall
    sys.exit(f"{name}: its run file is missing")


def _capacity(r: dict) -> tuple[float | None, float | None, float | None]:
    b = (r.get("cell") or {}).get("batch_size") or r.get("batch_size") or 1
    bracket = (r.get("load") or {}).get("bracket") or {}
    p, f = bracket.get("passed"), bracket.get("failed")
    return (p * b if p else None), (p * b if p else None), (f * b if f else None)


def real() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        grid_doc, grid_wall = _session(d, "grid", None)
        search_doc, search_wall = _session(d, "search",
                                           "{objective: capacity, budget: {trials: 6}, seed: 0}")
    cells = [r for r in grid_doc["results"] if not r.get("search")]
    scored = {r["cell"]["id"]: _capacity(r) for r in cells}
    ok = {k: v for k, v in scored.items() if v[0]}
    g_id = max(ok, key=lambda k: ok[k][0])
    g = ok[g_id]
    s = search_doc["results"][0]["search"]
    print(f"# 2. real grid: {len(cells)} cells, {grid_wall:.0f}s; search: {s['measured']} "
          f"trials of {s['grid']}, {search_wall:.0f}s ({search_wall / grid_wall:.2f} of the "
          f"grid's wall time); stop: {s['stop']}")
    print("| | configuration | capacity samples/s [bracket] |")
    print("|---|---|---|")
    print(f"| grid's winner | {g_id} | {g[0]:,.0f} [{g[1]:,.0f}, "
          f"{g[2]:,.0f}] |" if g[2] else f"| grid's winner | {g_id} | {g[0]:,.0f} |")
    if s["winner"] is None:
        print(f"| search | no winner | {s['verdict']} |")
        return
    w = s["trials"][s["winner"]]
    print(f"| search's winner | {w['cell_id']} | {w['objective']:,.0f} "
          f"[{w['lower']:,.0f}, {w['upper'] or float('nan'):,.0f}] |")
    same = w["cell_id"] == g_id
    in_grid = scored.get(w["cell_id"])
    overlap = in_grid and in_grid[2] and g[1] and in_grid[2] > g[1]
    print(f"same configuration: {same}; in the grid's own session the search's winner measured "
          f"{in_grid[0] or 0:,.0f} [{in_grid[1] or 0:,.0f}, {in_grid[2] or 0:,.0f}]: "
          f"{'brackets overlap (not distinguishable)' if same or overlap else 'proven below the grid winner'}")
    print("trials:", "; ".join(f"{t['cell_id']} {t['state']} {t['objective'] or 0:,.0f}"
                               for t in s["trials"]))
    print("grid:", "; ".join(f"{k} {v[0] or 0:,.0f}" for k, v in sorted(
        scored.items(), key=lambda kv: -(kv[1][0] or 0))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("surface", "real"))
    args = parser.parse_args()
    surface() if args.part == "surface" else real()


if __name__ == "__main__":
    main()
