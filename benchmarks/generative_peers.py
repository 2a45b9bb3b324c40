"""Generative serving, three load generators on one system under test: this plugin, GuideLLM's
own `guidellm run` and a minimal reference client, all against the same `guidellm mock-server`
(TTFT 50 ms, ITL 5 ms, 16 output tokens by default; streamed chat completions).

    .venv/bin/python benchmarks/generative_peers.py            # ~6 minutes
    .venv/bin/python benchmarks/generative_peers.py --quick    # ~2 minutes, a smoke run

GuideLLM and its mock-server come from their own virtual environment ($INFERBENCH_GUIDELLM_VENV
or .venv-guidellm in the repository; `--venv`). Nothing else may load the machine while this runs.

Table 1, per generator and Poisson rate (requests/s), over `--duration` seconds each:

    sched/s            the rate the generator's own schedule asked for over the run
                       (requests scheduled - 1) / (last - first scheduled send): a short run
                       of a random schedule departs from the nominal rate. guidellm 0.8.1
                       seeds the same random.Random(seed) in each of its worker processes, so
                       each Poisson gap is drawn once and used ~10 times in a row (seen:
                       127.5 ms x9, 3.2 ms x10, 40.2 ms x10, ...): its arrivals are not a
                       Poisson process and its realized rate strays far (15.5/s asked at 8/s
                       over 3 s with seed 42)
    n                  successful requests measured
    TTFT p50, p99      time to first token, as the generator itself reports it:
                       plugin: from the request's *scheduled* send (its definition);
                       guidellm: its `time_to_first_token_ms` (from its `request_start`
                       stamp, i.e. from the actual send: a late send is not counted);
                       reference: from the scheduled send, as the plugin
    TTFT p99 sched     TTFT p99 from the scheduled send for every generator (guidellm's from
                       each request's `timings.targeted_start` to `first_token_iteration`),
                       so the three are comparable; equal to TTFT p99 for plugin and reference
    ITL p50, p99       plugin and reference: every gap between chunks carrying text;
                       guidellm: its `inter_token_latency_ms`, a distribution of *per-request
                       means* ((last token - first token) / (tokens - 1)), marked `*`:
                       its output keeps no per-chunk times, so per-gap ITL cannot be known
    lag p50, p99       send lag, actual send minus scheduled send, ms:
                       plugin: the run file's `generative.send_lag_ms.client` (scheduled to
                       the moment its event loop starts writing the request; the issuer
                       thread's own lag, `load.send_lag_ms`, is part of it);
                       guidellm: `timings.request_start - timings.targeted_start` per request
                       (its stamp just before httpx sends, or httpcore's trace of the send);
                       reference: scheduled to just before `conn.request`

Table 2, capacity: each generator offered each `--capacity-rates` rate (Poisson) for
`--capacity-duration` seconds; the send lag p99 at each rate, and the highest rate whose lag
p99 stayed under 1 ms. The server runs on the same 2 cores, so at high rates the generators
also compete with it for the CPU; none of them can see the moment the bytes reached the socket
(each stamps just before its HTTP library writes), so every lag is a lower bound.

How each tool's numbers are obtained:
- plugin: a pytest session (subprocess, this repository's interpreter) on a generated YAML spec
  (`serving: {system: openai, url, model}`, `workload: {scenario: server, arrival: poisson,
  rate: [...]}`, prompts of 32 words, output 16 tokens, warm-up 2 requests, min = max duration),
  results read from its run file (--infer-json).
- guidellm: `guidellm run -c config.json` (profile poisson with every rate, max_duration
  constraint, 1 s warm-up, synthetic_text data of 32 prompt / 16 output tokens, JSON output).
  Its synthetic data needs a Hugging Face tokenizer and nothing may be downloaded: a word-level
  tokenizer is trained here on Faker text (what its synthetic prompts are made of) and saved
  to a temporary directory.
- reference: deliberately minimal, in this process: a dispatcher thread sleeps to each
  scheduled time of a seeded Poisson schedule and starts a thread that sends one streamed chat
  request over a new http.client connection and stamps every chunk carrying text.
Generators run one after another (plugin, guidellm, reference), not interleaved: drift of the
machine between them shows as differences; repeat a run before trusting a small one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAG_BOUND_MS = 1.0

TOKENIZER = r'''
import sys
from faker import Faker
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
fake = Faker()
fake.seed_instance(0)
tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.decoder = decoders.WordPiece()
tok.train_from_iterator([fake.text(max_nb_chars=2000) for _ in range(300)],
                        trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(sys.argv[1])
'''


def nearest_rank(values, pct):
    v = np.sort(np.asarray(values, dtype=float))
    if not len(v):
        return None
    return float(v[max(0, int(np.ceil(pct / 100 * len(v))) - 1)])


def _rate(times):
    """Requests per second the schedule itself asked for (sorted send times, s)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MockServer:
    def __init__(self, venv: Path, args, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "guidellm"), "mock-server", "--host", "127.0.0.1", "--port",
             str(self.port), "--model", "mock", "--ttft-ms", str(args.ttft_ms), "--itl-ms",
             str(args.itl_ms), "--output-tokens", str(args.output_tokens)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"guidellm mock-server did not start; see {log}")
            time.sleep(0.1)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ----------------------------------------------------------------------------- the plugin

