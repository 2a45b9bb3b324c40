"""Do benchmarks placed in parallel disturb each other? One small CPU suite, run four ways:
alone (serial, twice: the run-to-run noise), under plain pytest-xdist (`-n 2 --dist
worksteal`, no device leases: cells run side by side), and under the two-tier scheduler
(`-n 2`). Prints each cell's p50 and its change against the first serial run, and the CPU
other processes used during each cell's window (the interference itself, which does not
depend on this machine's run-to-run noise: between two serial runs a small CPU cell's p50
moves by tens of percent here).

    python benchmarks/interference.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name: interference
defaults: {{warmup: 0.5s, min_duration: {s}s, max_duration: {s}s, min_queries: 50, ci_width: 0.01}}
benchmarks:
  - model: [resnet-tiny, mlp-small]
    runtime: [onnxruntime, torch]
    batch_size: [1, 8]
    workload: single_stream
"""

WAYS = [("alone", []), ("alone again", []),
        ("xdist -n 2 (worksteal)", ["-n", "2", "--dist", "worksteal", "--infer-no-leases"]),
        ("two-tier -n 2", ["-n", "2"])]


def run(tmp: Path, args: list[str]) -> tuple[dict[str, float], float, dict[str, float]]:
    out = tmp / f"run-{time.monotonic_ns()}.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "bench_interference.yaml", "-q",
                    "-p", "no:cacheprovider", "--infer-no-html", "--infer-json", str(out),
                    *args], cwd=tmp, check=False, capture_output=True)
    wall = time.perf_counter() - t0
    doc = json.loads(out.read_text())
    passed = [r for r in doc["results"] if r["status"] == "passed"]
    # CPU the other processes used during each cell's window: the interference itself
    return ({r["id"].split("::")[1]: r["latency_ms"]["percentiles"]["p50"]["value"]
             for r in passed}, wall,
            {r["id"].split("::")[1]: r["process"].get("other_cpu_cores") or 0.0 for r in passed})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bench_interference.yaml").write_text(SPEC.format(s=args.seconds))
        subprocess.run([sys.executable, "-m", "pytest", "bench_interference.yaml", "-q",
                        "-p", "no:cacheprovider", "--infer-no-html", "--collect-only"],
                       cwd=tmp, capture_output=True)
        results, others = {}, {}
        for name, extra in WAYS:
            results[name], wall, others[name] = run(tmp, extra)
            o = others[name].values()
            print(f"{name}: {len(results[name])} cells in {wall:.0f} s; other processes used "
                  f"{max(o):.2f} cores at most (mean {sum(o) / len(o):.2f}) during a cell's "
                  f"window", flush=True)
    base = results["alone"]
    names = [w for w, _ in WAYS]
    print(f"\n{'cell':<48}" + "".join(f"{n:>26}" for n in names))
    worst = {n: 0.0 for n in names}
    for cell in sorted(base):
        row = f"{cell:<48}"
        for n in names:
            v = results[n].get(cell)
            if v is None:
                row += f"{'-':>26}"
                continue
            change = v / base[cell] - 1
            worst[n] = max(worst[n], abs(change))
            row += f"{v:>14.4f} ms {100 * change:>+7.1f}%"
        print(row)
    print("\nlargest |change| against the first serial run: "
          + ", ".join(f"{n}: {100 * worst[n]:.1f}%" for n in names[1:]))


if __name__ == "__main__":
    main()
