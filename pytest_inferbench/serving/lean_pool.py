"""What the lean HTTP clients share (serving/lean_http.py for KServe v2, serving/lean_stream.py
for streamed OpenAI answers): kept-alive connections that carry one request at a time, written
by the issuing thread, read by one receiving thread that parses with httptools (llhttp, C).

A subclass makes its connections (`_new_connection`), says what to do with a whole answer
(`_finish`) and with a request whose connection failed (`_lost`). Here: opening and dropping
connections, the receiving loop (each read stamped in `conn.now` before the parser sees it),
and the expiry of requests unanswered after the timeout: their connection is dropped, so a
late answer is never taken for the next request's. For the closed loop (`PerThread`): a
connection per client thread, written and read by that thread, opened before the window.

Who reads. By default a receiving thread; a driver that can wait on the pool's sockets
instead of sleeping (the open loop: `start(complete, pump=True)`, then `_pump`) reads
the answers on the issuing thread itself, and polls the last 100 us before each send instead
of sleeping through them: a sleep's wake-up is what made the sends late (p50 ~0.06 ms in
benchmarks/open_loop_validity.py), and a poll that reads the answers as they come keeps
them stamped on time where a spin in a second thread would hold them back for the GIL.
"""

from __future__ import annotations

import abc
import collections
import select
import socket
import threading
import time

POLL_S = 0.005              # the receiver's longest sleep: timeouts are found this promptly
# A wake-up from a sleep (or select) comes late on these VMs: p50 45 us, p99 130 us with a
# real-time priority and 1 us timer slack; polling the last 100 us: p50 0.3 us, p99 26 us.
_SPIN_NS = 100_000
# A poll (one syscall, ~1 us) that took this long, or a wake-up this late, on the issuer (a
# real-time thread with its own core where the host allows): the host did not run it.
STALL_NS = 250_000
# Servers close idle keep-alive connections (uvicorn after 5 s, gunicorn 2 s): one idle this
# long is checked before it carries a request (a request written on a connection the server
# has closed is lost, a new connection costs only the connect); busier ones are not (a check
# is a syscall on the issuer's path).
IDLE_CHECK_NS = 1_000_000_000