def run_plugin(url, rates, duration, args, work: Path) -> dict:
    spec = work / "bench_peers.yaml"
    spec.write_text(f"""name: peers
defaults: {{warmup: 2, min_duration: {duration}s, max_duration: {duration}s, min_queries: 1,
           percentiles: [50, 99]}}
benchmarks:
  - serving: {{system: openai, url: "{url}", model: mock, api: chat}}
    workload: {{scenario: server, arrival: poisson, rate: [{", ".join(map(str, rates))}],
               timeout: 30s, prompts: {{input_tokens: {args.prompt_tokens},
               output_tokens: {args.output_tokens}}}}}
""")
    out = work / "plugin-run.json"
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "pytest", str(spec), "--infer-json", str(out),
                    "--infer-no-html", "-p", "no:cacheprovider", "-q", "--rootdir", str(work)],
                   cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    if not out.exists():
        raise SystemExit(f"the plugin wrote no run file; rerun: pytest {spec}")
    rows = {}
    for r in json.loads(out.read_text())["results"]:
        g = r.get("generative") or {}
        pct = (lambda m, q: (g.get(f"{m}_ms") or {}).get("percentiles", {})
               .get(f"p{q}", {}).get("value"))
        lag = (g.get("send_lag_ms") or {}).get("client") or {}
        rows[r["cell"]["workload"]["rate"]] = {
            "n": (g.get("ttft_ms") or {}).get("n"), "ttft50": pct("ttft", 50),
            "ttft99": pct("ttft", 99), "ttft99_sched": pct("ttft", 99),
            "itl50": pct("itl", 50), "itl99": pct("itl", 99),
            "lag50": lag.get("p50"), "lag99": lag.get("p99"),
            "sched_rate": (r.get("load") or {}).get("scheduled_rate"),
            "note": "" if r["status"] == "passed" else f"{r['status']}: {r.get('reason')}"}
    return rows


# ----------------------------------------------------------------------------- guidellm

