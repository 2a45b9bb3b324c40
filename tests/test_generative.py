"""Generative serving (OpenAI-compatible, streamed): metric definitions on a controlled server
with known timings, queueing from the scheduled send, failures as results, prompts, the spec,
and a YAML run end to end.

The system under test is a small aiohttp server written here (MOCK below): configurable
time to first token, gap between tokens, a concurrency cap and failure injection, so every
expected number is known. It runs in its own process, as a real server would."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_ttft_matches, xfail_if_client_lag

pytest.importorskip("aiohttp", reason="aiohttp not installed: pip install aiohttp "
                    "(the OpenAI-compatible client)")

from pytest_inferbench.core.errors import SpecError  # noqa: E402
from pytest_inferbench.run.cell import run_cell  # noqa: E402
from pytest_inferbench.core.stats import percentile  # noqa: E402
from pytest_inferbench.serving.openai_client import RequestRecord  # noqa: E402
from pytest_inferbench.spec import load_spec  # noqa: E402
from pytest_inferbench.workload.generative_metrics import request_metrics, slo_verdict  # noqa: E402
from pytest_inferbench.spec.prompts import Prompts  # noqa: E402
from pytest_inferbench.workload.prompts import load_dataset, prepare  # noqa: E402

MOCK = r'''
import asyncio, json, sys
from aiohttp import web

cfg = json.loads(sys.argv[2])
TTFT, ITL = cfg.get("ttft", 0.05), cfg.get("itl", 0.005)
CAP, FAIL_EVERY = cfg.get("max_concurrency"), cfg.get("fail_every")
REJECT_EXTRAS = cfg.get("reject_extras", False)
CLOSE_EVERY, STALL_EVERY, LOG = cfg.get("close_every"), cfg.get("stall_every"), cfg.get("log")
slots = asyncio.Semaphore(CAP) if CAP else None
count = [0]

async def handle(request):
    body = await request.json()
    count[0] += 1
    n = count[0]
    if LOG:                         # what arrived, as the server decoded it
        with open(LOG, "a") as f:
            f.write(json.dumps({"n": n, "body": body, "headers": {
                k: request.headers.get(k) for k in ("Content-Type", "Authorization")}}) + "\n")
    if STALL_EVERY and n % STALL_EVERY == 0:
        await asyncio.sleep(3600)
    if REJECT_EXTRAS and ("ignore_eos" in body or "min_tokens" in body):
        return web.json_response({"error": {"message": "unknown field ignore_eos"}}, status=400)
    if FAIL_EVERY and n % FAIL_EVERY == 0:
        return web.json_response({"error": {"message": f"injected failure {n}"}}, status=500)
    chat = "messages" in body
    text = " ".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
    out = body.get("max_tokens") or 16
    usage = {"prompt_tokens": len(text.split()), "completion_tokens": out}
    if slots:                       # queued requests wait here, before their first token
        await slots.acquire()
    try:
        if not body.get("stream"):
            await asyncio.sleep(TTFT + ITL * (out - 1))
            choice = ({"message": {"content": " tok" * out}} if chat else {"text": " tok" * out})
            return web.json_response({"id": f"req-{n}", "usage": usage,
                                      "choices": [{**choice, "finish_reason": "length"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(TTFT)
        for k in range(out):
            if k:
                await asyncio.sleep(ITL)
            piece = {"delta": {"content": " tok"}} if chat else {"text": " tok"}
            chunk = {"id": f"req-{n}", "choices": [{"index": 0, **piece}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if CLOSE_EVERY and n % CLOSE_EVERY == 0 and k == 1:
                request.transport.close()   # mid-stream: two tokens sent, then gone
                return resp
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {"id": f"req-{n}", "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
    finally:
        if slots:
            slots.release()

async def health(request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_post("/v1/chat/completions", handle)
app.router.add_post("/v1/completions", handle)
app.router.add_get("/health", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            shutdown_timeout=0.5)           # a stalled handler must not hold the exit
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mock_server(tmp_path_factory):
    """start(**config) -> url of a running mock; all are stopped at the end of the module."""
    script = tmp_path_factory.mktemp("mock") / "mock_openai.py"
    script.write_text(MOCK)
    procs = []

    def start(**config):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, str(script), str(port), json.dumps(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        raise AssertionError("mock server did not start")
    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cell(tmp_path, url, workload, settings="warmup: 3, min_duration: 1s, max_duration: 2s, "
         "min_queries: 10", serving_extra="", name="bench_g.yaml"):
    f = tmp_path / name
    f.write_text(f"name: g\ndefaults: {{{settings}}}\nbenchmarks:\n"
                 f"  - serving: {{system: openai, url: \"{url}\", model: m{serving_extra}}}\n"
                 f"    workload: {workload}\n")
    (c,) = load_spec(f)
    return c


# ----------------------------------------------------------------------------- definitions

def _rec(scheduled, chunks, tokens, first=None, ok=True):
    r = RequestRecord(index=0, scheduled_ns=scheduled, sent_ns=scheduled, ok=ok,
                      chunk_ns=list(chunks), output_tokens=tokens, end_ns=chunks[-1] + 10)
    r.first_token_ns = chunks[0] if first is None else first
    return r


def test_metric_definitions_on_hand_made_timelines():
    ms = 1_000_000
    # scheduled at 0, first text at 100 ms, then gaps of 10, 20, 30 ms; usage says 4 tokens
    a = _rec(0, [100 * ms, 110 * ms, 130 * ms, 160 * ms], 4)
    b = _rec(0, [50 * ms], 1)                         # one token: TPOT undefined
    c = _rec(0, [40 * ms, 60 * ms], 5)                # 5 tokens in 2 chunks: usage counts
    m = request_metrics([a, b, c, _rec(0, [1], 1, ok=False)])
    assert list(m["ttft"]) == [100 * ms, 50 * ms, 40 * ms]          # failed request left out
    assert list(m["itl"]) == [10 * ms, 20 * ms, 30 * ms, 20 * ms]   # TTFT is not a gap
    assert list(m["e2e"]) == [160 * ms, 50 * ms, 60 * ms]           # last text chunk
    assert m["tpot"][0] == (160 - 100) * ms / 3
    assert np.isnan(m["tpot"][1])
    assert m["tpot"][2] == (60 - 40) * ms / 4                      # tokens from usage
    assert list(m["output"]) == [4, 1, 5]
    # non-streamed: no TPOT (one arrival holds every token)
    assert np.isnan(request_metrics([a], streamed=False)["tpot"][0])


def test_slo_verdict_says_too_few_requests_instead_of_passing():
    ms = 1_000_000
    fast = [_rec(0, [10 * ms, 11 * ms], 2) for _ in range(50)]
    v = slo_verdict(request_metrics(fast), {"ttft_p99": 0.5, "tpot_p99": 0.1})
    assert v["verdict"] == "undetermined" and "too few requests" in v["reason"]
    assert v["metrics"]["ttft_p99"]["queries_needed"] == 459     # LoadGen's p99 at 99%
    v = slo_verdict(request_metrics(fast * 10), {"ttft_p99": 0.5, "tpot_p99": 0.1})
    assert v["verdict"] == "pass"
    slow = fast * 10 + [_rec(0, [900 * ms, 901 * ms], 2)] * 20
    v = slo_verdict(request_metrics(slow), {"ttft_p99": 0.5, "tpot_p99": 0.1})
    assert v["verdict"] == "fail" and v["metrics"]["tpot_p99"]["verdict"] == "pass"


# ----------------------------------------------------------------------------- known timings

def _reference_client(url, n, tokens):
    """The minimal reference: one streamed chat request at a time over http.client, TTFT from
    the request's send, every gap between text chunks."""
    host, port = url.split("://")[1].split(":")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi there"}],
                       "max_tokens": tokens, "stream": True}).encode()
    ttft, itl = [], []
    conn = http.client.HTTPConnection(host, int(port))
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        times = []
        for line in resp:
            if line.startswith(b"data: [DONE]"):
                break
            if line.startswith(b"data:") and json.loads(line[5:])["choices"]:
                times.append(time.perf_counter())
        resp.read()
        ttft.append(times[0] - t0)
        itl.extend(np.diff(times))
    conn.close()
    return np.median(ttft) * 1e3, np.median(itl) * 1e3


