"""Does the open-loop generator hold its schedule against servers on this host, and does the
capacity search find a known capacity?

Part 1: a small model (mlp-tiny, ONNX Runtime) behind the FastAPI server and behind Triton
(PyTriton, over HTTP and over gRPC), launched by the harness, at 100, 300 and 1,000 queries/s (Poisson): the
generator's send lag (p50, p99), the share of sends over 1 ms late, the latency it reports,
whether the run is valid (with the reason when not), the client's CPU per query, and how
many of the sends over 0.25 ms late fell in stalls of the host that the issuer saw.

Part 2: a system of known capacity (k worker threads, each query a fixed sleep), searched by
the capacity scenario for the highest rate meeting p99 <= SLO, against what queueing theory
(M/D/k, simulated) allows for the measured service time.

    python benchmarks/open_loop_validity.py [--seconds 5] [--repeats 2] [--parts 1,2]
        [--servers http,triton,triton-grpc]

Runs against whichever pytest_inferbench is first on the path (PYTHONPATH=<older checkout>
measures an older version the same way, for a before/after table).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytest_inferbench
from pytest_inferbench.workload.engine import measure_callable
from pytest_inferbench.run.cell import run_cell
from pytest_inferbench.models.cache import ArtifactCache
from pytest_inferbench.spec import Settings, Workload, load_spec

SPEC = """
name: lag
defaults: {{warmup: 50, min_duration: {s}s, max_duration: {s}s, min_queries: 100, ci_width: 1e-9}}
benchmarks:
  - model: mlp-tiny
    runtime: onnxruntime
    workload: {{scenario: server, arrival: poisson, rate: [100, 300, 1000], timeout: 2s}}
    serving: [{serving}]
