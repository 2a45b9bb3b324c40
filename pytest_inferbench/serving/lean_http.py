"""The open loop's lean KServe v2 HTTP client: the request built once before the window, written
by the issuing thread itself, answers read on that thread while it waits for the next send
(or, for a driver that only sleeps, by one receiving thread).

Why not tritonclient's asyncio client on the hot path: each query there is a hand-off to an
event loop thread (a wake-up), a task, aiohttp's request machinery and per-query encoding;
on a 2-core host that cost p99 0.42-0.55 ms between the scheduled time and the write, a
quarter of what a 1 ms model behind a server takes. Here a query is one `sendall` of
prepared bytes on an idle keep-alive connection, stamped right before it, from the issuer's
own thread (no wake-up on the critical path); the receiving thread parses replies with
httptools (llhttp, C) and reports each completion. tritonclient still builds the body
(`generate_request_body`: the same bytes its own client sends), reads metadata and checks
outputs outside the window.

A reply other than 200 is a failed query carrying the server's message; a connection the
server closes fails the query it carried; a query unanswered after the endpoint's timeout
counts as a timeout, and its connection is dropped (a late answer must not be taken for the
next query's).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote, urlsplit

from .async_sut import with_write_time
from .lean_pool import Connection, ConnectionPool, PerThread

_WARM_CONNECTIONS = 8
_ERROR_BODY = 300


class ServerError(RuntimeError):
    """An inference request the server answered with an HTTP error status."""


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def build_request(url: str, model: str, body: bytes, json_size: int | None,
                  headers: dict | None) -> bytes:
    """The whole HTTP/1.1 request (request line, headers, body) of one inference, as bytes."""
    host, port = host_port(url)
    head = {"Host": f"{host}:{port}", "Connection": "keep-alive",
            "Content-Type": "application/json", **(headers or {})}
    if json_size is not None:           # the binary tensor extension: JSON header, raw bytes
        # unlabelled, as tritonclient's blocking client sends it: a server without the
        # extension (MLServer) then answers with its codec's error (422), where a body
        # labelled application/octet-stream gets a 500 and a traceback
        head.pop("Content-Type")
        head["Inference-Header-Content-Length"] = str(json_size)
    head["Content-Length"] = str(len(body))
    lines = [f"POST /v2/models/{quote(model)}/infer HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def round_trip(conn, request: bytes, query: int) -> None:
    """Write the request on conn and read its whole answer, blocking (the warm-up, and the
    closed loop's queries)."""
    conn.begin(query, 0)
    conn.sock.sendall(request)
    while not conn.done:
        data = conn.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        conn.parser.feed_data(data)
    conn.now = time.perf_counter_ns()


class _Connection(Connection):
    """A connection and the body of its answer (kept only as far as an error message needs)."""

    def __init__(self, address: tuple[str, int], timeout: float):
        super().__init__(address, timeout)
        self.body: list[bytes] = []

    def begin(self, query: int, deadline_ns: int) -> None:
        self.query, self.deadline_ns, self.body, self.done = query, deadline_ns, [], False

    # httptools callback (the receiving thread)
    def on_body(self, data: bytes) -> None:
        if sum(map(len, self.body)) < _ERROR_BODY:
            self.body.append(data)

    def error(self) -> ServerError | None:
        status = self.parser.get_status_code()
        if status == 200:
            return None
        text = b"".join(self.body)[:_ERROR_BODY].decode("utf-8", "replace")
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            pass
        return ServerError(f"HTTP {status}: {' '.join(str(text).split())}")


class LeanHttpSUT(ConnectionPool):
    """Open-loop system under test (workload/open_loop.py's protocol): issue(i) writes the
    prepared request on an idle connection from the caller's thread; completions come from
    the receiving thread with the write time. A statistics window, when given, opens after
    the warm-up requests and closes at stop."""

    write_hook = "socket write (prepared request, issuer thread)"

    def __init__(self, url: str, request: bytes, timeout: float, window=None):
        self.address, self.request, self.timeout = host_port(url), request, timeout
        self.window = window

    def start(self, complete, pump: bool = False):
        """pump: the driver calls wait_until instead of sleeping, and answers are read there
        (on the issuer's thread) rather than by a receiving thread."""
        self._report = with_write_time(complete)
        self._open()
        self._warm()
        self._start_receiver(pump)
        if self.window is not None:     # the server's counts from here: warm-up left out
            self.window.open()
        return self.issue

    def _new_connection(self) -> _Connection:
        return _Connection(self.address, self.timeout)

    def _warm(self) -> None:
        """Open the connections and send each two requests, blocking, before the window (a
        cold path's first requests are slow). An error answer is kept out of the run, as
        the engine's warm-up is; a connection that fails is not used."""
        for _ in range(_WARM_CONNECTIONS):
            conn = None
            try:
                conn = self._connect()
                for _ in range(2):
                    self._round_trip(conn)
            except OSError as exc:      # refused, closed, or no answer in the timeout
                if conn is not None:
                    self._drop(conn, None)
                if isinstance(exc, TimeoutError):
                    break               # a stalled server: the run will count it
                continue
            conn.query = None
            if conn.keep_alive:
                self._idle.append(conn)
            else:
                self._drop(conn, None)

    def _round_trip(self, conn: _Connection) -> None:
        round_trip(conn, self.request, -1)

    def issue(self, i: int) -> None:
        """The issuer's thread: take an idle connection (or open one), stamp, write."""
        try:
            conn = self._take()
        except OSError as exc:
            self._report(i, exc, time.perf_counter_ns())
            return
        now = time.perf_counter_ns()
        conn.begin(i, now + int(self.timeout * 1e9))
        conn.sent_ns = now
        try:
            conn.sock.sendall(self.request)
        except OSError as exc:
            self._drop(conn, exc)

    def wait_until(self, until_ns: int) -> None:
        """The open loop's wait between sends (started with pump=True): answers are read
        until until_ns, on the issuer's own thread."""
        self._pump(until_ns)

    def _finish(self, conn: _Connection) -> None:
        i, err = conn.query, conn.error()
        conn.query = None
        self._report(i, err, conn.sent_ns)
        if err is None and conn.keep_alive:
            self._idle.append(conn)
        else:
            self._drop(conn, None)

    def _lost(self, conn: _Connection, query: int, exc: BaseException) -> None:
        self._report(query, exc, conn.sent_ns)

    def stop(self) -> None:
        if self.window is not None:
            self.window.close()
        self._close()


class BlockingHttpCall(PerThread):
    """The closed loop's lean HTTP client: the prepared request written on the client
    thread's own kept-alive connection and the answer read there (a closed loop's client
    waits anyway: no receiving thread, no hand-off). An answer other than 200 raises
    ServerError with the server's message and drops the connection, as the open loop's
    client does; a closed connection or a timeout raises OSError."""

    def __init__(self, url: str, request: bytes, timeout: float):
        self.address, self.request, self.timeout = host_port(url), request, timeout
        self._setup()

    def _open(self) -> _Connection:
        return _Connection(self.address, self.timeout)

    def _query(self, conn: _Connection) -> None:
        round_trip(conn, self.request, 0)
        error = conn.error()
        if error is not None:
            raise error

    def _keeps(self, conn: _Connection, exc: BaseException | None) -> bool:
        return exc is None and conn.keep_alive