def test_known_timings_match_a_reference_client(mock_server, tmp_path):
    """TTFT 50 ms, ITL 5 ms configured; what a minimal client sees is the truth, and at low
    load (from the scheduled send) the plugin must see the same to within 5%."""
    url = mock_server(ttft=0.05, itl=0.005)
    ref_ttft, ref_itl = _reference_client(url, 8, 16)
    c = cell(tmp_path, url, "{scenario: server, arrival: poisson, rate: 8, timeout: 10s, "
             "keep_requests: true, prompts: {input_tokens: 32, output_tokens: 16}}")
    r = run_cell(c, None)
    ref_ttft2, ref_itl2 = _reference_client(url, 8, 16)     # before and after: drift shows
    assert r.status == "passed", r.reason
    # an INVALID run's timings are not the truth: the rule that flags it is what holds
    xfail_if_client_lag(r.valid, r.load.invalid_reasons)
    g = r.generative
    ttft, itl = g["ttft_ms"]["percentiles"]["p50"]["value"], g["itl_ms"]["percentiles"]["p50"]["value"]
    ref_ttft, ref_itl = (ref_ttft + ref_ttft2) / 2, (ref_itl + ref_itl2) / 2
    assert 50 <= ttft
    assert_ttft_matches(ttft, ref_ttft, g["send_lag_ms"]["client"]["p50"])
    # 8%: a fresh clone's CI saw 5.49 against a reference of 5.17 ms (+6.1%) once; three
    # interleaved runs here gave 5.19-5.23 (lean client) and 5.24-5.27 (aiohttp) against 5.14
    assert 5 <= itl and abs(itl / ref_itl - 1) < 0.08, (itl, ref_itl)
    # tokens from the server's usage; the prompt built to 32 tokens is what the server counted
    assert g["tokens"]["output"]["min"] == g["tokens"]["output"]["max"] == 16
    assert g["tokens"]["output_source"] == "usage" and g["tokens"]["chunks_differ"] == 0
    assert g["tokens"]["prompt_check"]["exact"] == 1.0
    # the stored records agree with the definitions
    for rec in r.requests:
        assert rec["ok"] and rec["status"] == 200 and rec["response_id"].startswith("req-")
        assert rec["scheduled_ms"] <= rec["dispatched_ms"] <= rec["sent_ms"] < rec["first_token_ms"]
        assert len(rec["chunks_ms"]) == rec["output_tokens"] == 16
    n = g["e2e_ms"]["n"]
    assert n == len(r.requests) and r.latency_ms.n == n
    tpot = [(q["chunks_ms"][-1] - q["first_token_ms"]) / 15 for q in r.requests]
    assert percentile(np.sort(tpot), 50) == pytest.approx(
        g["tpot_ms"]["percentiles"]["p50"]["value"], abs=1e-3)     # nearest rank, as stats.py
    assert g["output_tokens_per_s"] == pytest.approx(16 * g["requests_per_s"])
    assert g["send_lag_ms"]["issuer"]["p99"] < 5          # the issuer itself is on time
    if r.load["send_lag_ms"]["p99"] >= 5:   # seen once in CI: 5.3 ms, the run still valid
        pytest.xfail(f"the client's event loop wrote a request "
                     f"{r.load['send_lag_ms']['p99']:.1f} ms after its scheduled time "
                     f"(issuer p99 {g['send_lag_ms']['issuer']['p99']:.2f} ms): the "
                     f"generative client's cost (issue 27)")