class Connection:
    """One keep-alive connection and the request it carries (`query`, one at a time); the
    httptools callbacks a subclass needs beyond these are its own."""

    def __init__(self, address: tuple[str, int], timeout: float):
        import httptools
        # the timeout bounds a write (a server that stopped reading) and a blocking read
        # before the window; the receiver reads only what epoll says has arrived
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = httptools.HttpResponseParser(self)
        self.query: int | None = None
        self.sent_ns = self.deadline_ns = self.now = 0
        self.done = self.keep_alive = self.closed = False

    def on_message_complete(self) -> None:
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()   # valid inside the callback only

    def closed_by_server(self) -> bool:
        """Idle since its last answer for over IDLE_CHECK_NS and readable with no answer
        due: the server closed it (or sent what no request asked for). As urllib3 checks a
        pooled connection before it reuses one. A connection that never carried a request
        is not checked."""
        if not self.now or time.perf_counter_ns() - self.now < IDLE_CHECK_NS:
            return False
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class Pumped(abc.ABC):
    """Reading answers in place of a sleep, what the open loop's lean clients share: needs
    `_epoll` (every connection's socket registered for reading), `_conns` (fd ->
    connection), `_read(fd)` (what arrived on fd) and `_expire(now)`.

    `stalls`: the (start, end) perf_counter_ns of each stretch the pumping thread was not
    run, in pump mode: a poll or a wake-up over STALL_NS late, or a stretch of its own work
    (reading answers, or the issuer's between two waits) whose wall time exceeds the
    thread's CPU time by over STALL_NS; the open loop tells the sends they made late from
    those the client's own work did."""

    _next_expiry = 0
    _worked_from: tuple[int, int] | None = None   # (wall, thread CPU) ns as the last wait ended
    stalls: list | None = None
    thread_name = "inferbench-receiver"

    def _start_receiver(self, pump: bool = False) -> None:
        """With pump, the caller's `wait_until` calls read (and the stalls are watched);
        else a receiving thread (`_receive`)."""
        self._thread = None
        if pump:
            self.stalls, self._worked_from = [], None
        else:
            self._thread = threading.Thread(target=self._receive, name=self.thread_name,
                                            daemon=True)
            self._thread.start()

    def _pump(self, until_ns: int, spin_ns: int = _SPIN_NS) -> None:
        """Read answers on the caller's thread until `until_ns` (perf_counter_ns): the
        issuer's wait in place of a sleep, for a pool started with pump=True. epoll's
        timeout is in whole milliseconds, so the wait is a select() on the epoll descriptor
        (microseconds, woken by any connection; its cost does not grow with their number);
        a read in progress when the time comes delays the caller by that one read."""
        clock, wait, epoll = time.perf_counter_ns, select.select, self._epoll
        ready = [epoll.fileno()]
        self._not_run_since(self._worked_from)
        while True:
            now = clock()
            if now >= self._next_expiry:
                self._expire(now)
                self._next_expiry = now + int(POLL_S * 1e9)
            left = until_ns - now
            if left <= 0:
                self._worked_from = (now, time.thread_time_ns())
                return
            if left > spin_ns:          # the last spin_ns are polled, not slept through
                wake = until_ns - spin_ns
                wait(ready, (), (), (wake - now) / 1e9)
                now = clock()
                if now - wake > STALL_NS:
                    self._stalled(wake, now)
            events = epoll.poll(0)
            if clock() - now > STALL_NS:
                self._stalled(now, clock())
            if events:
                reading = (clock(), time.thread_time_ns())
                for fd, _ in events:
                    self._read(fd)
                self._not_run_since(reading)

    def _not_run_since(self, mark: tuple[int, int] | None) -> None:
        """A stretch of this thread's own work since mark (wall, thread CPU) that was mostly
        not run (over STALL_NS, and more than the CPU it used): it was stopped, or waited for
        the GIL. A stretch mostly of its own CPU work is the client's, whatever else it
        waited (a 7 ms spin that lost the GIL for 1 ms is not a stall)."""
        if mark is None or self.stalls is None:
            return
        now = time.perf_counter_ns()
        if now - mark[0] > STALL_NS:
            cpu = time.thread_time_ns() - mark[1]
            idle = now - mark[0] - cpu
            if idle > STALL_NS and idle > cpu:
                self._stalled(mark[0], now)

    def _stalled(self, start: int, end: int) -> None:
        if self.stalls is not None:
            self.stalls.append((start, end))

    @abc.abstractmethod
    def _receive(self) -> None:
        """The receiving thread's loop, until stopped."""

    @abc.abstractmethod
    def _read(self, fd: int) -> None:
        """What arrived on fd: read, stamped, answers finished."""

    @abc.abstractmethod
    def _expire(self, now: int) -> None:
        """Fail the queries unanswered past their deadline."""


