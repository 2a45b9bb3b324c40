"""An asyncio client for OpenAI-compatible servers (`/v1/chat/completions`, `/v1/completions`),
streaming or not, that times every request as a generative benchmark needs it.

Per request it records clock readings (time.perf_counter_ns, the same clock as the issuer):
when it was handed to the event loop, when the request was actually written, the first chunk
carrying text (first token), every chunk carrying text, and the end of the response; the
server's own `usage` (prompt and completion tokens), the number of text chunks (a server may
put several tokens in one chunk: the two counts are reported side by side, never mixed), the
HTTP status, the server's response id and the error text of a failed request.

Streams are Server-Sent Events: `data: {json}` lines ending with `data: [DONE]`; usage arrives
in a last chunk with no choices when asked for with `stream_options: {include_usage: true}`.
The API key comes from an environment variable named in the spec and is only put in the
request header: it is never stored in a record or a result.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_ERROR_BODY = 300           # characters of a failed response's body kept in the error


class OpenAIError(RuntimeError):
    """A request the server answered with an error (HTTP status >= 400, an error event in
    the stream, a malformed stream)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class RequestRecord:
    """One request's timeline (perf_counter_ns) and what the server said about it."""
    index: int
    scheduled_ns: int = 0           # when it was due (open loop: the schedule; closed: ready)
    dispatched_ns: int = 0          # when the issuer handed it to the client's event loop
    sent_ns: int = 0                # the client starts sending: a pooled connection is
                                    # taken and the headers are written after this
    first_token_ns: int | None = None
    chunk_ns: list[int] = field(default_factory=list)   # every chunk carrying text
    end_ns: int | None = None       # response complete (after [DONE] or the body)
    status: int | None = None       # HTTP status
    ok: bool = False
    error: str | None = None
    response_id: str | None = None
    prompt_tokens: int | None = None        # usage.prompt_tokens
    output_tokens: int | None = None        # usage.completion_tokens
    finish_reason: str | None = None
    expected_prompt_tokens: int | None = None   # what the prompt was built to (synthetic)
    max_tokens: int | None = None
    conversation: int | None = None
    turn: int | None = None
    # the lean client (serving/lean_stream.py): (arrival ns, body bytes) as they came, parsed
    # into the fields above after the window, then emptied
    arrivals: list = field(default_factory=list)

    @property
    def content_chunks(self) -> int:
        return len(self.chunk_ns)

    def to_json(self, origin_ns: int) -> dict:
        """Times in ms from origin_ns (the run's start), for the run file."""
        def ms(t):
            return None if t is None else round((t - origin_ns) / 1e6, 4)
        return {"index": self.index, "scheduled_ms": ms(self.scheduled_ns),
                "dispatched_ms": ms(self.dispatched_ns), "sent_ms": ms(self.sent_ns),
                "first_token_ms": ms(self.first_token_ns),
                "chunks_ms": [ms(t) for t in self.chunk_ns], "end_ms": ms(self.end_ns),
                "status": self.status, "ok": self.ok, "error": self.error,
                "response_id": self.response_id, "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens, "content_chunks": self.content_chunks,
                "finish_reason": self.finish_reason,
                "expected_prompt_tokens": self.expected_prompt_tokens,
                "max_tokens": self.max_tokens, "conversation": self.conversation,
                "turn": self.turn}


def api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable; a missing variable is the user's to fix."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise OpenAIError(f"api_key_env names the environment variable {env_name}, "
                          f"which is not set")
    return value