def test_queueing_behind_a_concurrency_cap_shows_in_ttft(mock_server, tmp_path):
    """One request at a time, ~38 ms each (~26/s): offered 45/s open loop, requests queue and
    TTFT from the scheduled send grows; one closed-loop client sees none of it."""
    url = mock_server(ttft=0.02, itl=0.002, max_concurrency=1)
    prompts = "prompts: {input_tokens: 8, output_tokens: 10}"
    settings = "warmup: 2, min_duration: 1.5s, max_duration: 1.5s, min_queries: 10"
    closed = run_cell(cell(tmp_path, url, f"{{scenario: concurrency, concurrency: 1, "
                           f"timeout: 10s, {prompts}}}", settings), None)
    opened = run_cell(cell(tmp_path, url, f"{{scenario: server, arrival: constant, rate: 45, "
                           f"timeout: 10s, {prompts}}}", settings), None)
    p99 = lambda r: r.generative["ttft_ms"]["percentiles"]["p99"]["value"]  # noqa: E731
    assert closed.status == opened.status == "passed"
    assert p99(closed) < 100          # 20 ms configured; a loaded host adds some
    assert p99(opened) > 5 * p99(closed) and p99(opened) > 200, (p99(opened), p99(closed))
    # the server's pace, not the offer, bounds the completions
    assert opened.generative["requests_per_s"] < 30


