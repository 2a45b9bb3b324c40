"""The generative open loop's lean streaming client: each request built before the window,
written by the issuing thread itself, streamed answers read on that thread while it waits for
the next send (or by one receiving thread, for a driver that only sleeps), each read only
stamped; the server-sent events are parsed after the window.

Why not aiohttp on the hot path: each request there is a hand-off to an event loop (a
wake-up), a task, aiohttp's request machinery, and then per chunk a StreamReader wake-up and a
JSON parse on the same loop that must make the next send on time. Here a request is one
`sendall` of prepared bytes on an idle keep-alive connection, stamped right before it, from
the issuer's thread (no wake-up on the critical path); the reader (the issuer in its waits,
polling the last 100 us before a send, as serving/lean_pool.py says) reads whatever
arrived, stamps it, and hands it to httptools (llhttp, C) to undo the chunked encoding. A
token's time is the arrival of the read that completed its `data:` line, as the aiohttp
client times it (serving/openai_client.py's StreamParser does the parsing for both).

A status of 400 or more fails the request with the server's message; a connection the server
closes fails the request it carried (what arrived before is kept); a request unanswered after
the timeout fails as a timeout and its connection is dropped, so that a late answer is never
taken for another request's.
"""

from __future__ import annotations

import math
import time
from urllib.parse import urlsplit

from .lean_http import host_port
from .lean_pool import Connection, ConnectionPool
from .openai_client import PATHS, OpenAIError, RequestRecord, StreamParser, error_text

_MAX_OPEN = 256             # connections opened before the window, at most
_ERROR_BODY = 300


def build_stream_request(url: str, api: str, body: bytes, headers: dict | None = None) -> bytes:
    """The whole HTTP/1.1 request of one streamed completion, as bytes."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host, port = host_port(url)
    path = parts.path.rstrip("/") + PATHS[api]
    head = {"Host": f"{host}:{port}", "Connection": "keep-alive",
            "Content-Type": "application/json", "Accept": "text/event-stream",
            **(headers or {}), "Content-Length": str(len(body))}
    lines = [f"POST {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def connections_for(rate: float | None) -> int:
    """How many connections to open before the window: half a second of arrivals (a stream
    holds its connection for its whole answer), at least 4, at most _MAX_OPEN; more are
    opened by the issuer if they run out."""
    return max(4, min(_MAX_OPEN, math.ceil(0.5 * (rate or 8))))


class _Connection(Connection):
    """A connection and the record of the request it carries."""

    def __init__(self, address: tuple[str, int], timeout: float):
        super().__init__(address, timeout)
        self.record: RequestRecord | None = None

    def begin(self, query: int, record: RequestRecord, deadline_ns: int) -> None:
        self.query, self.record, self.deadline_ns, self.done = query, record, deadline_ns, False

    # httptools callback (the reader, inside feed_data): stamp, keep, nothing else
    def on_body(self, data: bytes) -> None:
        if self.record is not None:
            self.record.arrivals.append((self.now, data))


class LeanStreamSUT(ConnectionPool):
    """Open-loop system under test (workload/open_loop.py's protocol) for streamed OpenAI
    requests. `requests[k]` is prepared request k's bytes (request i sends i % len);
    `new_record(i)` makes request i's RequestRecord. Like workload/generative.py's
    GenerativeSUT it keeps `records`, `dispatched` and `good`; `parse()` fills the records'
    chunks after the window."""

    client = "lean-stream"
    thread_name = "inferbench-stream"

    def __init__(self, url: str, requests: list[bytes], new_record, n: int, timeout: float,
                 chat: bool, connections: int = 8):
        import numpy as np
        self.address, self.requests, self.new_record = host_port(url), requests, new_record
        self.timeout, self.chat, self.connections = timeout, chat, connections
        self.records: list[RequestRecord | None] = [None] * n
        self.dispatched = np.zeros(n, dtype=np.int64)
        self.good: list[int] = []

    def start(self, complete, pump: bool = False):
        """pump: the driver calls wait_until instead of sleeping (the open loop does), and
        what arrives is read and stamped there, on the issuer's thread."""
        self._complete = complete
        self._open()
        for _ in range(self.connections):
            try:
                self._idle.append(self._connect())
            except OSError:
                break                     # the run will count what cannot connect
        self._start_receiver(pump)
        return self.issue

    def wait_until(self, until_ns: int) -> None:
        """The open loop's wait between sends (started with pump=True)."""
        self._pump(until_ns)

    def _new_connection(self) -> _Connection:
        return _Connection(self.address, self.timeout)

    def issue(self, i: int) -> None:
        """The issuer's thread: take an idle connection (or open one), stamp, write."""
        now = time.perf_counter_ns()
        self.dispatched[i] = now
        record = self.records[i] = self.new_record(i)
        try:
            conn = self._take()
        except OSError as exc:
            self._fail(i, record, exc)
            return
        now = time.perf_counter_ns()     # a connection opened here is not the server's time
        conn.begin(i, record, now + int(self.timeout * 1e9))
        record.sent_ns = now
        try:
            conn.sock.sendall(self.requests[i % len(self.requests)])
        except OSError as exc:
            self._drop(conn, exc)

    def _fail(self, i: int, record: RequestRecord, exc: BaseException) -> None:
        record.error = error_text(exc)
        if record.end_ns is None:
            record.end_ns = time.perf_counter_ns()
        self._complete(i, exc)

    def _lost(self, conn: _Connection, query: int, exc: BaseException) -> None:
        record, conn.record = conn.record, None
        self._fail(query, record, exc)

    def _finish(self, conn: _Connection) -> None:
        """A whole response arrived: judged by its status and its last event; the events
        themselves are parsed after the window."""
        i, record = conn.query, conn.record
        conn.query = conn.record = None
        record.end_ns = conn.now
        record.status = status = conn.parser.get_status_code()
        tail = b"".join(d for _, d in record.arrivals[-2:])
        if status >= 400:
            text = b"".join(d for _, d in record.arrivals)[:_ERROR_BODY]
            record.arrivals = []
            self._fail(i, record, OpenAIError(
                f"HTTP {status}: {' '.join(text.decode('utf-8', 'replace').split())}", status))
        elif b"[DONE]" not in tail:
            self._fail(i, record, OpenAIError("the stream ended without `data: [DONE]`"))
        else:
            record.ok = True
            self.good.append(i)
            self._complete(i)
        if record.ok and conn.keep_alive:
            self._idle.append(conn)
        else:
            self._drop(conn, None)

    def stop(self) -> None:
        self._close()

    def parse(self) -> None:
        """After the window: each record's events parsed from what arrived, with the times
        they arrived; a stream that carried an error event fails its request."""
        for i, record in enumerate(self.records):
            if record is None or not record.arrivals:
                continue
            parser = StreamParser(record, self.chat)
            try:
                for now, data in record.arrivals:
                    if parser.feed(now, data):
                        break
            except (OpenAIError, ValueError) as exc:
                if record.ok:           # a failed request keeps the error it failed with
                    record.ok, record.error = False, error_text(exc)
                    self.good.remove(i)
            record.arrivals = []
