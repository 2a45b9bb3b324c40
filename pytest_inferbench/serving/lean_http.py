"""The open loop's lean KServe v2 HTTP client: the request built once before the window, written
by the issuing thread itself, answers read by one receiving thread.

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

import collections
import json
import select
import socket
import threading
import time
from urllib.parse import quote, urlsplit

from .async_sut import with_write_time

_WARM_CONNECTIONS = 8
_POLL_S = 0.005             # the receiver's longest sleep: timeouts are found this promptly
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
        head["Content-Type"] = "application/octet-stream"
        head["Inference-Header-Content-Length"] = str(json_size)
    head["Content-Length"] = str(len(body))
    lines = [f"POST /v2/models/{quote(model)}/infer HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection:
    """One keep-alive connection and the query it carries (one at a time)."""

    def __init__(self, address: tuple[str, int], timeout: float):
        import httptools
        # the timeout bounds a write (a server that stopped reading) and a warm-up read;
        # the receiver reads only what epoll says has arrived
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = httptools.HttpResponseParser(self)
        self.query: int | None = None
        self.sent_ns = self.deadline_ns = 0
        self.body: list[bytes] = []
        self.done = self.keep_alive = False

    def begin(self, query: int, deadline_ns: int) -> None:
        self.query, self.deadline_ns, self.body, self.done = query, deadline_ns, [], False

    # httptools callbacks (the receiving thread)
    def on_body(self, data: bytes) -> None:
        if sum(map(len, self.body)) < _ERROR_BODY:
            self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()   # valid inside the callback only

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

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class LeanHttpSUT:
    """Open-loop system under test (workload/open_loop.py's protocol): issue(i) writes the
    prepared request on an idle connection from the caller's thread; completions come from
    the receiving thread with the write time. A statistics window, when given, opens after
    the warm-up requests and closes at stop."""

    write_hook = "socket write (prepared request, issuer thread)"

    def __init__(self, url: str, request: bytes, timeout: float, window=None):
        self.address, self.request, self.timeout = host_port(url), request, timeout
        self.window = window

    def start(self, complete):
        self._report = with_write_time(complete)
        self._epoll = select.epoll()
        self._conns: dict[int, _Connection] = {}
        self._idle: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()     # a failed write (issuer) and a read (receiver)
        self._warm()
        self._thread = threading.Thread(target=self._receive, name="inferbench-receiver",
                                        daemon=True)
        self._thread.start()
        if self.window is not None:     # the server's counts from here: warm-up left out
            self.window.open()
        return self.issue

    def _connect(self) -> _Connection:
        conn = _Connection(self.address, self.timeout)
        self._conns[conn.sock.fileno()] = conn
        self._epoll.register(conn.sock.fileno(), select.EPOLLIN)
        return conn

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
        conn.begin(-1, 0)
        conn.sock.sendall(self.request)
        while not conn.done:
            data = conn.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection during warm-up")
            conn.parser.feed_data(data)

    def issue(self, i: int) -> None:
        """The issuer's thread: take an idle connection (or open one), stamp, write."""
        try:
            conn = self._idle.pop()
        except IndexError:
            try:
                conn = self._connect()
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

    def _finish(self, conn: _Connection) -> None:
        i, err = conn.query, conn.error()
        conn.query = None
        self._report(i, err, conn.sent_ns)
        if err is None and conn.keep_alive:
            self._idle.append(conn)
        else:
            self._drop(conn, None)

    def _drop(self, conn: _Connection, exc: BaseException | None) -> None:
        """Close a connection; the query it carried, if any, fails with exc."""
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        conn.close()
        with self._lock:
            i, conn.query = conn.query, None
        if i is not None and exc is not None:
            self._report(i, exc, conn.sent_ns)

    def _receive(self) -> None:
        import httptools
        while not self._stop.is_set():
            for fd, _ in self._epoll.poll(_POLL_S):
                conn = self._conns.get(fd)
                if conn is None:
                    continue
                try:
                    data = conn.sock.recv(262144)
                except OSError as exc:
                    self._drop(conn, exc)
                    continue
                if not data:
                    self._drop(conn, ConnectionError("the server closed the connection"))
                    continue
                try:
                    conn.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    self._drop(conn, exc)
                    continue
                if conn.done and conn.query is not None:
                    self._finish(conn)
            self._expire(time.perf_counter_ns())

    def _expire(self, now: int) -> None:
        for conn in list(self._conns.values()):
            if conn.query is not None and not conn.done and now > conn.deadline_ns:
                self._drop(conn, TimeoutError(f"no answer in {self.timeout:g}s"))

    def stop(self) -> None:
        if self.window is not None:
            self.window.close()
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        self._epoll.close()