def test_http_500s_fail_the_cell(mock_server, tmp_path):
    url = mock_server(ttft=0.005, itl=0.001, fail_every=4)
    w = "{scenario: server, rate: 30, timeout: 5s, prompts: {input_tokens: 8, output_tokens: 4}}"
    r = run_cell(cell(tmp_path, url, w, "warmup: 0, min_duration: 0.5s, max_duration: 1s, "
                      "min_queries: 10"), None)
    assert r.status == "failed" and "HTTP 500" in r.reason and "injected failure" in r.reason
    assert r.errors["errors"] > 0 and r.latency_ms.n > 0       # numbers kept
    # the same failures within max_error_rate: the cell passes and still counts them
    r = run_cell(cell(tmp_path, url, w, "warmup: 0, min_duration: 0.5s, max_duration: 1s, "
                      "min_queries: 10, max_error_rate: 0.4"), None)
    assert r.status == "passed" and 0.1 < r.errors["error_rate"] < 0.4


def test_a_server_refusing_ignore_eos_is_measured_and_says_so(mock_server, tmp_path):
    url = mock_server(ttft=0.005, itl=0.001, reject_extras=True)
    r = run_cell(cell(tmp_path, url, "{scenario: single_stream, timeout: 5s, prompts: "
                      "{input_tokens: 8, output_tokens: 4}}",
                      "warmup: 1, min_duration: 0.3s, max_duration: 0.5s, min_queries: 5",
                      ", api: completions"), None)
    assert r.status == "passed" and "refused ignore_eos" in r.generative["note"]
    assert r.generative["tokens"]["output"]["max"] == 4


def test_unreachable_server_fails_with_the_reason(tmp_path):
    c = cell(tmp_path, f"http://127.0.0.1:{_free_port()}", "{scenario: server, rate: 5}")
    with pytest.raises(RuntimeError, match="OpenAI-compatible server at .*Connect"):
        run_cell(c, None)


def test_api_key_comes_from_the_environment_and_is_never_stored(mock_server, tmp_path,
                                                                 monkeypatch):
    url = mock_server(ttft=0.001, itl=0.001)
    c = cell(tmp_path, url, "{scenario: single_stream, prompts: {input_tokens: 4, "
             "output_tokens: 2}}", "warmup: 1, min_duration: 0.2s, max_duration: 0.3s, "
             "min_queries: 3", ", api_key_env: IB_TEST_KEY")
    with pytest.raises(RuntimeError, match="IB_TEST_KEY, which is not set"):
        run_cell(c, None)
    monkeypatch.setenv("IB_TEST_KEY", "sk-secret-123")
    r = run_cell(c, None)
    assert r.status == "passed" and "sk-secret-123" not in json.dumps(r.to_json())


# ----------------------------------------------------------------------------- prompts

def test_prompts_are_built_to_exact_lengths():
    p = Prompts(input_tokens={"mean": 200, "stdev": 30}, output_tokens=7, shared_prefix=50)
    reqs = prepare(p, "completions", "m", True, 300, seed=1)
    bodies = [json.loads(r.body) for r in reqs]
    lengths = np.array([len(b["prompt"].split()) for b in bodies])
    assert list(lengths) == [r.expected_prompt_tokens for r in reqs]
    assert abs(lengths.mean() - 200) < 8 and 20 < lengths.std() < 40
    prefixes = {" ".join(b["prompt"].split()[:50]) for b in bodies}
    assert len(prefixes) == 1                                   # the shared prefix
    assert len({" ".join(b["prompt"].split()[50:60]) for b in bodies}) > 250
    assert all(b["max_tokens"] == 7 and b["stream_options"] == {"include_usage": True}
               for b in bodies)
    # multi-turn: each turn carries the earlier exchanges; the prompt grows by them
    turns = prepare(Prompts(input_tokens=10, output_tokens=5, turns=3), "chat", "m", True, 3, 0)
    msgs = [json.loads(t.body)["messages"] for t in turns]
    assert [len(m) for m in msgs] == [1, 3, 5]
    assert msgs[2][:2] == msgs[1][:2] and msgs[1][0] == msgs[0][0]
    assert [t.expected_prompt_tokens for t in turns] == [10, 25, 40]


def test_dataset_prompts(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "hello world", "output_tokens": 3}\n\n'
                    '{"messages": [{"role": "user", "content": "hi"}]}\n')
    reqs = prepare(Prompts(dataset=str(data), output_tokens=9), "chat", "m", False, 3, 0)
    bodies = [json.loads(r.body) for r in reqs]
    assert bodies[0]["messages"] == [{"role": "user", "content": "hello world"}]
    assert [b["max_tokens"] for b in bodies] == [3, 9, 3]
    assert "stream_options" not in bodies[0]
    data.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: expected an object with \"prompt\""):
        load_dataset(data)