class ConnectionPool(Pumped):
    """The connections of one open loop and the thread that reads them."""

    timeout: float

    @abc.abstractmethod
    def _new_connection(self) -> Connection:
        """A new connection to the server (the subclass's Connection)."""

    @abc.abstractmethod
    def _finish(self, conn: Connection) -> None:
        """The receiving thread: conn's whole answer arrived (conn.query is set)."""

    @abc.abstractmethod
    def _lost(self, conn: Connection, query: int, exc: BaseException) -> None:
        """conn failed while carrying `query` (closed, refused, timed out)."""

    def _open(self) -> None:
        self._epoll = select.epoll()
        self._conns: dict[int, Connection] = {}
        self._idle: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()     # a failed write (issuer) and a read (receiver)

    def _connect(self) -> Connection:
        conn = self._new_connection()
        self._conns[conn.sock.fileno()] = conn
        self._epoll.register(conn.sock.fileno(), select.EPOLLIN)
        return conn

    def _take(self) -> Connection:
        """An idle connection still open, or a new one (OSError when the server cannot be
        reached). One the server closed while it was idle (uvicorn does after 5 s) is passed
        over, never written to: dropped by the receiver (a write to it failed its query with
        EBADF), or found closed here when the receiver has not run since."""
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return self._connect()
            if conn.closed:
                continue
            if not conn.closed_by_server():
                return conn
            self._drop(conn, None)

    def _drop(self, conn: Connection, exc: BaseException | None) -> None:
        """Close a connection; the request it carried, if any, fails with exc."""
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
            self._lost(conn, i, exc)

    def _receive(self) -> None:
        clock = time.perf_counter_ns
        while not self._stop.is_set():
            for fd, _ in self._epoll.poll(POLL_S):
                self._read(fd)
            self._expire(clock())

    def _read(self, fd: int) -> None:
        """What arrived on fd: stamped, parsed, the answer finished when whole."""
        import httptools
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(262144)
        except OSError as exc:
            self._drop(conn, exc)
            return
        conn.now = time.perf_counter_ns()
        if not data:
            self._drop(conn, ConnectionError("the server closed the connection"))
            return
        try:
            conn.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._drop(conn, exc)
            return
        if conn.done and conn.query is not None:
            self._finish(conn)

    def _expire(self, now: int) -> None:
        for conn in list(self._conns.values()):
            if conn.query is not None and not conn.done and now > conn.deadline_ns:
                self._drop(conn, TimeoutError(f"no answer in {self.timeout:g}s"))

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        self._epoll.close()


class PerThread(abc.ABC):
    """What the closed loop's lean clients share: a zero-argument call per query that each
    client thread makes on its own connection, held for the thread's life. `connect(n)`
    opens and warms n connections before the window, so that no client thread's first
    query pays for a connection; a thread without one opens its own. A connection is
    dropped after a query that failed it (`_keeps` says which failures leave it usable)."""

    timeout: float

    @abc.abstractmethod
    def _open(self):
        """A new connection (OSError when the server cannot be reached)."""

    @abc.abstractmethod
    def _query(self, conn):
        """One query on conn: its answer, or an exception."""

    def _keeps(self, conn, exc: BaseException | None) -> bool:
        """Whether conn carries the next query after this one (exc: how it failed)."""
        return exc is None

    def _setup(self) -> None:
        self._local = threading.local()
        self._conns: set = set()
        self._ready: collections.deque = collections.deque()

    def connect(self, n: int) -> None:
        """Open n connections and send each one query, before the window. A failure here
        is left for the window to count."""
        for _ in range(n):
            try:
                conn = self._open()
                self._conns.add(conn)
                self._run(conn)
            except Exception:  # noqa: BLE001 - counted when the window meets it
                return
            self._ready.append(conn)

    def __call__(self):
        conn = getattr(self._local, "conn", None)
        while conn is None or getattr(conn, "closed_by_server", bool)():
            if conn is not None:
                self._drop(conn)        # the server closed it while it was idle
            try:
                conn = self._ready.popleft()
            except IndexError:
                conn = self._open()
                self._conns.add(conn)
            self._local.conn = conn
        return self._run(conn)

    def _run(self, conn):
        try:
            answer = self._query(conn)
        except TimeoutError:
            self._drop(conn)
            raise TimeoutError(f"no answer in {self.timeout:g}s") from None
        except BaseException as exc:
            if not self._keeps(conn, exc):
                self._drop(conn)
            raise
        if not self._keeps(conn, None):
            self._drop(conn)
        return answer

    def _drop(self, conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        self._conns.discard(conn)
        conn.close()

    def close(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        self._ready.clear()
