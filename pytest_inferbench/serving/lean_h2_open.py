"""The open loop's lean gRPC client: each call's HTTP/2 frames, built before the window, written
by the issuing thread itself on one of a few connections that carry many calls at once; the
answers read on that thread while it waits for its next send (or, for a driver that only
sleeps, by one receiving thread).

Why not grpcio's call (serving/lean_grpc.py, the client where hpack is missing): starting a
call there goes through grpc's call machinery and its channel thread, and on a 2-core host
its send lag (the scheduled time to the call's start) reached p99 0.57 ms against Triton, a
sixth of what it measured: tests/test_lean_grpc.py's open-loop cell went INVALID for it.
Here a call is the prepared frames with the stream id patched in and one `sendall`; the
answers' frames are parsed as they arrive (serving/lean_h2.py: HPACK for every header block,
in order, flow control, SETTINGS, PING, GOAWAY, RST_STREAM). A request larger than the
server's flow-control windows is sent as they open; its connection takes no other call
until then.

A status other than OK is a failed query carrying the server's message; a call unanswered
after the endpoint's timeout (or that the server ended with DEADLINE_EXCEEDED) counts as a
timeout, and is cancelled with RST_STREAM: HTTP/2 keeps the connection for the other calls.
A connection that breaks fails the calls it carried. Calls still open at stop are not
reported (the open loop counts them).
"""

from __future__ import annotations

import select
import struct
import threading
import time

from .async_sut import with_write_time
from .lean_h2 import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PADDED, PRIORITY,
                      RST_STREAM, SETTINGS, WINDOW_UPDATE, U32, Connection, ProtocolError,
                      Template, call_error, frame, read_status, split_url)
from .lean_pool import POLL_S, Pumped

_PER_CONNECTION = 128       # concurrent calls on one connection, at most (or the server's)
_WARM_CALLS = 8             # concurrent calls per warm-up round (two rounds)
_CANCEL = 0x8               # RST_STREAM's error code


class _Call:
    __slots__ = ("query", "sent_ns", "deadline_ns", "status", "message")

    def __init__(self, query: int, sent_ns: int, deadline_ns: int):
        self.query, self.sent_ns, self.deadline_ns = query, sent_ns, deadline_ns
        self.status, self.message = None, ""