# ----------------------------------------------------------------------------- the spec

@pytest.mark.parametrize("entry, message", [
    ("{serving: {system: openai, url: 'http://h:1', model: m}, workload: {scenario: "
     "capacity, slo: {ttft_p99: 1s}, client_processes: 0}}", "client_processes` of at least 1"),
    ("{serving: {system: openai, url: 'http://h:1', model: m}, workload: {scenario: "
     "concurrency, concurrency: 2, client_processes: 2}}", "scenario server or capacity"),
    ("{model: mlp-tiny, workload: {scenario: server, rate: 1, client_processes: 1}}",
     "apply to `serving: {system: openai}` only"),
    ("{model: mlp-tiny, workload: {scenario: server, rate: 1, slo: {ttft_p99: 1s}}}",
     "apply to `serving: {system: openai}` only"),
    ("{serving: {system: openai}, workload: single_stream}", "serves a generated decoder"),
    ("{serving: {system: openai, url: 'http://h:1', model: m}, workload: {scenario: server, "
     "rate: 1, slo: {ttft_p99: 1s, p99: 2s}}}", "SLO key 'p99'"),
    ("{serving: {system: openai, url: 'http://h:1', model: m}, workload: {scenario: server, "
     "rate: 1, prompts: {dataset: missing.jsonl}}}", "missing.jsonl"),
    ("{serving: {system: openai, url: 'http://h:1', model: m}, workload: {scenario: server, "
     "rate: 1, prompts: {input_tokens: 10, shared_prefix: 10}}}", "shared_prefix"),
    ("{serving: {system: openai, url: 'http://h:1', model: m, api: chatty}}", "chatty"),
])
def test_spec_errors_name_the_line(tmp_path, entry, message):
    f = tmp_path / "bench_bad.yaml"
    f.write_text(f"name: bad\nbenchmarks:\n  - {entry}\n")
    with pytest.raises(SpecError) as info:
        load_spec(f)
    text = info.value.render()
    assert message in text and "bench_bad.yaml:3" in text


def test_yaml_run_end_to_end(mock_server, pytester):
    url = mock_server(ttft=0.01, itl=0.002)
    pytester.makefile(".yaml", bench_gen=f"""
        name: gen
        defaults: {{warmup: 2, min_duration: 1s, max_duration: 1.5s, min_queries: 10}}
        benchmarks:
          - serving: {{system: openai, url: "{url}", model: tiny, api: [chat, completions]}}
            workload: {{scenario: server, arrival: poisson, rate: 10, timeout: 5s,
                       keep_requests: true,
                       prompts: {{input_tokens: {{mean: 64, stdev: 8}}, output_tokens: 8}},
                       slo: {{ttft_p99: 2s, tpot_p99: 200ms}}}}
        """)
    result = pytester.runpytest("--infer-json", "run.json", "-p", "no:cacheprovider",
                                           "--infer-no-html")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*ttft *ms tpot *ms * tok/s goodput *"
                                 "slo ttft_p99<=2000ms,tpot_p99<=200ms: undetermined*"])
    doc = json.loads(Path(pytester.path, "run.json").read_text())
    for r in doc["results"]:
        g = r["generative"]
        assert r["status"] == "passed" and r["serving"]["system"] == "openai"
        assert all(g[f"{m}_ms"]["n"] > 0 for m in ("ttft", "itl", "tpot", "e2e"))
        assert g["goodput"]["good"] == g["completed"] > 0
        assert "too few requests" in r["slo"]["reason"]
        assert len(r["requests"]) == g["requests"]
        assert r["cell"]["serving"]["api"] in ("chat", "completions")


# ----------------------------------------------------------------------------- own server

def test_decoder_kv_cache_decodes_as_the_full_forward():
    """Greedy steps through the KV cache pick the same tokens as the whole sequence run
    again without a cache."""
    import torch

    from pytest_inferbench.spec.families import DecoderSpec
    torch.manual_seed(0)
    from pytest_inferbench.models.families import build
    model, sig = build(DecoderSpec(layers=2, hidden=32, heads=4, vocab=50, max_seq=64))
    assert sig.inputs[0].shape == (64,) and sig.inputs[0].high == 50
    ids = [3, 14, 15, 9, 26]
    token, cache = model.prefill(torch.tensor([ids]))
    out = [token]
    for _ in range(6):
        token, cache = model.step(token, len(ids) + len(out) - 1, cache)
        out.append(token)
    seq = list(ids)
    with torch.inference_mode():
        for expected in out:
            assert int(model(torch.tensor([seq]))[0, -1].argmax()) == expected
            seq.append(expected)


