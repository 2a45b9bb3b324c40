"""Serving comparison on one CPU model: in-process vs FastAPI vs Triton (dynamic batching on
and off) at a few Poisson rates, from suites/serving.yaml. Prints the table a user would read
to choose: achieved rate, p50/p99, the SLO verdict, and Triton's queue/compute split.

    python benchmarks/serving_comparison.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "run.json")
        subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites/serving.yaml"),
                        "--infer-config", str(ROOT / "suites/serving.yaml"), "-q",
                        "-p", "no:cacheprovider", "--infer-json", str(out)], cwd=ROOT,
                       check=False)
        results = json.loads(out.read_text())["results"]
    rows = []
    for r in results:
        cell = r.get("cell") or {}
        serving = cell.get("serving", {})
        name = serving.get("system", "?")
        if name == "triton":
            name += " db" if serving.get("dynamic_batching", True) else " no-db"
        if r["status"] != "passed":
            rows.append((name, cell["workload"].get("rate"), r["status"], "", "", "", "", ""))
            continue
        lat, load = r["latency_ms"], r.get("load") or {}
        b = (r.get("serving") or {}).get("breakdown") or {}
        rows.append((name, load.get("target_rate"), f"{load.get('achieved_rate') or 0:,.0f}",
                     f"{lat['percentiles']['p50']['value']:.3f}",
                     f"{lat['percentiles']['p99']['value']:.3f}",
                     (r.get("slo") or {}).get("verdict", "-") + ("" if r.get("valid", True)
                                                                 else " (invalid)"),
                     f"{b['queue_ms']:.3f}/{b['compute_ms']:.3f}" if b else "-",
                     f"{b['avg_batch']:.2f}" if b.get("avg_batch") else "-"))
    rows.sort(key=lambda x: (x[1] or 0, x[0]))
    head = ("serving", "rate/s", "achieved/s", "p50 ms", "p99 ms", "slo p99<=20ms",
            "queue/compute ms", "avg batch")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    main()