def run_guidellm(venv: Path, url, rates, duration, args, work: Path, tokenizer: Path) -> dict:
    out = work / "guidellm.json"
    out.unlink(missing_ok=True)
    config = {"spec": {
        "backend": {"kind": "openai_http", "target": url, "model": "mock"},
        "profile": {"kind": "poisson", "rate": list(rates),
                    "warmup": {"value": 1, "mode": "duration"}},
        "constraints": [{"kind": "max_duration", "seconds": duration + 1}],
        "tokenizer": {"kind": "huggingface_auto", "model": str(tokenizer)},
        "data": [{"kind": "synthetic_text", "prompt_tokens": args.prompt_tokens,
                  "output_tokens": args.output_tokens}],
        "outputs": [{"kind": "json", "path": str(out)}]}}
    cfg = work / "guidellm-config.json"
    cfg.write_text(json.dumps(config))
    log = work / "guidellm.log"
    with open(log, "wb") as fh:
        subprocess.run([str(venv / "bin" / "guidellm"), "run", "-c", str(cfg),
                        "--disable-console"], cwd=work, stdout=fh, stderr=subprocess.STDOUT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=3600)
    if not out.exists():
        raise SystemExit(f"guidellm wrote no output; see {log}")
    rows = {}
    for b in json.loads(out.read_text())["benchmarks"]:
        m, ok = b["metrics"], b["requests"]["successful"]
        pct = lambda key, q: m[key]["successful"]["percentiles"][f"p{q}"]  # noqa: E731
        every = [r for kind in ("successful", "errored", "incomplete")
                 for r in b["requests"][kind] or []]
        # a request without a targeted start was not paced by the schedule (guidellm 0.8.1
        # leaves it at 0 in some runs): its lag is not defined, so it is left out and counted
        sent = [r for r in every if r["info"]["timings"].get("request_start")
                and r["info"]["timings"].get("targeted_start")]
        unpaced = len(every) - len(sent)
        lag = [(r["info"]["timings"]["request_start"] - r["info"]["timings"]["targeted_start"])
               * 1e3 for r in sent]
        sched = [(r["info"]["timings"]["first_token_iteration"]
                  - r["info"]["timings"]["targeted_start"]) * 1e3
                 for r in ok if r["info"]["timings"].get("first_token_iteration")
                 and r["info"]["timings"].get("targeted_start")]
        errors = len(b["requests"]["errored"] or [])
        targets = np.sort([r["info"]["timings"]["targeted_start"] for r in sent])
        rows[b["config"]["strategy"]["rate"]] = {
            "n": len(ok), "ttft50": pct("time_to_first_token_ms", 50),
            "ttft99": pct("time_to_first_token_ms", 99), "ttft99_sched": nearest_rank(sched, 99),
            "itl50": pct("inter_token_latency_ms", 50), "itl99": pct("inter_token_latency_ms", 99),
            "itl_note": "*", "lag50": nearest_rank(lag, 50), "lag99": nearest_rank(lag, 99),
            "sched_rate": _rate(targets),
            "note": "; ".join(x for x in (f"{errors} errors" if errors else "",
                                          f"{unpaced} requests without a targeted start "
                                          f"(not paced)" if unpaced else "") if x)}
    return rows