def test_own_server_serves_a_generated_decoder(tmp_path):
    """`system: openai` without a url launches the plugin's server on a generated decoder:
    exact prompt lengths (one token a word), exact output lengths (ignore_eos)."""
    pytest.importorskip("fastapi", reason="fastapi not installed: "
                        "pip install 'pytest-inferbench[serve]'")
    from pytest_inferbench.models.cache import ArtifactCache
    f = tmp_path / "bench_own.yaml"
    f.write_text("""name: own
defaults: {warmup: 2, min_duration: 1s, max_duration: 1.5s, min_queries: 5}
benchmarks:
  - model: {family: decoder, layers: 1, hidden: 64, heads: 2, vocab: 500, max_seq: 256}
    serving: {system: openai, api: [chat, completions], max_batch_size: 4}
    workload: {scenario: concurrency, concurrency: 2, timeout: 20s, keep_requests: true,
               prompts: {input_tokens: 40, output_tokens: 12, turns: 2}}
""")
    from pytest_inferbench.serving.pool import ServerPool
    pool = ServerPool()
    try:
        results = [run_cell(c, ArtifactCache(tmp_path / "cache"), servers=pool)
                   for c in load_spec(f)]
    finally:
        pool.close()
    assert [r.serving["reused"] for r in results] == [False, True]     # one launch
    for r in results:
        g = r.generative
        assert r.status == "passed", r.reason
        assert g["tokens"]["output"]["min"] == g["tokens"]["output"]["max"] == 12
        assert g["tokens"]["prompt_check"]["offset_min"] == 0 == g["tokens"]["prompt_check"][
            "offset_max"]                               # turn 2 carries turn 1: 40+12+40
        assert sorted({q["expected_prompt_tokens"] for q in r.requests}) == [40, 92]
        assert g["ttft_ms"]["n"] > 0 and g["tpot_ms"]["percentiles"]["p50"]["value"] > 0
        assert r.serving["model"] == "decoder-l1-h64-nh2-v500-ms256"


class _ScriptedEngine:
    """Stands in for the decoder: max_tokens tokens (5, 6, ...) then "length"; an engine
    error for max_tokens 7."""

    def submit(self, seq):
        if seq.max_tokens == 7:
            seq.emit(("error", "RuntimeError: boom"))
            return
        for k in range(seq.max_tokens):
            seq.emit(("token", 5 + k))
        seq.emit(("finish", "length"))


def test_own_server_replies_whole_streamed_and_refuses_bad_requests():
    pytest.importorskip("fastapi", reason="fastapi not installed: "
                        "pip install 'pytest-inferbench[serve]'")
    from fastapi.testclient import TestClient

    from pytest_inferbench.models.tokenizer import Tokenizer
    from pytest_inferbench.serving.openai_server import make_app
    tok = Tokenizer(500)
    client = TestClient(make_app(_ScriptedEngine(), tok, "m", 32))
    chat = {"model": "m", "messages": [{"content": "a b c"}], "max_tokens": 3}
    whole = client.post("/v1/chat/completions", json=chat).json()
    assert whole["object"] == "chat.completion" and whole["id"].startswith("chatcmpl-")
    (choice,) = whole["choices"]
    assert choice["message"] == {"role": "assistant",
                                 "content": "".join(tok.decode(t) for t in (5, 6, 7))}
    assert choice["finish_reason"] == "length"
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    streamed = client.post("/v1/completions", json={
        "model": "m", "prompt": ["a", "b"], "max_tokens": 2, "stream": True,
        "stream_options": {"include_usage": True}}).text.split("\n\n")
    events = [json.loads(e[len("data: "):]) for e in streamed if e and e != "data: [DONE]"]
    assert [e["choices"][0]["text"] for e in events[:2]] == [tok.decode(5), tok.decode(6)]
    assert events[2]["choices"][0]["finish_reason"] == "length"
    assert events[3]["usage"]["completion_tokens"] == 2 and streamed[-2] == "data: [DONE]"
    refused = {
        404: {"model": "other", "prompt": "a"},
        400: {"model": "m"},                                # no prompt
        500: {"model": "m", "prompt": "a", "max_tokens": 7},   # the engine failed
    }
    for status, body in refused.items():
        r = client.post("/v1/completions", json=body)
        assert r.status_code == status and r.json()["error"]["code"] == status, r.text
    long = client.post("/v1/completions", json={"model": "m", "prompt": "a " * 30,
                                                "max_tokens": 5})
    assert long.status_code == 400 and "exceed the model's max_seq 32" in long.text


