"""How good is the gate? A/A runs and injected slowdowns, in both modes, on this machine.

    python benchmarks/gate_quality.py                      # 10 A/A + 3 per slowdown, ~5 min
    python benchmarks/gate_quality.py --aa 4 --per-slowdown 1   # a quick look
    python benchmarks/gate_quality.py --mode paired --open      # paired, open-loop cells

The suite: two CPU cells of a torch model whose work is a chain of 20 identical layers
(matmul + tanh, width 256), offline at batch 8 and single-stream at batch 1, one intra-op
thread. A slowdown of 5%, 10% or 20% is injected by running 21, 22 or 24 layers: the work
scaled by a known factor (the fixed per-query overhead dilutes it slightly, which the paired
estimates show).

Gate for both modes: p50 "+5%", throughput "-5%" at 95% confidence. A verdict of regression
needs the whole interval beyond 5%, so a real 10% or 20% slowdown is what must be caught;
5% sits on the threshold and is reported, not targeted.

Stored mode: a baseline saved by one pytest session with --infer-repeat 5 (the A/A noise
learnt from 5 round-robin repeats), then separate pytest sessions compared with it
(--infer-baseline), each cell a trial: 10 sessions unchanged (A/A), and sessions with each
slowdown.
Paired mode: each trial is one cell measured with `ab` against the unchanged model in the
same process (rounds 10, up to 40 while undecided, 0.1 s per side per round in 10 ms
sub-slices), through the same engine the plugin uses, judged alone (a session judging many
paired cells corrects for them, which only makes it stricter).

Targets: no false positive (A/A "regression") in either mode; paired mode catches every 10%
and 20% slowdown; stored mode never passes ("no change") a slowdown of 10% or 20% that it
cannot resolve: it says "undetermined".

History mode (--mode history): every session is recorded in a results store (SQLite, in the
work directory). First a baseline session with --infer-repeat 3 (today's stored mode), then
--history (15) A/A sessions that build the history, then --aa more A/A sessions each judged
by the plugin with --infer-baseline history (the false-positive trials). Then per slowdown
(5%, 10%, 20%, 100%) a copy of that store and --per-slowdown sessions of the slowed model,
one after another, each judged by the plugin against the history as a nightly job would (a
slowdown that lasts is judged against the level before it until it has lasted 5 runs). Each
trial is one cell of one session. The same sessions are judged three ways:
  (a) stored: against the 3-repeat baseline (compare_runs, as --infer-baseline NAME does),
  (b) history: the plugin's own verdict (--infer-baseline history),
  (c) change points: the store's series per cell (the `history` command's detector, Otava's
      E-Divisive) on A/A + slowed runs: is the p50 step found at the first slowed run (within
      one run), and how many change points appear in the A/A part (false alarms).
Targets: no false positive; every 2x caught; at least 90% of 20% slowdowns caught in history
mode; each injected step found by change-point detection at the right run.
--reference adds to each session, beside the two cells, the same two cells as reference pairs
(`ab: {reference: true}`) against a fixed reference model of half the layers, measured
alongside in the session's process; (b) is then given for them too, judged on their ratio's
history, in a table of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paired import table

MODELS = '''
import os
import torch

class Work(torch.nn.Module):
    """A chain of identical layers: the work is proportional to `reps`."""
    def __init__(self, reps, width=256):
        super().__init__()
        self.reps = reps
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(width, width, generator=g) / width ** 0.5,
                                    requires_grad=False)
    def forward(self, x):
        for _ in range(self.reps):
            x = torch.tanh(x @ self.w)
        return x

BASE = int(os.environ.get("GQ_BASE", "20"))    # layers: a slowdown is a whole layer's share
def _make(factor):
    return Work(round(BASE * factor)), {"x": [256]}
def current():
    return _make(float(os.environ.get("GQ_FACTOR", "1")))
def base():
    return _make(1.0)
def ref():
    return Work(BASE // 2), {"x": [256]}
def slow5():
    return _make(1.05)
def slow10():
    return _make(1.10)
def slow20():
    return _make(1.20)
def slow100():
    return _make(2.0)
'''

SETTINGS = "warmup: 0.2s, min_duration: 0.5s, max_duration: 1s, min_queries: 100"
GATE = '{p50: "+5%", throughput: "-5%"}'
CELLS = (("8", "offline"), ("1", "single_stream"))
SLOWDOWNS = {0.05: "slow5", 0.10: "slow10", 0.20: "slow20", 1.00: "slow100"}
HISTORY_SLOWDOWNS = (0.05, 0.10, 0.20, 1.00)
VERDICTS = ("regression", "undetermined", "no change", "improvement")


REFERENCE_AB = ('ab: {reference: true, rounds: 10, slice: 0.1s, '
                'baseline: {model: "gq_models:ref"}}')


def stored_suite(reference: bool = False) -> str:
    lines = ["name: gq", f"defaults: {{{SETTINGS}}}", "benchmarks:"]
    for cell in CELLS:
        lines += ["  - model: \"gq_models:current\"", "    runtime: torch", "    threads: 1",
                  f"    batch_size: {cell[0]}", f"    workload: {cell[1]}", f"    gate: {GATE}"]
        if reference:
            lines += [*lines[-6:], f"    {REFERENCE_AB}"]     # the same cell, as a pair
    return "\n".join(lines) + "\n"


# Open loop (--open): single queries at a Poisson rate, in this process and behind a launched
# FastAPI server; gated on p50 only (the rate is offered, so throughput is not a measurement).
OPEN_RATE = 100
OPEN_CELLS = (("inprocess", "server-inprocess"), ("http", "server-http"))
OPEN_GATE = '{p50: "+5%"}'


def paired_suite(candidate: str, rounds: int, max_rounds: int, slice_s: float,
                 open_loop: bool = False, processes: int = 0) -> str:
    lines = ["name: gqp", f"defaults: {{{SETTINGS}}}", "benchmarks:"]
    base = "baseline: {model: \"gq_models:base\"}"
    if open_loop:
        for serving, _ in OPEN_CELLS:
            lines += [f"  - model: \"gq_models:{candidate}\"", "    runtime: torch",
                      "    threads: 1", f"    gate: {OPEN_GATE}", f"    serving: {serving}",
                      f"    workload: {{scenario: server, rate: {OPEN_RATE}}}",
                      f"    ab: {{rounds: {rounds}, max_rounds: {max_rounds}, slice: {slice_s}s, "
                      f"switch: {slice_s / 4:g}s, {base}}}"]
        return "\n".join(lines) + "\n"
    pairs = [f"    processes: {processes}"] if processes else []
    cap = f"max_processes: {2 * processes}" if processes else f"max_rounds: {max_rounds}"
    for cell in CELLS:
        lines += [f"  - model: \"gq_models:{candidate}\"", "    runtime: torch", "    threads: 1",
                  f"    gate: {GATE}", *pairs,
                  f"    ab: {{rounds: {rounds}, {cap}, slice: {slice_s}s, {base}}}",
                  f"    batch_size: {cell[0]}", f"    workload: {cell[1]}"]
    return "\n".join(lines) + "\n"


def _session(work: Path, factor: float, *args) -> dict:
    env = {**os.environ, "GQ_FACTOR": str(factor),
           "PYTHONPATH": os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])}
    out = work / "run.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--infer-no-html",
           "--infer-no-progress", "--infer-json", str(out), "bench_gq.yaml", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if not out.exists():
        raise RuntimeError(f"session failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-2000:]}")
    doc = json.loads(out.read_text())
    doc["returncode"] = proc.returncode
    doc["wall_s"] = round(wall, 1)
    return doc


def _cell_of(entry: dict) -> str:
    return "offline-bs8" if "offline" in entry["cell"] else "single_stream-bs1"


def stored_mode(work: Path, n_aa: int, per: int, repeats: int, log, processes: int = 0,
                slowdowns=tuple(SLOWDOWNS)) -> dict:
    """processes > 0: every session (baseline and trials) measures each cell in that many
    fresh processes (--infer-processes); else the baseline repeats in its one process."""
    (work / "bench_gq.yaml").write_text(stored_suite())
    t0 = time.perf_counter()
    runs = (["--infer-processes", str(processes)] if processes
            else ["--infer-repeat", str(repeats)])
    trial_args = ["--infer-processes", str(processes)] if processes else []
    _session(work, 1.0, "--infer-save", "gq", *runs)
    baseline = json.loads((work / ".inferbench/baselines/gq.json").read_text())
    learnt = {cell: {m: v for m, v in noise.items() if m in ("p50", "throughput")}
              for cell, noise in baseline["baseline"]["noise"].items()}
    log(f"stored: baseline saved with {processes or repeats} "
        f"{'fresh processes' if processes else 'repeats'}; learnt A/A sd: "
        + "; ".join(f"{c.split('::')[-1]}: p50 ±{100 * n['p50']['sd']:.1f}%, throughput "
                    f"±{100 * n['throughput']['sd']:.1f}%" for c, n in learnt.items()))
    trials = []
    plan = [(0.0, n_aa)] + [(s, per) for s in slowdowns]
    for slowdown, count in plan:
        for i in range(count):
            started = time.perf_counter()
            doc = _session(work, 1.0 + slowdown, "--infer-baseline", "gq", *trial_args)
            wall = time.perf_counter() - started
            comparison = doc["comparison"]
            for e in comparison["verdicts"]:
                p50 = next(m for m in e["metrics"] if m["metric"] == "p50")
                trials.append({"slowdown": slowdown, "verdict": e["verdict"],
                               "cell": _cell_of(e), "ratio": p50["ratio"],
                               "exit": doc["returncode"], "wall_s": round(wall, 1)})
            log(f"stored: slowdown {100 * slowdown:g}% #{i + 1}: " + ", ".join(
                f"{t['cell']} {t['verdict']} (p50 x{t['ratio']:.3f})" for t in trials[-2:]))
    return {"trials": trials, "seconds": time.perf_counter() - t0, "learnt": learnt}


def _stored_verdicts(baseline: dict, doc: dict) -> dict:
    """(a) the session judged against the 3-repeat baseline, as the plugin would."""
    from pytest_inferbench.gate.compare import compare_runs
    comparison = compare_runs(baseline, doc)
    return {_cell_of(e): (e["verdict"], _p50(e)) for e in comparison["verdicts"]}


def _p50(entry: dict) -> dict:
    m = next((m for m in entry.get("metrics", []) if m["metric"] == "p50"), {})
    return {"ratio": m.get("ratio"), "reason": m.get("reason")}


def _history_verdicts(doc: dict) -> dict:
    """(b) the plugin's own verdicts (--infer-baseline history); cells it could not judge
    (too short a history) are 'not judged'. A reference pair's cell ends in /ref."""
    comparison = doc.get("comparison") or {}
    out = {_cell_of(e) + ("/ref" if e.get("reference") else ""): (e["verdict"], _p50(e))
           for e in comparison.get("verdicts", [])}
    for item in comparison.get("not_measured", []):
        ref = "/ref" if "its ratio to the reference" in item["reason"] else ""
        out[_cell_of(item) + ref] = ("not judged", {"ratio": None, "reason": item["reason"]})
    return out


