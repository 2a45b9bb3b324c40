"""Closed loop against one Triton: the harness's `concurrency` scenario vs perf_analyzer's
--concurrency-range, in interleaved rounds, over HTTP and gRPC (issue 27's target:
throughput >= 1.0x).

    python benchmarks/closed_loop_vs_perf_analyzer.py --perf-analyzer /path/to/perf_analyzer

One Triton (PyTriton, the harness's own server module) serves the model on one core; both
clients run on the other (taskset), one at a time. A round is one fresh run of each tool
against the already-warm server: the harness as a user runs it (pytest with an `endpoint`
spec, fixed window), perf_analyzer with three windows of a third of the window each and no
stability requirement (what it reports is their merge). The order alternates pair by pair
(_paired.interleave). Per configuration it prints the throughput ratio harness /
perf_analyzer with its 95% bootstrap CI over pairs, each tool's p50, and the client's CPU per
query: the harness's from its result (the process's cores over the window / its rate),
perf_analyzer's from its rusage over its three windows (its start-up included, so slightly
high).

perf_analyzer 2.60's wheel needs glibc 2.38; ../shared/DESIGN.md says how to run it here
(a wrapper script that starts the binary through a newer ld-linux is fine as --perf-analyzer).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _paired

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "closed-loop-bench"
PORTS = {"http": 18100, "grpc": 18101, "metrics": 18102}


def start_triton(model: str, tmp: Path, core: str) -> subprocess.Popen:
    from pytest_inferbench.spec.loading import load_spec
    spec = tmp / "server.yaml"
    spec.write_text(f"name: server\nbenchmarks:\n  - {{model: {model}, runtime: onnxruntime, "
                    "batch_size: 1, serving: {system: triton, dynamic_batching: false}}\n")
    cell = tmp / "cell.json"
    cell.write_text(json.dumps(load_spec(spec)[0].model_dump(mode="json")))
    env = {**os.environ, "INFERBENCH_TRITON_TOKEN": TOKEN}
    argv = ["taskset", "-c", core, sys.executable, "-m",
            "pytest_inferbench.serving.triton_server", str(cell), str(tmp / "cache"),
            *(str(PORTS[k]) for k in ("http", "grpc", "metrics"))]
    proc = subprocess.Popen(argv, env=env, stdout=open(tmp / "triton.log", "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{PORTS['http']}/v2/models/model/ready"
    for _ in range(240):
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit(f"Triton did not become ready; see {tmp / 'triton.log'}")


def harness_round(protocol: str, concurrency: int, window: float, tmp: Path, core: str):
    header = "triton-access-token" if protocol == "http" else \
        "triton-grpc-protocol-triton-access-token"
    spec = tmp / f"h-{protocol}-{concurrency}.yaml"
    spec.write_text(
        f"name: h\ndefaults: {{warmup: 50, min_duration: {window}s, max_duration: {window}s}}\n"
        "benchmarks:\n  - batch_size: 1\n"
        f"    workload: {{scenario: concurrency, concurrency: {concurrency}}}\n"
        f"    serving: {{system: endpoint, url: '127.0.0.1:{PORTS[protocol]}', model: model, "
        f"protocol: {protocol}, headers: {{{header}: {TOKEN}}}}}\n")
    out = tmp / "h.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(["taskset", "-c", core, sys.executable, "-m", "pytest", str(spec),
                    "--infer-config", str(spec), "-q", "-p", "no:cacheprovider",
                    "--infer-json", str(out)], cwd=tmp, capture_output=True, text=True)
    if not out.exists():
        sys.exit(f"the harness wrote no results:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    r = json.loads(out.read_text())["results"][0]
    if r["status"] != "passed":
        sys.exit(f"harness round {r['status']}: {r.get('reason')}")
    qps = r["throughput"]["queries_per_s"]
    return {"qps": qps, "p50": r["latency_ms"]["percentiles"]["p50"]["value"],
            "cpu_ms": 1e3 * r["process"]["cpu_cores_used"] / qps}


def pa_round(pa: str, protocol: str, concurrency: int, window: float, tmp: Path, core: str):
    header = "triton-access-token" if protocol == "http" else \
        "triton-grpc-protocol-triton-access-token"
    out = tmp / "pa.csv"
    out.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["taskset", "-c", core, pa, "-m", "model", "-i", protocol,
                    "-u", f"127.0.0.1:{PORTS[protocol]}",
                    "--concurrency-range", f"{concurrency}:{concurrency}",
                    "-p", str(int(window * 1000 / 3)), "--max-trials", "3",
                    "--stability-percentage", "999", "-H", f"{header}:{TOKEN}",
                    "-f", str(out)], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = next(csv.DictReader(out.open()))
    qps = float(row["Inferences/Second"])
    return {"qps": qps, "p50": float(row["p50 latency"]) / 1e3,
            "cpu_ms": 1e3 * cpu / (qps * window)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perf-analyzer", required=True, help="perf_analyzer binary or wrapper")
    ap.add_argument("--model", default="mlp-tiny", help="a preset served by Triton")
    ap.add_argument("--protocols", default="http,grpc")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--window", type=float, default=3.0, help="seconds per round and tool")
    ap.add_argument("--server-core", default="1")
    ap.add_argument("--client-core", default="0")
    args = ap.parse_args()
    target = _paired.Target(lo=1.0)
    with tempfile.TemporaryDirectory(prefix="clpa-") as name:
        tmp = Path(name)
        server = start_triton(args.model, tmp, args.server_core)
        try:
            for protocol in args.protocols.split(","):
                for conc in map(int, args.concurrency.split(",")):
                    def ours(protocol=protocol, conc=conc):
                        return harness_round(protocol, conc, args.window, tmp, args.client_core)

                    def theirs(protocol=protocol, conc=conc):
                        return pa_round(args.perf_analyzer, protocol, conc, args.window, tmp,
                                        args.client_core)
                    pairs = _paired.interleave(ours, theirs, args.pairs)
                    report(f"{args.model} {protocol} concurrency {conc}", pairs, target)
        finally:
            server.terminate()
            server.wait(30)


def report(name: str, pairs: _paired.Pairs, target: _paired.Target) -> None:
    est = _paired.ratio_estimate(pairs.ratios("qps", "qps"))
    print(_paired.summary_line(f"{name}: throughput harness/perf_analyzer", est, target))
    for side, label in (("a", "harness"), ("b", "perf_analyzer")):
        qps, p50, cpu = (pairs.side(side, k) for k in ("qps", "p50", "cpu_ms"))
        print(f"    {label:14s} {qps.mean():8.1f} queries/s (min {qps.min():.1f}, max "
              f"{qps.max():.1f})  p50 {sorted(p50)[len(p50) // 2]:.3f} ms  client CPU "
              f"{cpu.mean():.3f} ms/query")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