# ----------------------------------------------------------------------------- capacity on goodput

def test_capacity_search_on_goodput_brackets_a_known_capacity(mock_server, tmp_path):
    """Four requests at a time, each TTFT 20 ms + 9 gaps of 2 ms (~40 ms as a reference client
    sees it): capacity ~4 / 40 ms = ~100/s. Above it the queue grows without bound and TTFT
    with it; the search on {ttft_p90, tpot_p90} must pass a rate below the capacity and
    prove one above it over the SLO."""
    url = mock_server(ttft=0.02, itl=0.002, max_concurrency=4)
    ref_ttft, ref_itl = _reference_client(url, 6, 10)
    capacity = 4 / ((ref_ttft + 9 * ref_itl) / 1e3)
    c = cell(tmp_path, url, "{scenario: capacity, rate: 60, timeout: 10s, step_min_duration: "
             "1s, step_max_duration: 4s, prompts: {input_tokens: 8, output_tokens: 10}, "
             "slo: {ttft_p90: 150ms, tpot_p90: 20ms}}", "warmup: 2, max_duration: 12s")
    assert c.workload.label().startswith("capacity-ttft_p90-150ms-tpot_p90-20ms")
    r = run_cell(c, None)
    if r.status == "failed" and "may be the generator's, not the system's" in (r.reason or ""):
        # a known defect, not a pass (issue 27): the generative client's own send lag at the
        # first step, seen once in a fresh clone's CI at 60/s; any other failure fails
        pytest.xfail(f"the generator's own send lag decided the first step (issue 27): "
                     f"{r.reason}")
    assert r.status == "passed", r.reason
    b, steps = r.load["bracket"], r.load["steps"]
    assert r.load["max_rate"] == b["passed"] and r.load["client_processes"] == 1
    assert 0.4 * capacity <= b["passed"] <= 1.05 * capacity, (b, capacity, steps)
    assert b["failed"] is not None and b["failed"] <= 2.5 * capacity, (b, capacity)
    assert [s["rate"] for s in steps][:2] == [60, 120]
    assert all(s["verdict"] == "pass" for s in steps if s["rate"] <= b["passed"])
    # the figures are those of the highest passing step: its requests met the SLO
    g = r.generative
    assert g["goodput"]["share"] > 0.9 and r.slo["verdict"] == "pass", (g["goodput"], r.slo)
    assert g["ttft_ms"]["percentiles"]["p90"]["value"] <= 150


def test_capacity_search_fails_when_one_bound_is_never_met(mock_server, tmp_path):
    """TTFT is easily met but every gap is 5 ms against a TPOT bound of 2 ms: no rate meets
    the whole SLO, and the cell fails saying so (a goodput search, not a TTFT search)."""
    url = mock_server(ttft=0.005, itl=0.005)
    c = cell(tmp_path, url, "{scenario: capacity, rate: 40, timeout: 5s, step_min_duration: "
             "0.5s, step_max_duration: 5s, prompts: {input_tokens: 8, output_tokens: 6}, "
             "slo: {ttft_p90: 1s, tpot_p90: 2ms}}", "warmup: 1, max_duration: 10s")
    r = run_cell(c, None)
    assert r.status == "failed" and "proved no rate" in r.reason, r.reason
    steps = r.load["steps"]
    assert [s["verdict"] for s in steps] == ["fail", "fail"] and r.load["max_rate"] is None
    assert r.slo["metrics"]["ttft_p90"]["verdict"] != "fail"
    assert r.slo["metrics"]["tpot_p90"]["verdict"] == "fail"


# ----------------------------------------------------------------------------- client processes

def _child_clock(q):
    q.put(time.perf_counter_ns())