"""

SERVING = {"http": "http", "triton": "triton", "triton-grpc": "{system: triton, protocol: grpc}"}


def part1(seconds: float, servers: list[str]) -> None:
    print("\n== send lag against launched servers (mlp-tiny, onnxruntime, Poisson) ==")
    print(f"{'server':<12}{'rate':>6}{'sent/s':>9}{'lag p50':>9}{'lag p99':>9}{'late>1ms':>9}"
          f"{'lat p50':>9}{'lat p99':>9}{'n':>7}{'err':>6}{'t/o':>5}  valid")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "bench_lag.yaml")
        spec.write_text(SPEC.format(s=seconds, serving=', '.join(SERVING[s] for s in servers)))
        cache = ArtifactCache(Path(tmp, "cache"))
        try:
            from pytest_inferbench.serving.pool import ServerPool
            pool = ServerPool()
        except ImportError:                 # older versions launch a server per cell
            pool = None
        cells = load_spec(spec)
        if pool is not None:
            from pytest_inferbench.serving.pool import group_by_server
            cells = group_by_server(cells)
        try:
            for cell in cells:
                t0 = time.perf_counter()
                r = run_cell(cell, cache, None, pool) if pool is not None else run_cell(cell, cache)
                load = r.load or {}
                lag = load.get("send_lag_ms") or {}
                why = load.get("invalid_reasons") or ([] if r.valid else
                                                      [f"{100 * load.get('late_fraction', 0):.1f}% "
                                                       f"of sends > 1 ms late"])
                p = r.latency_ms.percentiles
                name = cell.serving.system + ("-grpc" if cell.serving.protocol == "grpc" else "")
                print(f"{name:<12}{cell.workload.rate:>6g}"
                      f"{load.get('achieved_rate') or 0:>9.1f}{lag.get('p50') or 0:>9.3f}"
                      f"{lag.get('p99') or 0:>9.3f}{100 * load.get('late_fraction', 0):>8.1f}%"
                      f"{p['p50'].value if 'p50' in p else 0:>9.3f}"
                      f"{p['p99'].value if 'p99' in p else 0:>9.3f}{r.latency_ms.n:>7}"
                      f"{load.get('errors', 0):>6}{load.get('timeouts', 0):>5}  "
                      f"{'yes' if r.valid else 'NO: ' + '; '.join(why)}"
                      f"  [{time.perf_counter() - t0:.0f}s"
                      f"{', other procs ' + format(r.process.get('other_cpu_cores'), '.2f') + ' cores' if r.process.get('other_cpu_cores') is not None else ''}"
                      f"{', cpus ' + str((r.serving or {}).get('cpu_affinity')) if (r.serving or {}).get('cpu_affinity') else ''}"
                      f"{', client ' + str(_field(r.serving, 'open_loop_client')) if _field(r.serving, 'open_loop_client') else ''}"
                      f"{client_cpu(r, load)}{stalls(load)}]",
                      flush=True)
        finally:
            if pool is not None:
                pool.close()


def _field(section, key):
    """section[key], None where this version has no such field."""
    try:
        return (section or {}).get(key)
    except KeyError:
        return None


def stalls(load) -> str:
    """How many of the sends over 0.25 ms late fell in stretches where the issuer was not
    run while it polled (the host's stalls), where this version records them."""
    held = _field(load, "issuer_stalls")
    if not held:
        return ""
    return (f", late sends in host stalls {held['late_in_stalls']}/{held['late_sends']}"
            f" (stalls {held['count']}, max {held['max_ms']:.2f} ms)")


def client_cpu(r, load) -> str:
    """The client's CPU per query: the measuring process's cores over the window / its
    rate (the server's processes are counted apart)."""
    cores, rate = r.process.get("cpu_cores_used"), load.get("achieved_rate")
    return f", client CPU {1e3 * cores / rate:.3f} ms/query" if cores and rate else ""


def part2(repeats: int, k: int = 4, service: float = 0.002, slo_ms: float = 20.0) -> None:
    print(f"\n== capacity search: {k} instances x {service * 1e3:g} ms, SLO p99 <= {slo_ms:g} ms ==")
    try:
        from pytest_inferbench.workload.queueing import capacity_for_slo, sleep_service_time
        s_eff = sleep_service_time(service, 50)
        truth = capacity_for_slo(k, s_eff, slo_ms / 1e3, 99)
        print(f"measured service time {s_eff * 1e3:.3f} ms: throughput limit {k / s_eff:,.0f}/s, "
              f"M/D/{k} allows {truth:,.0f}/s for p99 <= {slo_ms:g} ms")
    except ImportError:             # an older version: measure the sleep here
        t = time.perf_counter()
        for _ in range(50):
            time.sleep(service)
        s_eff = (time.perf_counter() - t) / 50
        truth = None
        print(f"measured service time {s_eff * 1e3:.3f} ms: throughput limit {k / s_eff:,.0f}/s "
              f"(queueing reference not in this version)")
    new = "step_min_duration" in Workload.model_fields
    # the older search took each step's length from min/max_duration; the newer one bounds
    # the whole search by max_duration and sizes its steps itself
    settings = (Settings(warmup=0, max_duration=120, min_queries=50) if new else
                Settings(warmup=0, min_duration=1, max_duration=8, min_queries=50))
    for i in range(repeats):
        t0 = time.perf_counter()
        r = measure_callable(lambda: time.sleep(service), settings,
                             Workload(scenario="capacity", rate=100, slo={"p99": f"{slo_ms}ms"}),
                             instances=k)
        load = r.load
        found = load.get("max_rate")
        rel = f" ({100 * (found / truth - 1):+.1f}% vs theory)" if found and truth else ""
        bracket = load.get("bracket")
        print(f"run {i + 1}: capacity {found if found is None else format(found, ',.1f')}/s{rel}"
              f"  bracket {bracket}  steps {len(load['steps'])}  "
              f"stop {load.get('search_stop', load.get('stop_reason'))}  "
              f"[{time.perf_counter() - t0:.0f}s, other procs "
              f"{r.process.get('other_cpu_cores', 'n/a')} cores]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per rate and server")
    ap.add_argument("--repeats", type=int, default=2, help="capacity searches")
    ap.add_argument("--parts", default="1,2")
    ap.add_argument("--servers", default="http,triton,triton-grpc",
                    help="part 1's servers, of " + ", ".join(SERVING))
    args = ap.parse_args()
    print(f"pytest_inferbench from {Path(pytest_inferbench.__file__).parent}")
    parts = args.parts.split(",")
    if "1" in parts:
        part1(args.seconds, args.servers.split(","))
    if "2" in parts:
        part2(args.repeats)


if __name__ == "__main__":
    main()
