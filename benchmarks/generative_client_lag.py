"""Does the generative client keep its schedule while it parses streams, and where does its
lag come from?

A controlled OpenAI-compatible server (tests/test_generative.py's mock: TTFT 50 ms, one chunk
every 5 ms, 27 chunks a request) pinned to the second core; the client side (the pytest-side
process and any client worker processes) pinned to the first, as serving/affinity.py splits a
host. At 50, 150 and 300 requests/s (Poisson) each client mode runs a server cell:

- `client_processes: 0`: the in-process client: the lean one (serving/lean_stream.py: the
  issuer thread writes prepared requests, one thread stamps what arrives, events parsed after
  the window); `aiohttp`: the same with the aiohttp client it replaced (the issuer hands each
  request to an event loop in another thread of the same process);
- `client_processes: N`: N worker processes, each sending its share of the schedule from its
  own event loop at the scheduled times and parsing its own streams.

Columns: requests/s completed, chunks/s parsed, the issuer's lag p99 (scheduled -> handed
over / timer fired), the client's lag p50/p99 (scheduled -> request about to be written), TTFT
p50/p99 from the scheduled send, how much the client's lag moved TTFT p99, valid, and the CPU
seconds per second of the client threads or processes (where the time went).

    python benchmarks/generative_client_lag.py [--seconds 4] [--rates 50,150,300] [--modes aiohttp,0,1]
                                               [--arrival constant] [--repeats N]

Runs against whichever pytest_inferbench is first on the path: `--modes -` leaves the field
out, so PYTHONPATH=<a copy of an older version> measures the version before client
processes the same way (`git archive <commit> pytest_inferbench | tar -x -C /tmp/old`).
A column gives this process's longest garbage-collection pause inside the measured window: a
pause holds the GIL and stops the in-process client's event loop with it.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from pytest_inferbench.serving.affinity import pinned, split
from pytest_inferbench.spec import load_spec
from pytest_inferbench.workload.generative import measure_generative


def _mock_source() -> str:
    # the tests' controlled server, verbatim (one definition of the system under test)
    import ast
    tree = ast.parse((ROOT / "tests" / "test_generative.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MOCK":
            return node.value.value
    raise RuntimeError("MOCK not found in tests/test_generative.py")


def start_mock(tmp: Path, cpus, **config):
    script = tmp / "mock_openai.py"
    script.write_text(_mock_source())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(script), str(port), json.dumps(config)],
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    for _ in range(200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mock server did not start")


SPEC = """name: lag
defaults: {{warmup: 20, min_duration: {s}s, max_duration: {s}s, min_queries: 10, ci_width: 1e-9}}
benchmarks:
  - serving: {{system: openai, url: "{url}", model: m}}
    workload: {{scenario: server, arrival: {arrival}, rate: {rate}, timeout: 10s,
               {mode}prompts: {{input_tokens: 16, output_tokens: {tokens}}}}}
"""


def _aiohttp_only(loop, prepared, n, rate):
    """The in-process client before the lean one: aiohttp on the event loop."""
    from pytest_inferbench.workload.generative import GenerativeSUT
    return GenerativeSUT(loop, prepared, n)


def run(url, tmp, rate, mode, seconds, tokens, cpus, arrival="poisson"):
    """mode: client_processes N, '-' (unset), or 'aiohttp' (0, the aiohttp client forced)."""
    from pytest_inferbench.workload import generative
    spec = tmp / f"bench_lag_{rate}_{mode}.yaml"
    field = ("" if mode == "-" else
             f"client_processes: {0 if mode == 'aiohttp' else mode}, ")
    spec.write_text(SPEC.format(s=seconds, url=url, rate=rate, mode=field, tokens=tokens,
                                arrival=arrival))
    (cell,) = load_spec(spec)
    lean = generative.open_loop_sut
    if mode == "aiohttp":
        generative.open_loop_sut = _aiohttp_only
    # process CPU (every thread, ended ones too) and the main thread's, which issues
    p0, t0 = time.process_time(), time.thread_time()
    pauses = []
    gc_start = [0]

    def gc_cb(phase, info):
        if phase == "start":
            gc_start[0] = time.perf_counter_ns()
        else:
            pauses.append((time.time(), time.perf_counter_ns() - gc_start[0]))
    gc.callbacks.append(gc_cb)
    try:
        with pinned(cpus):
            r = measure_generative(url, "m", cell)
    finally:
        gc.callbacks.remove(gc_cb)
        generative.open_loop_sut = lean
    p1, t1 = time.process_time(), time.thread_time()
    g = r.generative
    # collections inside the measured window only (not the one the cell makes before it)
    pauses = [d for t, d in pauses if r.window["start"] <= t <= r.window["end"]]
    window = g["window_s"] or 1.0
    procs = r.load.get("client_processes") or 0
    if procs:
        cpu = sum(r.load.get("client_cpu_s") or []) / window
        where = f"{procs} proc {cpu:.2f}"
    else:
        # includes probe and warm-up (a few % at these rates)
        main, total = (t1 - t0) / window, (p1 - p0) / window
        per = 1e3 * total / (g["requests_per_s"] or 1)
        where = (f"issuer {main:.2f} loop+rest {total - main:.2f} = {per:.2f} ms/request "
                 f"({r.load.get('open_loop_client')})")
    lag = g["send_lag_ms"]
    ttft = g["ttft_ms"]["percentiles"]
    chunks = g["output_tokens_per_s"] or 0
    eff = g["client_lag_effect"]
    print(f"{mode:>7}{rate:>6}{g['requests_per_s'] or 0:>8.1f}{chunks:>9.0f}"
          f"{lag['issuer']['p99']:>9.2f}{lag['client']['p50']:>9.2f}{lag['client']['p99']:>9.2f}"
          f"{ttft['p50']['value']:>9.1f}{ttft['p99']['value']:>9.1f}"
          f"{100 * (eff or 0):>+8.1f}%{max(pauses, default=0) / 1e6:>7.1f}  "
          f"{'yes' if r.valid else 'NO ':<5} {where}", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rates", default="50,150,300")
    ap.add_argument("--modes", default="aiohttp,0,1",
                    help="client_processes values, '-': unset, 'aiohttp': 0 with the aiohttp "
                         "client instead of the lean one (serving/lean_stream.py)")
    ap.add_argument("--arrival", default="poisson", help="poisson or constant")
    ap.add_argument("--tokens", type=int, default=27)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    cpus = split()
    import pytest_inferbench
    print(f"pytest_inferbench from {Path(pytest_inferbench.__file__).parent}")
    print(f"host: {os.cpu_count()} cpus; client side on {cpus and cpus['client']}, "
          f"mock server on {cpus and cpus['server']}; load {os.getloadavg()[0]:.2f}")
    print(f"{'procs':>7}{'rate':>6}{'req/s':>8}{'chunk/s':>9}{'iss p99':>9}{'cli p50':>9}"
          f"{'cli p99':>9}{'ttft50':>9}{'ttft99':>9}{'effect':>9}{'gc ms':>7}  valid "
          f"client CPU s/s")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc, url = start_mock(tmp, set(cpus["server"]) if cpus else None, ttft=0.05,
                               itl=0.005)
        try:
            for _ in range(args.repeats):
                for rate in [float(x) for x in args.rates.split(",")]:
                    for mode in args.modes.split(","):
                        run(url, tmp, rate, mode, args.seconds, args.tokens,
                            cpus["client"] if cpus else None, args.arrival)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