def test_perf_counter_is_one_clock_across_processes():
    """Client processes time requests against a start time the parent chose: the clock must
    be the same in both (CLOCK_MONOTONIC on Linux)."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    before = time.perf_counter_ns()
    proc = ctx.Process(target=_child_clock, args=(q,))
    proc.start()
    child = q.get(timeout=30)
    proc.join(10)
    after = time.perf_counter_ns()
    assert before < child < after


def test_a_client_process_keeps_known_timings(mock_server, tmp_path):
    """A client process sending at the scheduled times from its own event loop: the same
    TTFT/ITL as a reference client (within 8%), and the send lag reported as for the
    in-process client. (One process: on this 2-core host two clients and the server
    time-share the cores, and a chunk read late moves ITL. 8%, not the 5% the in-process
    client is held to at 2/s: at 20/s the mock serves ~2.6 streams at once, which itself
    lengthens its gaps against the one-at-a-time reference; +5.1% was seen once in ~16 runs.)"""
    url = mock_server(ttft=0.05, itl=0.005)
    ref = _reference_client(url, 6, 16)
    c = cell(tmp_path, url, "{scenario: server, arrival: poisson, rate: 20, timeout: 10s, "
             "keep_requests: true, client_processes: 1, "
             "prompts: {input_tokens: 32, output_tokens: 16}}")
    r = run_cell(c, None)
    ref2 = _reference_client(url, 6, 16)
    assert r.status == "passed", r.reason
    g = r.generative
    ref_ttft, ref_itl = (ref[0] + ref2[0]) / 2, (ref[1] + ref2[1]) / 2
    ttft, itl = (g[f"{m}_ms"]["percentiles"]["p50"]["value"] for m in ("ttft", "itl"))
    assert abs(ttft / ref_ttft - 1) < 0.08 and abs(itl / ref_itl - 1) < 0.08, \
        (ttft, ref_ttft, itl, ref_itl)
    assert r.load["client_processes"] == 1 and len(r.load["client_cpu_s"]) == 1
    # what the processes offered, against the target, as an in-process open loop says it
    assert r.load["offered"]["target_rate"] == pytest.approx(20.0)
    assert r.load["offered_rate"] == r.load["offered"]["offered_rate"] > 0
    assert sorted(q["index"] for q in r.requests) == list(range(len(r.requests)))
    assert len(r.requests) == r.load["issued"] > 20
    for q in r.requests:
        assert q["ok"] and len(q["chunks_ms"]) == q["output_tokens"] == 16
        assert q["scheduled_ms"] <= q["dispatched_ms"] <= q["sent_ms"] < q["first_token_ms"]
    lag = g["send_lag_ms"]
    assert 0 <= lag["issuer"]["p50"] <= lag["client"]["p50"] < 5
    assert r.load["send_lag_ms"]["p99"] == pytest.approx(lag["issuer"]["p99"], abs=1e-3)
    assert g["tokens"]["prompt_check"]["exact"] == 1.0
    xfail_if_client_lag(r.valid, r.load.invalid_reasons)   # seen once in CI


def test_two_client_processes_merge_their_shards_and_count_http_500s(mock_server, tmp_path):
    """Request i is sent by process i % 2: the parent gets every request once, in one
    timeline, and the failures with the worker's exception type."""
    url = mock_server(ttft=0.005, itl=0.001, fail_every=4)
    r = run_cell(cell(tmp_path, url, "{scenario: server, rate: 30, timeout: 5s, "
                      "keep_requests: true, client_processes: 2, "
                      "prompts: {input_tokens: 8, output_tokens: 4}}",
                      "warmup: 0, min_duration: 0.5s, max_duration: 1s, min_queries: 10"), None)
    assert r.status == "failed" and "HTTP 500" in r.reason and "injected failure" in r.reason
    assert r.errors["errors"] > 0 and r.latency_ms.n > 0
    assert r.errors["kinds"][0]["type"] == "OpenAIError"      # the worker's exception type
    assert r.load["client_processes"] == 2 and len(r.load["client_cpu_s"]) == 2
    indices = sorted(q["index"] for q in r.requests)
    # the first failure stops the run (no errors allowed): a handful of requests
    assert indices == list(range(len(indices))) and len(indices) == r.load["issued"] >= 4
    sched = [q["scheduled_ms"] for q in sorted(r.requests, key=lambda q: q["index"])]
    assert sched == sorted(sched)       # both shards on one schedule from one start
    assert all(q["scheduled_ms"] <= q["dispatched_ms"] <= q["sent_ms"] for q in r.requests)
    assert sum(not q["ok"] for q in r.requests) == r.errors["errors"]
