"""Do benchmarks placed in parallel disturb each other? One small CPU suite, run three ways
in rotating rounds: alone (serial), under plain pytest-xdist (`-n 2 --dist worksteal`, no
device leases: cells run side by side) and under the two-tier scheduler (`-n 2`).

    python benchmarks/interference.py [--rounds 5] [--seconds 2]

Why rounds: between two serial sessions a small CPU cell's p50 moves by tens of percent on
this shared 2-core machine, so one run of each way proves nothing about a 5% claim. Each
round runs the three ways one after another, the order rotating from round to round, and
each way's p50 per cell is divided by the same round's serial p50: the per-round ratios
cancel the slow drift of the machine. Per cell and pooled over cells (the geometric mean of
the cells' ratios in a round is one observation per round), the script prints the geometric
mean ratio over rounds with a Student t 95% interval on the mean log ratio (rounds are the
independent units; with a handful of rounds a bootstrap would understate the interval).

Claim (issue 8): under the two-tier scheduler every cell stays within 5% of its isolated
figure. Verdict on the pooled ratio: "holds" when the whole interval lies in [0.95, 1.05],
"fails" when it lies outside, else "too noisy to tell". Per cell the same verdicts are
printed. Also printed: the CPU other processes used during each cell's measured window (the
interference itself, independent of the machine's noise).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _paired import table  # noqa: E402

SPEC = """
name: interference
defaults: {{warmup: 0.5s, min_duration: {s}s, max_duration: {s}s, min_queries: 50, ci_width: 0.01}}
benchmarks:
  - model: [resnet-tiny, mlp-small]
    runtime: [onnxruntime, torch]
    batch_size: [1, 8]
    workload: single_stream
"""

ALONE, XDIST, TWO_TIER = "alone", "xdist -n 2 worksteal", "two-tier -n 2"
WAYS = {ALONE: [], XDIST: ["-n", "2", "--dist", "worksteal", "--infer-no-leases"],
        TWO_TIER: ["-n", "2"]}
TARGET = (0.95, 1.05)


def run(tmp: Path, args: list[str]) -> tuple[dict[str, float], float, dict[str, float]]:
    """One pytest session: (p50 ms per cell, wall s, other processes' cores per cell)."""
    out = tmp / f"run-{time.monotonic_ns()}.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "bench_interference.yaml", "-q",
                    "-p", "no:cacheprovider", "--infer-no-html", "--infer-json", str(out),
                    *args], cwd=tmp, check=False, capture_output=True)
    wall = time.perf_counter() - t0
    doc = json.loads(out.read_text())
    passed = [r for r in doc["results"] if r["status"] == "passed"]
    return ({r["id"].split("::")[1]: r["latency_ms"]["percentiles"]["p50"]["value"]
             for r in passed}, wall,
            {r["id"].split("::")[1]: r["process"].get("other_cpu_cores") or 0.0 for r in passed})


def t_interval(ratios, confidence=0.95) -> tuple[float, float, float]:
    """Geometric mean of ratios and the Student t interval of the mean log ratio."""
    logs = np.log(np.asarray(ratios, dtype=float))
    m = float(logs.mean())
    if len(logs) < 2:
        return math.exp(m), math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(logs) - 1) * logs.std(ddof=1)
                 / math.sqrt(len(logs)))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def verdict(lo: float, hi: float) -> str:
    if not (lo == lo and hi == hi):
        return "-"
    if TARGET[0] <= lo and hi <= TARGET[1]:
        return "holds"
    if hi < TARGET[0] or lo > TARGET[1]:
        return "fails"
    return "too noisy to tell"


def fmt(est) -> str:
    r, lo, hi = est
    return f"x{r:.3f} [{lo:.3f}, {hi:.3f}]" if lo == lo else f"x{r:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per cell")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    names = list(WAYS)
    p50 = {n: [] for n in names}          # per round: {cell: p50}
    other = {n: [] for n in names}        # per round: {cell: other cores}
    walls = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bench_interference.yaml").write_text(SPEC.format(s=args.seconds))
        run(tmp, [])                       # conversions cached, imports warm: not a round
        for i in range(args.rounds):
            order = names[i % 3:] + names[:i % 3]
            for n in order:
                cells, wall, others = run(tmp, WAYS[n])
                p50[n].append(cells)
                other[n].append(others)
                walls[n].append(wall)
            print(f"round {i + 1}/{args.rounds} ({' -> '.join(order)}): " + ", ".join(
                f"{n} {walls[n][-1]:.0f} s" for n in names), flush=True)

    cells = sorted(set.intersection(*(set(r) for n in names for r in p50[n])))
    print(f"\n{len(cells)} cells, {args.rounds} rounds, {args.seconds:g} s measured per cell; "
          f"ratio = the way's p50 / the same round's serial p50 (geometric mean over rounds, "
          f"Student t 95% interval)")
    rows = []
    for cell in cells:
        row = [cell, f"{np.median([r[cell] for r in p50[ALONE]]):.4f}"]
        for n in (XDIST, TWO_TIER):
            est = t_interval([p50[n][k][cell] / p50[ALONE][k][cell] for k in range(args.rounds)])
            row += [fmt(est), verdict(est[1], est[2]) if n == TWO_TIER else ""]
        rows.append(row)
    print(table(["cell", "alone p50 ms (median)", XDIST, "", TWO_TIER, "within 5%?"], rows))

    print("\npooled over cells (per round: the geometric mean of the cells' ratios):")
    for n in (XDIST, TWO_TIER):
        per_round = [math.exp(np.mean([math.log(p50[n][k][c] / p50[ALONE][k][c])
                                       for c in cells])) for k in range(args.rounds)]
        est = t_interval(per_round)
        worst = max(abs(p50[n][k][c] / p50[ALONE][k][c] - 1)
                    for c in cells for k in range(args.rounds))
        print(f"  {n}: {fmt(est)} -> {verdict(est[1], est[2])} (target within 5%); "
              f"largest single-cell |change| in a round {100 * worst:.1f}%")
    print("\nCPU used by other processes during a cell's measured window (cores):")
    for n in names:
        v = [x for r in other[n] for x in r.values()]
        print(f"  {n}: mean {np.mean(v):.2f}, max {np.max(v):.2f}; session wall "
              f"{np.median(walls[n]):.0f} s (median)")


if __name__ == "__main__":
    main()
