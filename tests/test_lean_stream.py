"""The generative open loop's lean streaming client (serving/lean_stream.py), against the tests'
controlled OpenAI-compatible server: it sends exactly the requests the aiohttp client sends,
its tokens carry the server's known timings, and a server that closes a stream, stalls or
answers 500 fails only those requests, with nothing left hanging."""

import json
import threading
import time

import pytest

pytest.importorskip("httptools", reason="httptools not installed: pip install httptools "
                    "(the lean clients' HTTP parser)")

from pytest_inferbench.run.cell import run_cell  # noqa: E402
from pytest_inferbench.serving.lean_stream import build_stream_request  # noqa: E402
from test_generative import cell, mock_server  # noqa: E402,F401 - the module's fixture

FAST = "warmup: 2, min_duration: 0.5s, max_duration: 1s, min_queries: 5"


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_server_receives_what_the_aiohttp_client_sends(mock_server, tmp_path,
                                                           monkeypatch):
    log = tmp_path / "requests.jsonl"
    url = mock_server(ttft=0.002, itl=0.001, log=str(log))
    monkeypatch.setenv("IB_LEAN_KEY", "sk-lean")
    c = cell(tmp_path, url, "{scenario: server, rate: 20, timeout: 5s, keep_requests: true, "
             "prompts: {input_tokens: 8, output_tokens: 4}}", FAST, ", api_key_env: IB_LEAN_KEY")
    r = run_cell(c, None)
    assert r.status == "passed", r.reason
    assert r.load.open_loop_client == "lean-stream"
    got = _log(log)
    # the probe, then the warm-up's two requests (aiohttp: prepared 0 and 1), then the open
    # loop's (the lean client: prepared 0, 1, ...): the same requests, decoded alike
    warm, lean = got[-len(r.requests) - 2:-len(r.requests)], got[-len(r.requests):]
    assert [w["body"] for w in warm] == [q["body"] for q in lean[:2]]
    assert all(q["headers"] == {"Content-Type": "application/json",
                                "Authorization": "Bearer sk-lean"} for q in warm + lean)
    assert all(q["body"]["stream"] is True for q in lean)
    # every record is a whole stream: 4 tokens timed after its send
    for rec in r.requests:
        assert rec["ok"] and len(rec["chunks_ms"]) == rec["output_tokens"] == 4
        assert rec["sent_ms"] < rec["first_token_ms"] <= rec["chunks_ms"][-1] <= rec["end_ms"]


def test_a_prepared_request_is_one_http_request():
    import httptools

    class Seen:
        def __init__(self):
            self.headers, self.body, self.url, self.done = {}, b"", None, False

        def on_url(self, url):
            self.url = url

        def on_header(self, name, value):
            self.headers[name.decode()] = value.decode()

        def on_body(self, data):
            self.body += data

        def on_message_complete(self):
            self.done = True

    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "é"}]}).encode()
    raw = build_stream_request("http://127.0.0.1:8000/base/", "chat", body,
                               {"Authorization": "Bearer k"})
    seen = Seen()
    parser = httptools.HttpRequestParser(seen)
    parser.feed_data(raw)
    assert seen.done and parser.get_method() == b"POST"
    assert seen.url == b"/base/v1/chat/completions" and seen.body == body
    assert seen.headers["Content-Length"] == str(len(body))
    assert seen.headers["Authorization"] == "Bearer k"


@pytest.mark.parametrize("failure, words", [
    ({"close_every": 3}, "closed the connection"),
    ({"stall_every": 3}, "TimeoutError"),
])
def test_a_stream_that_breaks_fails_only_its_request(mock_server, tmp_path, failure, words):
    url = mock_server(ttft=0.005, itl=0.002, **failure)
    c = cell(tmp_path, url, "{scenario: server, rate: 30, timeout: 1s, keep_requests: true, "
             "prompts: {input_tokens: 8, output_tokens: 6}}",
             "warmup: 0, min_duration: 0.5s, max_duration: 1s, min_queries: 10, "
             "max_error_rate: 0.5")
    started = time.perf_counter()
    r = run_cell(c, None)
    assert time.perf_counter() - started < 15          # nothing hangs
    assert r.status == "passed", r.reason
    failed = [q for q in r.requests if not q["ok"]]
    good = [q for q in r.requests if q["ok"]]
    assert failed and good and all(words in q["error"] for q in failed), failed[:2]
    assert 0.2 < r.errors["error_rate"] < 0.5
    assert all(len(q["chunks_ms"]) == 6 for q in good)
    if "close_every" in failure:        # what arrived before the close is kept
        assert all(len(q["chunks_ms"]) == 2 for q in failed), failed[:2]


def test_the_open_loop_reads_the_streams_on_the_issuers_own_thread(mock_server, tmp_path,
                                                                   monkeypatch):
    """run_open_loop starts the lean client with pump=True: every read, and so every token's
    stamp, happens in the issuer's waits, on the thread that runs the cell (no receiver)."""
    from pytest_inferbench.serving.lean_stream import LeanStreamSUT
    readers = set()
    read = LeanStreamSUT._read
    monkeypatch.setattr(LeanStreamSUT, "_read", lambda self, fd: (
        readers.add(threading.get_ident()), read(self, fd))[1])
    url = mock_server(ttft=0.002, itl=0.001)
    c = cell(tmp_path, url, "{scenario: server, rate: 20, timeout: 5s, "
             "prompts: {input_tokens: 8, output_tokens: 4}}", FAST)
    r = run_cell(c, None)
    assert r.status == "passed", r.reason
    assert r.load.open_loop_client == "lean-stream" and r.latency.n > 0
    assert readers == {threading.get_ident()}