def request_body(api: str, model: str, prompt, max_tokens: int | None, stream: bool,
                 extras: dict | None = None) -> dict:
    """The JSON body of one request. prompt: a string, or chat messages (a list)."""
    body: dict = {"model": model}
    if api == "chat":
        body["messages"] = prompt if isinstance(prompt, list) else \
            [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt if isinstance(prompt, str) else \
            "\n".join(m["content"] for m in prompt)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(extras or {})
    return body


class StreamParser:
    """The server-sent events of one streamed completion, fed as they arrived: `feed(now,
    data)` splits whatever arrived into lines and applies each complete `data:` event to the
    record, timed `now` (a line is timed when its end arrives); True at `data: [DONE]`.
    Raises OpenAIError for an error event. The aiohttp client feeds it as it reads, the lean
    client (serving/lean_stream.py) after the window from what it stamped on arrival."""

    def __init__(self, record: RequestRecord, chat: bool):
        self.record, self.chat, self.buf = record, chat, b""

    def feed(self, now: int, data: bytes) -> bool:
        self.buf += data
        if b"\n" not in data:
            return False
        lines = self.buf.split(b"\n")
        self.buf = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue        # blank separators, comments (": ping"), event names
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return True
            self._chunk(json.loads(payload), now)
        return False

    def finish(self) -> None:
        """The stream ended: complete only if its last event was [DONE]."""
        if self.buf.startswith(b"data:") and self.buf[5:].strip() == b"[DONE]":
            return                  # no newline after the last event: still complete
        raise OpenAIError("the stream ended without `data: [DONE]`")

    def _chunk(self, chunk: dict, now: int) -> None:
        record, chat = self.record, self.chat
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            raise OpenAIError(f"error in stream: "
                              f"{err.get('message', err) if isinstance(err, dict) else err}")
        if record.response_id is None:
            record.response_id = chunk.get("id")
        usage = chunk.get("usage")
        if usage:
            record.prompt_tokens = usage.get("prompt_tokens", record.prompt_tokens)
            record.output_tokens = usage.get("completion_tokens", record.output_tokens)
        for choice in chunk.get("choices") or ():
            piece = ((choice.get("delta") or {}).get("content") if chat
                     else choice.get("text"))
            if piece:
                if record.first_token_ns is None:
                    record.first_token_ns = now
                record.chunk_ns.append(now)
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]


class OpenAIClient:
    """One aiohttp session to one server; `await client.send(record, body_bytes)` fills the
    record. Create and use it inside one running event loop."""

    def __init__(self, url: str, api: str = "chat", stream: bool = True,
                 api_key_env: str | None = None, timeout: float = 60.0,
                 connections: int = 1000):
        import aiohttp
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.api, self.stream = api, stream
        self.endpoint = self.url + PATHS[api]
        headers = {"Content-Type": "application/json"}
        key = api_key(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._aiohttp = aiohttp
        self.timeout = timeout
        # no pool limit below the load: a client-side slot must never queue a request
        self.session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
            auto_decompress=False)

    async def close(self) -> None:
        await self.session.close()

    async def send(self, record: RequestRecord, body: bytes) -> RequestRecord:
        """Send one request and time it; raises OpenAIError or a timeout/connection error
        (the record keeps what arrived before it failed)."""
        clock = time.perf_counter_ns
        record.sent_ns = clock()
        async with self.session.post(self.endpoint, data=body) as resp:
            record.status = resp.status
            if resp.status >= 400:
                text = (await resp.text(errors="replace"))[:_ERROR_BODY]
                record.end_ns = clock()
                raise OpenAIError(f"HTTP {resp.status}: {' '.join(text.split())}", resp.status)
            if self.stream:
                await self._read_stream(resp, record, clock)
            else:
                raw = await resp.read()
                record.end_ns = clock()
                self._read_body(json.loads(raw), record)
        record.ok = True
        return record

    async def _read_stream(self, resp, record: RequestRecord, clock) -> None:
        # Whatever arrived is read at once and split into lines: one await per read rather
        # than per line halves the loop's work per chunk (measured in
        # benchmarks/generative_client_lag.py), and the loop's spare time is what keeps the
        # next scheduled send on time.
        parser = StreamParser(record, self.api == "chat")
        async for data in resp.content.iter_any():
            if parser.feed(clock(), data):
                record.end_ns = clock()
                return
        record.end_ns = clock()
        parser.finish()

    def _read_body(self, doc: dict, record: RequestRecord) -> None:
        """A non-streamed response: one arrival, the whole text at once."""
        if "error" in doc and not doc.get("choices"):
            raise OpenAIError(f"error in response: {doc['error']}")
        record.response_id = doc.get("id")
        usage = doc.get("usage") or {}
        record.prompt_tokens = usage.get("prompt_tokens")
        record.output_tokens = usage.get("completion_tokens")
        choice = (doc.get("choices") or [{}])[0]
        text = ((choice.get("message") or {}).get("content") if self.api == "chat"
                else choice.get("text"))
        record.finish_reason = choice.get("finish_reason")
        if text:
            record.first_token_ns = record.end_ns
            record.chunk_ns.append(record.end_ns)


def error_text(exc: BaseException) -> str:
    """A failed request's error as the record keeps it: 'Type: message', or the type alone."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