def make_tokenizer(venv: Path, work: Path) -> Path:
    path = work / "tokenizer"
    subprocess.run([str(venv / "bin" / "python"), "-c", TOKENIZER, str(path)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return path


# ----------------------------------------------------------------------------- reference

def _one(host, port, body, scheduled, out):
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    times = []
    for line in resp:
        if line.startswith(b"data: [DONE]"):
            break
        if line.startswith(b"data:"):
            choices = json.loads(line[5:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                times.append(time.perf_counter())
    conn.close()
    out.append((scheduled, t0, times, resp.status))


def run_reference(url, rate, duration, args, seed=0) -> dict:
    host, port = url.split("://")[1].split(":")
    port = int(port)
    body = json.dumps({"model": "mock", "max_tokens": args.output_tokens, "stream": True,
                       "messages": [{"role": "user", "content": " the" * args.prompt_tokens}]}
                      ).encode()
    warm = []
    for _ in range(2):
        _one(host, port, body, time.perf_counter(), warm)
    gaps = np.random.default_rng(seed).exponential(1 / rate, int(rate * duration * 2) + 10)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < duration]
    done, threads = [], []
    start = time.perf_counter() + 0.05
    for off in offsets:
        due = start + off
        while (left := due - time.perf_counter()) > 0:
            time.sleep(left)
        t = threading.Thread(target=_one, args=(host, port, body, due, done), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(60)
    ok = [d for d in done if d[3] == 200 and d[2]]
    ttft = [(d[2][0] - d[0]) * 1e3 for d in ok]
    itl = [g * 1e3 for d in ok for g in np.diff(d[2])]
    lag = [(d[1] - d[0]) * 1e3 for d in done]
    return {"n": len(ok), "ttft50": nearest_rank(ttft, 50), "ttft99": nearest_rank(ttft, 99),
            "ttft99_sched": nearest_rank(ttft, 99), "itl50": nearest_rank(itl, 50),
            "itl99": nearest_rank(itl, 99), "lag50": nearest_rank(lag, 50),
            "lag99": nearest_rank(lag, 99), "sched_rate": _rate(offsets),
            "note": f"{len(done) - len(ok)} failed" if len(ok) < len(done) else ""}


# ----------------------------------------------------------------------------- report

def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(rows: dict):
    head = (f"{'generator':<10} {'rate/s':>6} {'sched/s':>7} {'n':>5} {'TTFT p50':>9} "
            f"{'TTFT p99':>9} {'p99 sched':>9} {'ITL p50':>8} {'ITL p99':>8} {'lag p50':>8} "
            f"{'lag p99':>8}  note")
    print(head)
    print("-" * len(head))
    for rate in sorted({r for per in rows.values() for r in per}):
        for gen, per in rows.items():
            r = per.get(rate)
            if r is None:
                continue
            star = r.get("itl_note", "")
            print(f"{gen:<10} {rate:>6g} {fmt(r.get('sched_rate'), 1):>7} {r['n'] or 0:>5} "
                  f"{fmt(r['ttft50']):>9} "
                  f"{fmt(r['ttft99']):>9} {fmt(r['ttft99_sched']):>9} "
                  f"{fmt(r['itl50']) + star:>8} {fmt(r['itl99']) + star:>8} "
                  f"{fmt(r['lag50'], 3):>8} {fmt(r['lag99'], 3):>8}  {r['note']}")
    print("times in ms; * guidellm's ITL is a distribution of per-request means")


def print_capacity(rows: dict, rates):
    print(f"\nsend lag p99 (ms) at each offered Poisson rate; highest rate with p99 < "
          f"{LAG_BOUND_MS:g} ms")
    print(f"{'generator':<10} " + " ".join(f"{r:>8g}" for r in rates) + f" {'highest':>9}")
    for gen, per in rows.items():
        lags = [per.get(r, {}).get("lag99") for r in rates]
        ok = [r for r, lag in zip(rates, lags) if lag is not None and lag < LAG_BOUND_MS]
        best = f"{max(ok):g}/s" if ok else f"< {min(rates):g}/s"
        print(f"{gen:<10} " + " ".join(f"{fmt(x, 3):>8}" for x in lags) + f" {best:>9}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get(
        "INFERBENCH_GUIDELLM_VENV", Path(__file__).resolve().parents[1] / ".venv-guidellm")),
        help="guidellm's virtual environment")
    ap.add_argument("--rates", default="2,8,32", help="Poisson rates of table 1 (requests/s)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per rate, table 1")
    ap.add_argument("--capacity-rates", default="2,4,8,16,32,64,128",
                    help="Poisson rates of table 2 (requests/s)")
    ap.add_argument("--capacity-duration", type=float, default=5, help="seconds per rate")
    ap.add_argument("--ttft-ms", type=float, default=50)
    ap.add_argument("--itl-ms", type=float, default=5)
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--generators", default="plugin,guidellm,reference")
    ap.add_argument("--quick", action="store_true",
                    help="rates 2,8 for 3 s; capacity at 16,64 for 3 s")
    args = ap.parse_args(argv)
    if args.quick:
        args.rates, args.duration = "2,8", 3
        args.capacity_rates, args.capacity_duration = "16,64", 3
    rates = [float(x) for x in args.rates.split(",")]
    cap_rates = [float(x) for x in args.capacity_rates.split(",")]
    gens = args.generators.split(",")
    if not (args.venv / "bin" / "guidellm").exists():
        raise SystemExit(f"guidellm not found in {args.venv}: /usr/bin/python3.11 -m venv "
                         f"{args.venv} && {args.venv}/bin/pip install torch==2.13.0 && "
                         f"{args.venv}/bin/pip install guidellm==0.8.1")
    with tempfile.TemporaryDirectory(prefix="genpeers-") as tmp:
        work = Path(tmp)
        tokenizer = make_tokenizer(args.venv, work) if "guidellm" in gens else None
        server = MockServer(args.venv, args, work / "mock-server.log")
        print(f"guidellm mock-server: TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, "
              f"{args.output_tokens} output tokens; prompts {args.prompt_tokens} words\n")
        try:
            tables = []
            for these, secs in ((rates, args.duration), (cap_rates, args.capacity_duration)):
                rows = {}
                t0 = time.time()
                if "plugin" in gens:
                    rows["plugin"] = run_plugin(server.url, these, secs, args, work)
                if "guidellm" in gens:
                    rows["guidellm"] = run_guidellm(args.venv, server.url, these, secs, args,
                                                    work, tokenizer)
                if "reference" in gens:
                    rows["reference"] = {r: run_reference(server.url, r, secs, args)
                                         for r in these}
                tables.append(rows)
                print(f"[{len(these)} rates x {secs:g} s measured in {time.time() - t0:.0f} s]",
                      file=sys.stderr)
        finally:
            server.close()
    print_table(tables[0])
    print_capacity(tables[1], cap_rates)


if __name__ == "__main__":
    main()