class MuxConnection(Connection):
    """One HTTP/2 connection carrying many calls; `feed` and `expire` return the calls they
    ended as (query, error or None, sent_ns)."""

    def __init__(self, address, timeout: float, template: Template):
        super().__init__(address, timeout)
        self.template = template.copy()
        self.calls: dict[int, _Call] = {}
        self.blocked: list | None = None    # [stream, frames, at, window] waiting to be sent
        self.block: list | None = None      # [stream, end_stream, data]: a header block begun

    def takes(self) -> bool:
        return (self.usable() and self.blocked is None
                and len(self.calls) < min(self.max_streams, _PER_CONNECTION))

    def send(self, query: int, timeout_ns: int) -> int:
        """Start a call: its frames written (those the windows allow). Returns the send time."""
        stream = self.next_stream
        self.next_stream += 2
        data, size = self.template.for_stream(stream), self.template.body_size
        sent = time.perf_counter_ns()
        self.calls[stream] = _Call(query, sent, sent + timeout_ns)
        if size <= self.send_window and size <= self.stream_window:
            self.sock.sendall(data)         # the hot path: one write
            self.send_window -= size
        else:
            head = self.template.headers_size
            self.sock.sendall(data[:head])
            self.blocked = [stream, bytes(data), head, self.stream_window]
            self._flush()
        return sent

    def _flush(self) -> None:
        """Send the blocked request's DATA frames as far as the windows allow."""
        stream, data, at, window = self.blocked
        while at < len(data):
            length = U32.unpack_from(data, at)[0] >> 8
            if length > min(window, self.send_window):
                self.blocked[2:] = [at, window]
                return
            self.sock.sendall(data[at:at + 9 + length])
            window -= length
            self.send_window -= length
            at += 9 + length
        self.blocked = None

    def feed(self, data: bytes) -> list:
        """Frames that arrived: parsed, and the calls they ended."""
        self.buf += data
        ended: list = []
        while (whole := self._next_frame()) is not None:
            self._on_frame(*whole, ended)
        if self.goaway is not None:         # calls past the server's last are refused
            for stream in [s for s in self.calls if s > self.goaway]:
                self._end(stream, ended, ProtocolError("the server refused the call (GOAWAY)"))
        return ended

    def _on_frame(self, kind: int, flags: int, stream: int, payload, ended: list) -> None:
        if self.block is not None:          # only a header block's CONTINUATIONs until it ends
            if kind != CONTINUATION or stream != self.block[0]:
                raise ProtocolError("a header block was not continued")
            self.block[2] += bytes(payload)
            if flags & END_HEADERS:
                self._headers(*self.block, ended)
                self.block = None
        elif kind == HEADERS:
            data = bytes(payload)
            if flags & PADDED:
                data = data[1:len(data) - data[0]]
            if flags & PRIORITY:
                data = data[5:]
            if flags & END_HEADERS:
                self._headers(stream, flags & END_STREAM, data, ended)
            else:
                self.block = [stream, flags & END_STREAM, data]
        elif kind == DATA:
            self._consume(len(payload))
            if flags & END_STREAM and stream in self.calls:
                self._end(stream, ended)
        elif kind == RST_STREAM and stream in self.calls:
            code = U32.unpack_from(payload, 0)[0]
            self._end(stream, ended, ProtocolError(f"the server reset the call (HTTP/2 error "
                                                   f"{code})"))
        elif kind == WINDOW_UPDATE and stream:
            if self.blocked is not None and self.blocked[0] == stream:
                self.blocked[3] += U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
                self._flush()
        else:
            before = self.stream_window
            self._control(kind, flags, stream, payload)
            if self.blocked is not None and (kind in (WINDOW_UPDATE, SETTINGS)):
                self.blocked[3] += self.stream_window - before   # a new initial window
                self._flush()

    def _headers(self, stream: int, end_stream: int, block: bytes, ended: list) -> None:
        """Every header block is decoded, a cancelled call's too: HPACK's table is shared."""
        headers = self.decode(block)
        call = self.calls.get(stream)
        if call is not None:
            call.status, call.message = read_status(headers, call.status, call.message)
            if end_stream:
                self._end(stream, ended)

    def _end(self, stream: int, ended: list, error: BaseException | None = None) -> None:
        call = self.calls.pop(stream)
        if self.blocked is not None and self.blocked[0] == stream:
            self.blocked = None         # the server ended it before the request was all sent
        if error is None:
            error = call_error(call.status, call.message)
        ended.append((call.query, error, call.sent_ns))

    def expire(self, now: int, timeout: float) -> list:
        """Calls past their deadline: cancelled (RST_STREAM), each a timeout."""
        ended: list = []
        for stream in [s for s, c in self.calls.items() if now > c.deadline_ns]:
            self.sock.sendall(frame(RST_STREAM, 0, stream, struct.pack(">I", _CANCEL)))
            self._end(stream, ended, TimeoutError(f"no answer in {timeout:g}s"))
        return ended

    def fail_all(self, exc: BaseException) -> list:
        ended = [(c.query, exc, c.sent_ns) for c in self.calls.values()]
        self.calls.clear()
        return ended