def _neighbour():
    """A process keeping one core busy (a CI runner's neighbour), until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _maybe_busy(i: int, every: int):
    """The neighbour for session i when every > 0 and i is one of each `every`."""
    return _neighbour() if every and i % every == every - 1 else None


def _stop(proc) -> None:
    if proc is not None:
        proc.kill()
        proc.wait()


def history_mode(work: Path, n_hist: int, n_aa: int, per: int, log, neighbour_every: int = 0,
                 slowdowns=HISTORY_SLOWDOWNS, processes: int = 0,
                 reference: bool = False) -> dict:
    """neighbour_every K > 0: one of each K history-building and A/A sessions runs beside a
    process keeping one core busy (flagged HOST BUSY by the harness itself). processes P > 0:
    every session measures each cell in P fresh processes (the session value is their mean),
    the stored baseline too (instead of 3 repeats in one process)."""
    import shutil

    from pytest_inferbench.history.trends import series
    from pytest_inferbench.store.db import ResultStore
    (work / "bench_gq.yaml").write_text(stored_suite(reference))
    t0 = time.perf_counter()
    store = work / "aa.db"
    extra = ["--infer-processes", str(processes)] if processes else []
    _session(work, 1.0, "--infer-save", "gq3", *(extra or ["--infer-repeat", "3"]),
             "--infer-store", str(store))
    baseline = json.loads((work / ".inferbench/baselines/gq3.json").read_text())
    busy = 0
    for i in range(n_hist):
        neighbour = _maybe_busy(i, neighbour_every)
        try:
            _session(work, 1.0, "--infer-store", str(store), *extra)
        finally:
            _stop(neighbour)
        busy += neighbour is not None
    log(f"history: baseline with {f'{processes} processes' if processes else '3 repeats'} and "
        f"{n_hist} A/A sessions recorded ({busy} beside a busy neighbour)")
    trials = []

    def judge(doc, slowdown):
        stored = _stored_verdicts(baseline, doc)
        hist = _history_verdicts(doc)
        none = ("missing", {"ratio": None, "reason": None})
        stored.update({c: ("n/a", {"ratio": None, "reason": None}) for c in hist
                       if c.endswith("/ref")})
        for cell in sorted(stored):
            h = hist.get(cell, none)
            trials.append({"slowdown": slowdown, "cell": cell, "stored": stored[cell][0],
                           "history": h[0], "stored_p50": stored[cell][1],
                           "history_p50": h[1], "wall_s": doc.get("wall_s"),
                           "busy": doc.get("busy", False)})
        return ", ".join(f"{c}: stored {stored[c][0]} (p50 x{stored[c][1]['ratio'] or 0:.3f}), "
                         f"history {hist.get(c, none)[0]} "
                         f"(p50 x{hist.get(c, none)[1]['ratio'] or 0:.3f})" for c in sorted(stored))

    for i in range(n_aa):
        neighbour = _maybe_busy(i, neighbour_every)
        try:
            doc = _session(work, 1.0, "--infer-baseline", "history", "--infer-store",
                           str(store), *extra)
            doc["busy"] = neighbour is not None
        finally:
            _stop(neighbour)
        log(f"history: A/A #{i + 1}{' (busy neighbour)' if neighbour else ''}: "
            f"{judge(doc, 0.0)}")
    steps = []
    for slowdown in slowdowns:
        copy = work / f"slow{round(slowdown * 100)}.db"
        shutil.copy(store, copy)
        for i in range(per):
            doc = _session(work, 1.0 + slowdown, "--infer-baseline", "history",
                           "--infer-store", str(copy), *extra)
            log(f"history: +{100 * slowdown:g}% #{i + 1}: {judge(doc, slowdown)}")
        db = ResultStore.open(f"sqlite:///{copy}")
        try:
            found = series(db.series())
        finally:
            db.close()
        for s in found:
            first_slow = len(s.runs) - per
            p50 = [st for st in s.steps if st.metric == "p50_ms"]
            at = [st.index for st in p50 if st.index >= first_slow - 1]
            steps.append({"slowdown": slowdown, "cell": _cell_of({"cell": s.cell}),
                          "runs": len(s.runs), "step_at": first_slow,
                          "found": at, "false": [st.index for st in p50
                                                 if st.index < first_slow - 1],
                          "located": any(abs(a - first_slow) <= 1 for a in at)})
            log(f"changes: +{100 * slowdown:g}% {steps[-1]['cell']}: p50 change points at "
                f"{[st.index for st in p50]} (step at {first_slow})")
    return {"trials": trials, "steps": steps, "seconds": time.perf_counter() - t0,
            "sessions": 1 + n_hist + n_aa + per * len(slowdowns)}


def _history_table(result: dict) -> None:
    pairs = [t for t in result["trials"] if t["cell"].endswith("/ref")]
    _history_table_of(dict(result, trials=[t for t in result["trials"] if t not in pairs]))
    if pairs:
        print("\nThe same sessions' reference pairs (each cell against a fixed model of half "
              "its layers, measured alongside): (b) judged on the ratio's history")
        _history_table_of(dict(result, trials=pairs, steps=[]), reference=True)


def _history_table_of(result: dict, reference: bool = False) -> None:
    rows = []
    for slowdown in sorted({t["slowdown"] for t in result["trials"]}):
        ts = [t for t in result["trials"] if t["slowdown"] == slowdown]
        what = "A/A" if slowdown == 0 else f"+{100 * slowdown:g}%"
        row = [what, len(ts)] + (["-"] if reference else [])  # no stored verdict for a pair
        for mode in ("history",) if reference else ("stored", "history"):
            reg = sum(1 for t in ts if t[mode] == "regression")
            und = sum(1 for t in ts if t[mode] in ("undetermined", "not judged"))
            row.append(f"{'FP' if slowdown == 0 else 'caught'} {reg}/{len(ts)} (undet. {und})")
        st = [s for s in result["steps"] if s["slowdown"] == slowdown]
        if reference:
            row.append("-")
        elif slowdown == 0:
            false = sum(len(s["false"]) for s in result["steps"])
            row.append(f"false change points in A/A parts: {false}")
        else:
            row.append(f"located {sum(s['located'] for s in st)}/{len(st)} "
                       f"(found at {[s['found'] for s in st]}, step at "
                       f"{sorted({s['step_at'] for s in st})})")
        rows.append(row)
    print(table(["change", "trials", "(a) stored, 3 repeats", "(b) history",
                 "(c) change points (p50)"], rows, left=2))
    t = result["trials"]
    fp = sum(1 for x in t if x["slowdown"] == 0 and x["history"] == "regression")
    big = [x for x in t if x["slowdown"] == 1.0]
    s20 = [x for x in t if x["slowdown"] == 0.20]
    c20 = sum(1 for x in s20 if x["history"] == "regression")
    located = all(s["located"] for s in result["steps"])
    print(f"history: false positives {fp} (target 0) -> {'met' if fp == 0 else 'NOT MET'}")
    caught = sum(1 for x in big if x["history"] == "regression")
    if big:                     # only the slowdowns this run injected
        print(f"history: 2x caught {caught}/{len(big)} (target all) -> "
              f"{'met' if caught == len(big) else 'NOT MET'}")
    if s20:
        print(f"history: 20% caught {c20}/{len(s20)} (target >= 90%) -> "
              f"{'met' if c20 >= 0.9 * len(s20) else 'NOT MET'}")
    for x in sorted({y["slowdown"] for y in t if 0 < y["slowdown"] < 0.2}):
        got = [y for y in t if y["slowdown"] == x]
        print(f"history: +{x:.1%} caught {sum(1 for y in got if y['history'] == 'regression')}"
              f"/{len(got)}")
    if not reference:
        print(f"change points: every injected step located within one run -> "
              f"{'met' if located else 'NOT MET'}")
    if reference:
        quiet = [dict(x, ratio=x["history_p50"]["ratio"]) for x in t if not x.get("busy")
                 and x["history_p50"]["ratio"]]
        print(_session_sd(quiet).replace("stored: ", "ratio against its history (quiet A/A "
                                                     "sessions): "))
        return
    quiet = [dict(x, ratio=x["stored_p50"]["ratio"]) for x in t if not x.get("busy")]
    print(_session_sd(quiet).replace("stored: ", "history (quiet A/A sessions): "))
    print(f"time: {result['seconds']:.0f} s for {result['sessions']} sessions")


def _paired_cell_name(cell) -> str:
    if cell.workload.scenario == "server":
        return dict(OPEN_CELLS)[cell.serving.system]
    return "offline-bs8" if cell.batch_size == 8 else "single_stream-bs1"


def paired_mode(work: Path, n_aa: int, per: int, rounds: int, max_rounds: int,
                slice_s: float, log, open_loop: bool = False, processes: int = 0,
                slowdowns=tuple(SLOWDOWNS)) -> dict:
    from pytest_inferbench.models.cache import ArtifactCache
    from pytest_inferbench.run.cell import run_cell
    from pytest_inferbench.spec import load_spec
    sys.path.insert(0, str(work))
    # launched servers (the --open cells behind FastAPI) import the model factory too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(work), os.environ.get("PYTHONPATH")) if p)
    cache = ArtifactCache(work / ".inferbench/cache")
    trials = []
    t0 = time.perf_counter()
    plan = [(0.0, n_aa)] + [(s, per) for s in slowdowns]
    for slowdown, count in plan:
        candidate = SLOWDOWNS[slowdown] if slowdown else "base"
        spec = work / "bench_gqp.yaml"
        spec.write_text(paired_suite(candidate, rounds, max_rounds, slice_s, open_loop,
                                     processes))
        for i in range(count):
            for cell in load_spec(spec):
                started = time.perf_counter()
                result = run_cell(cell, cache)
                ab = result.ab
                p50 = next(m for m in ab["metrics"] if m["metric"] == "p50")
                trials.append({"slowdown": slowdown, "verdict": ab["verdict"],
                               "cell": _paired_cell_name(cell),
                               "ratio": p50["ratio"], "rounds": ab["rounds"],
                               "round_sd": p50.get("round_sd"),
                               "valid": result.valid, "status": result.status,
                               "pairs": len(ab["pairs"] or []),
                               "wall_s": round(time.perf_counter() - started, 1)})
            log(f"paired: slowdown {100 * slowdown:g}% #{i + 1}: " + ", ".join(
                f"{t['cell']} {t['verdict']} (p50 x{t['ratio']:.3f}, {t['rounds']} rounds)"
                for t in trials[-2:]))
    return {"trials": trials, "seconds": time.perf_counter() - t0}


def _rows(mode: str, result: dict) -> list:
    rows = []
    trials = result["trials"]
    for slowdown in sorted({t["slowdown"] for t in trials}):
        ts = [t for t in trials if t["slowdown"] == slowdown]
        if not ts:
            continue
        counts = {v: sum(1 for t in ts if t["verdict"] == v) for v in VERDICTS}
        ratios = [t["ratio"] for t in ts if t["ratio"]]
        what = "A/A" if slowdown == 0 else f"+{100 * slowdown:g}%"
        if slowdown == 0:
            rate = f"FP {counts['regression']}/{len(ts)}, FI {counts['improvement']}"
        else:
            rate = f"detected {counts['regression']}/{len(ts)}"
        spread = (f"x{min(ratios):.3f} .. x{max(ratios):.3f}" if ratios else "-")
        extra = ""
        if mode == "paired":
            rounds = [t["rounds"] for t in ts]
            pairs = [t.get("pairs") or 0 for t in ts]
            walls = [t["wall_s"] for t in ts if t.get("wall_s")]
            extra = (f"{min(rounds)}-{max(rounds)}"
                     + (f" ({min(pairs)}-{max(pairs)} pairs)" if max(pairs) else "")
                     + (f", {min(walls):.0f}-{max(walls):.0f} s" if walls else ""))
        rows.append([mode, what, len(ts), rate, counts["regression"], counts["undetermined"],
                     counts["no change"], counts["improvement"], spread, extra])
    return rows


def _targets(stored: dict | None, paired: dict | None) -> list[str]:
    out = []
    if stored:
        t = stored["trials"]
        fp = sum(1 for x in t if x["slowdown"] == 0 and x["verdict"] == "regression")
        wrong_pass = sum(1 for x in t if x["slowdown"] >= 0.10 and x["verdict"] == "no change")
        out.append(f"stored: false positives {fp} (target 0) -> {'met' if fp == 0 else 'NOT MET'}")
        out.append(f"stored: 10%/20% slowdowns passed as 'no change' {wrong_pass} (target 0) -> "
                   f"{'met' if wrong_pass == 0 else 'NOT MET'}")
    if paired:
        t = paired["trials"]
        fp = sum(1 for x in t if x["slowdown"] == 0 and x["verdict"] == "regression")
        big = [x for x in t if x["slowdown"] >= 0.10]
        caught = sum(1 for x in big if x["verdict"] == "regression")
        out.append(f"paired: false positives {fp} (target 0) -> {'met' if fp == 0 else 'NOT MET'}")
        out.append(f"paired: 10%/20% slowdowns caught {caught}/{len(big)} (target all) -> "
                   f"{'met' if caught == len(big) else 'NOT MET'}")
    return out


def _session_sd(trials: list[dict]) -> str:
    """The session-to-session sd of the session value: the spread of the A/A sessions' p50
    ratios to the one baseline (its own offset is common to all), per cell, and the wall
    time of a session."""
    import math
    import statistics
    parts = []
    for cell in sorted({t["cell"] for t in trials}):
        logs = [math.log(t["ratio"]) for t in trials
                if t["cell"] == cell and t["slowdown"] == 0 and t["ratio"]]
        if len(logs) > 1:
            parts.append(f"{cell} ±{100 * math.expm1(statistics.stdev(logs)):.1f}% "
                         f"({len(logs)} sessions)")
    walls = sorted({t["wall_s"] for t in trials if t.get("wall_s")})
    wall = f"; session wall {walls[0]:.0f}-{walls[-1]:.0f} s" if walls else ""
    return "stored: session-to-session sd of the p50 (A/A): " + "; ".join(parts) + wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--aa", type=int, default=10, help="A/A runs per mode (default 10)")
    ap.add_argument("--per-slowdown", type=int, default=3,
                    help="runs per injected slowdown per mode (default 3)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="repeats of the stored baseline's session (default 5)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--slice", type=float, default=None,
                    help="seconds per side per round (default 0.1; --open: 1)")
    ap.add_argument("--mode", choices=("both", "stored", "paired", "history"), default="both")
    ap.add_argument("--history", type=int, default=15,
                    help="history mode: A/A sessions that build the history (default 15)")
    ap.add_argument("--open", action="store_true",
                    help=f"paired mode on open-loop cells (server scenario at {OPEN_RATE}/s, "
                         f"in-process and behind FastAPI) instead of the closed-loop ones; "
                         f"--slice then defaults to 1 s in 4 sub-slices")
    ap.add_argument("--processes", type=int, default=0,
                    help="stored and history modes: every session measures each cell in N "
                         "fresh processes (--infer-processes N) instead of a baseline with "
                         "repeats; paired mode: N pairs of fresh processes per trial "
                         "(`processes: N`, --rounds rounds per pair, up to 2 N pairs)")
    ap.add_argument("--slowdowns", default=None,
                    help="injected slowdowns, fractions (default: stored 0.05,0.10,0.20; "
                         "history 0.05,0.10,0.20,1.0)")
    ap.add_argument("--neighbour-every", type=int, default=0, metavar="K",
                    help="history mode: one of each K history-building and A/A sessions "
                         "beside a process keeping one core busy")
    ap.add_argument("--base-reps", type=int, default=20,
                    help="layers of the model (default 20): a slowdown is rounded to whole "
                         "layers, so +12.5%% needs 40")
    ap.add_argument("--reference", action="store_true",
                    help="history mode: each cell also as a reference pair (ab.reference) "
                         "against a fixed model of half its layers, judged on its ratio")
    ap.add_argument("--json", default=None, help="write every trial here")
    args = ap.parse_args(argv)

    def log(text):
        print(text, flush=True)

    os.environ["GQ_BASE"] = str(args.base_reps)     # the sessions' models read it

    if args.mode == "history":
        with tempfile.TemporaryDirectory(prefix="gate-quality-") as tmp:
            work = Path(tmp)
            (work / "gq_models.py").write_text(MODELS)
            result = history_mode(work, args.history, args.aa, args.per_slowdown, log,
                                  args.neighbour_every,
                                  tuple(float(x) for x in (args.slowdowns or
                                        ",".join(map(str, HISTORY_SLOWDOWNS))).split(",")),
                                  args.processes, args.reference)
        print()
        print("Gate p50 +5%, throughput -5% at 95% confidence; each trial is one cell of the "
              "two (offline bs8, single-stream bs1) in one session")
        _history_table(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="gate-quality-") as tmp:
        work = Path(tmp)
        (work / "gq_models.py").write_text(MODELS)
        stored = paired = None
        if args.mode in ("both", "paired"):
            slice_s = args.slice if args.slice is not None else (1.0 if args.open else 0.1)
            paired = paired_mode(work, args.aa, args.per_slowdown, args.rounds, args.max_rounds,
                                 slice_s, log, args.open, args.processes,
                                 tuple(float(x) for x in (args.slowdowns
                                                          or "0.05,0.10,0.20").split(",")))
        if args.mode in ("both", "stored") and not args.open:
            stored = stored_mode(work, args.aa, args.per_slowdown, args.repeats, log,
                                 args.processes,
                                 tuple(float(x) for x in (args.slowdowns
                                                          or "0.05,0.10,0.20").split(",")))
    rows = []
    if paired:
        rows += _rows("paired", paired)
    if stored:
        rows += _rows("stored", stored)
    print()
    if args.open:
        print(f"Gate p50 +5% at 95% confidence; each trial is one cell of the two (server "
              f"scenario, Poisson {OPEN_RATE}/s, bs1: in-process, behind FastAPI); "
              f"invalid (send lag) trials: "
              f"{sum(1 for t in paired['trials'] if not t['valid'])}/{len(paired['trials'])}")
    else:
        print("Gate p50 +5%, throughput -5% at 95% confidence; each trial is one cell of the "
              "two (offline bs8, single-stream bs1)")
    print(table(["mode", "change", "trials", "rate", "regression", "undetermined", "no change",
                 "improvement", "p50 ratio range", "rounds"], rows, left=2))
    if stored:
        print("stored: A/A noise learnt from the baseline's repeats (run-to-run sd): " + "; ".join(
            f"{c.split('::')[-1]} p50 ±{100 * n['p50']['sd']:.1f}% throughput "
            f"±{100 * n['throughput']['sd']:.1f}%" for c, n in stored["learnt"].items()))
    if paired:
        aa = [t for t in paired["trials"] if t["slowdown"] == 0]
        sds = [t["round_sd"] for t in aa if t.get("round_sd") is not None]
        if sds:
            print(f"paired: A/A round-to-round sd of the p50 ratio {100 * min(sds):.1f}% .. "
                  f"{100 * max(sds):.1f}% (median {100 * sorted(sds)[len(sds) // 2]:.1f}%)")
    if stored:
        print(_session_sd(stored["trials"]))
    for line in _targets(stored, paired):
        print(line)
    secs = (stored or {}).get("seconds", 0) + (paired or {}).get("seconds", 0)
    print(f"time: {secs:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"stored": stored, "paired": paired}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