class LeanH2SUT(Pumped):
    """Open-loop system under test (workload/open_loop.py's protocol): issue(i) writes the
    prepared call on a connection with room from the caller's thread; answers are read in
    the caller's `wait_until` (started with pump=True) or by a receiving thread. A
    statistics window, when given, opens after the warm-up calls and closes at stop."""

    write_hook = "socket write (prepared HTTP/2 frames, issuer thread)"

    def __init__(self, url: str, method: str, request: bytes, timeout: float, window=None,
                 metadata=()):
        self.address, authority = split_url(url)
        self.request, self.timeout, self.window = request, timeout, window
        self.template = Template(authority, method, request, tuple(metadata), timeout)

    def start(self, complete, pump: bool = False):
        self._conns: dict[int, MuxConnection] = {}
        self._epoll = select.epoll()
        self._lock = threading.Lock()       # a connection's frames and calls: one writer
        self._stop = threading.Event()
        self._warm()
        self._report = with_write_time(complete)
        self._start_receiver(pump)
        if self.window is not None:     # the server's counts from here: warm-up left out
            self.window.open()
        return self.issue

    def _warm(self) -> None:
        """Open a connection and send two rounds of concurrent calls, waiting for their
        answers, before the window (a cold path's first calls are slow). Their errors stay
        out of the run, as the engine's warm-up's do; a call that times out ends the warm-up
        (a stalled server: the run will count it)."""
        late: list = []
        self._report = lambda i, error, sent: late.append(isinstance(error, TimeoutError))
        for _ in range(2):
            late.clear()
            for i in range(_WARM_CALLS):
                self.issue(-1 - i)
            deadline = time.perf_counter_ns() + int(self.timeout * 1e9) + 10**8
            while len(late) < _WARM_CALLS and time.perf_counter_ns() < deadline:
                self._pump(min(time.perf_counter_ns() + 10**7, deadline), 0)
            if any(late) or len(late) < _WARM_CALLS:
                break

    def issue(self, i: int) -> None:
        """The issuer's thread: a connection with room (or a new one), the call's frames."""
        conn = None
        try:
            with self._lock:
                conn = self._take()
                conn.send(i, int(self.timeout * 1e9))
        except (OSError, ProtocolError) as exc:
            if conn is None or not conn.calls:
                self._report(i, exc, time.perf_counter_ns())
            if conn is not None:
                self._lose(conn, exc)

    def _take(self) -> MuxConnection:
        for conn in self._conns.values():
            if conn.takes():
                return conn
        conn = MuxConnection(self.address, self.timeout, self.template)
        self._conns[conn.sock.fileno()] = conn
        self._epoll.register(conn.sock.fileno(), select.EPOLLIN)
        return conn

    def wait_until(self, until_ns: int) -> None:
        """The open loop's wait between sends (started with pump=True): answers are read
        until until_ns, on the issuer's own thread."""
        self._pump(until_ns)

    def _receive(self) -> None:
        while not self._stop.is_set():
            self._pump(time.perf_counter_ns() + int(POLL_S * 1e9), 0)

    def _read(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(262144)
            if not data:
                raise ConnectionError("the server closed the connection")
            with self._lock:
                ended = conn.feed(data)
        except Exception as exc:  # noqa: BLE001 - closed, refused, a broken frame or header
            self._lose(conn, exc)
            return
        self._tell(ended)
        if conn.goaway is not None and not conn.calls:
            self._lose(conn, None)

    def _expire(self, now: int) -> None:
        for conn in list(self._conns.values()):
            try:
                with self._lock:
                    ended = conn.expire(now, self.timeout)
            except OSError as exc:
                self._lose(conn, exc)
                continue
            self._tell(ended)

    def _tell(self, ended: list) -> None:
        for query, error, sent in ended:
            self._report(query, error, sent)

    def _lose(self, conn: MuxConnection, exc: BaseException | None) -> None:
        """Drop a connection; the calls it carried fail with exc."""
        with self._lock:
            if self._conns.pop(conn.sock.fileno(), None) is not None:
                self._epoll.unregister(conn.sock.fileno())
            ended = conn.fail_all(exc) if exc is not None else []
            conn.close()
        self._tell(ended)

    def stop(self) -> None:
        if self.window is not None:
            self.window.close()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._epoll.close()
