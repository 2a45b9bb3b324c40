"""The closed loop's lean gRPC transport: unary calls written as HTTP/2 frames built before the
window, one connection per client thread, one call at a time on it.

Why not grpcio's blocking call: measured against one Triton at concurrency 1
(benchmarks/closed_loop_vs_perf_analyzer.py), its per-call machinery cost the client 0.14 ms
of CPU per query, twice perf_analyzer's, and the harness reached 0.96x perf_analyzer's
throughput. A call here is the prepared HEADERS and DATA frames with the stream id patched
in, one `sendall`, then the answer's frames read on the same thread: HPACK (the `hpack`
package, python-hyper's) decodes every header block the server sends, in order, so its
dynamic table stays in step; the request's own header block uses never-indexed literals, so
its bytes are the same on every call.

What HTTP/2 asks of a client is done here: the preface and SETTINGS, acknowledging the
server's SETTINGS and PINGs, flow control (our receive windows opened to the maximum at the
start and topped up; the request waits for the server's send window), CONTINUATION frames,
RST_STREAM and GOAWAY. A status other than OK raises ServerError with the server's message;
no answer within the timeout raises TimeoutError and drops the connection, as does any
protocol error.
"""

from __future__ import annotations

import socket
import struct
from urllib.parse import unquote, urlsplit

from .lean_grpc import ServerError
from .lean_pool import PerThread

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_STREAMS, INITIAL_WINDOW = 0x3, 0x4      # SETTINGS identifiers
MAX_WINDOW = 2**31 - 1
_TOP_UP = 2**30                 # receive window consumed before it is topped up
U32 = struct.Struct(">I")      # a frame starts with a 24-bit length: read as 32 bits

# grpc status codes by number (grpc's StatusCode names)
STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
          "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
          "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
          "UNAUTHENTICATED")


class ProtocolError(ConnectionError):
    """The connection broke HTTP/2's rules or was refused (GOAWAY, RST_STREAM)."""


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + \
        struct.pack(">I", stream) + payload


def grpc_timeout(seconds: float) -> str:
    """The grpc-timeout header: at most 8 digits and a unit."""
    for unit, scale in (("u", 1e6), ("m", 1e3), ("S", 1.0)):
        value = int(seconds * scale)
        if value < 10**8:
            return f"{value}{unit}"
    return f"{int(seconds / 60)}M"


class Template:
    """The frames of one call with the stream id left to patch: a HEADERS frame (one header
    block of never-indexed literals, so the same bytes on every call) and DATA frames of at
    most `max_frame` bytes, the last ending the stream."""

    def __init__(self, authority: str, path: str, message: bytes, metadata, timeout: float,
                 max_frame: int = 16384):   # the least every server takes
        from hpack import Encoder, NeverIndexedHeaderTuple
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", authority), ("content-type", "application/grpc"),
                   ("te", "trailers"), ("user-agent", "pytest-inferbench"),
                   ("grpc-timeout", grpc_timeout(timeout)),
                   *((k.lower(), v) for k, v in metadata)]    # HTTP/2 names are lower case
        block = Encoder().encode([NeverIndexedHeaderTuple(k, v) for k, v in headers])
        body = b"\x00" + struct.pack(">I", len(message)) + message
        parts = [frame(HEADERS, END_HEADERS, 0, block)]
        chunks = [body[i:i + max_frame] for i in range(0, len(body), max_frame)] or [b""]
        for k, chunk in enumerate(chunks):
            parts.append(frame(DATA, END_STREAM if k == len(chunks) - 1 else 0, 0, chunk))
        self.bytes = bytearray(b"".join(parts))
        self.body_size, self.headers_size = len(body), len(parts[0])
        self.offsets, at = [], 0
        for part in parts:
            self.offsets.append(at + 5)
            at += len(part)

    def copy(self) -> "Template":
        """A copy with its own bytes (each connection patches its own)."""
        other = object.__new__(Template)
        other.__dict__.update(self.__dict__, bytes=bytearray(self.bytes))
        return other

    def for_stream(self, stream: int) -> bytearray:
        for offset in self.offsets:
            U32.pack_into(self.bytes, offset, stream)
        return self.bytes


class Connection:
    """One HTTP/2 connection carrying one call at a time."""

    def __init__(self, address: tuple[str, int], timeout: float):
        from hpack import Decoder
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 2**24
        self.decoded: dict[bytes, list] = {}    # header blocks of indexed fields only
        self.buf = bytearray()
        self.pending: list = []         # frames of a call read while its request was sent
        self.next_stream = 1
        self.send_window = self.stream_window = 65535     # the server's, until it says
        self.max_streams = MAX_WINDOW     # concurrent calls: no limit until the server sets one
        self.consumed = 0
        self.goaway: int | None = None
        self.broken = False
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(
            ">HIHI", INITIAL_WINDOW, MAX_WINDOW, 0x2, 0))      # ENABLE_PUSH 0
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535)))
        while True:                     # the server's preface: its SETTINGS come first
            kind, flags, stream, payload = self._read()
            self._control(kind, flags, stream, payload)
            if kind == SETTINGS and not flags & ACK:
                break

    def usable(self) -> bool:
        return not self.broken and self.goaway is None and self.next_stream < MAX_WINDOW

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- reading frames
    def _read(self) -> tuple[int, int, int, memoryview]:
        """The next frame: (type, flags, stream, payload)."""
        if self.pending:
            return self.pending.pop(0)
        while (whole := self._next_frame()) is None:
            data = self.sock.recv(262144)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.buf += data
        return whole

    def _next_frame(self) -> tuple[int, int, int, memoryview] | None:
        """The next whole frame in what was read, taken out of it; None if there is none."""
        buf = self.buf
        if len(buf) < 9:
            return None
        length = U32.unpack_from(buf, 0)[0] >> 8
        if len(buf) < 9 + length:
            return None
        kind, flags = buf[3], buf[4]
        stream = U32.unpack_from(buf, 5)[0] & 0x7FFFFFFF
        payload = bytes(buf[9:9 + length])
        del buf[:9 + length]
        return kind, flags, stream, memoryview(payload)

    def _control(self, kind: int, flags: int, stream: int, payload) -> None:
        """Frames that are not the call's own."""
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == INITIAL_WINDOW:
                    self.stream_window = value
                elif key == MAX_STREAMS:
                    self.max_streams = value
            self.sock.sendall(frame(SETTINGS, ACK, 0, b""))
        elif kind == PING and not flags & ACK:
            self.sock.sendall(frame(PING, ACK, 0, bytes(payload)))
        elif kind == WINDOW_UPDATE and stream == 0:
            self.send_window += U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        elif kind == GOAWAY:
            self.goaway = U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        elif kind == DATA:          # a stream of ours that ended before: count it
            self._consume(len(payload))

    def _consume(self, n: int) -> None:
        self.consumed += n
        if self.consumed >= _TOP_UP:
            self.sock.sendall(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.consumed)))
            self.consumed = 0

    def _header_block(self, flags: int, payload) -> list:
        """A HEADERS frame's whole block (CONTINUATION frames joined), decoded."""
        data = bytes(payload)
        if flags & PADDED:
            data = data[1:len(data) - data[0]]
        if flags & PRIORITY:
            data = data[5:]
        end = flags
        while not end & END_HEADERS:
            kind, end, _, more = self._read()
            if kind != CONTINUATION:
                raise ProtocolError("a header block was not continued")
            data += bytes(more)
        return self.decode(data)

    def decode(self, block: bytes) -> list:
        """A header block's (name, value) pairs. A server repeats the same few blocks, and
        one made of one-byte indexed fields only (every byte >= 0x80) leaves HPACK's table
        as it was: those are remembered until a block that may change the table comes
        (hpack decodes in Python, ~9 us a block, on the issuer's thread in the open loop)."""
        headers = self.decoded.get(block)
        if headers is None:
            headers = self.decoder.decode(block)
            if all(byte & 0x80 for byte in block):
                self.decoded[block] = headers
            else:
                self.decoded.clear()    # its indices may mean other fields from now on
        return headers

    # -- one call
    def call(self, template: Template) -> bytes:
        stream = self.next_stream
        self.next_stream += 2
        data, size = template.for_stream(stream), template.body_size
        if size <= self.send_window and size <= self.stream_window:
            self.sock.sendall(data)         # the hot path: one write
            self.send_window -= size
        else:
            self._send_windowed(template, data, stream)
        return self._answer(stream)

    def _send_windowed(self, template: Template, data: bytearray, stream: int) -> None:
        """A request larger than the server's windows: each DATA frame once they open. An
        answer that comes before the request is all sent ends the sending (and the
        connection's use: its stream was left half-open)."""
        window = self.stream_window
        self.sock.sendall(data[:template.headers_size])
        at = template.headers_size
        while at < len(data):
            length = U32.unpack_from(data, at)[0] >> 8
            while length > min(window, self.send_window):
                kind, flags, sid, payload = self._read()
                if sid == stream and kind == WINDOW_UPDATE:
                    window += U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
                elif sid == stream:
                    self.pending.append((kind, flags, sid, payload))
                    self.broken = True
                    return
                else:
                    self._control(kind, flags, sid, payload)
            self.sock.sendall(data[at:at + 9 + length])
            window -= length
            self.send_window -= length
            at += 9 + length

    def _answer(self, stream: int) -> bytes:
        status, message, body = None, "", []
        while True:
            kind, flags, sid, payload = self._read()
            if sid != stream:
                self._control(kind, flags, sid, payload)
                if self.goaway is not None and stream > self.goaway:
                    raise ProtocolError("the server refused the call (GOAWAY)")
                continue
            if kind == DATA:
                self._consume(len(payload))
                body.append(payload[1:len(payload) - payload[0]] if flags & PADDED
                            else payload)
            elif kind == HEADERS:
                status, message = read_status(self._header_block(flags, payload), status,
                                              message)
            elif kind == RST_STREAM:
                code = U32.unpack_from(payload, 0)[0]
                raise ProtocolError(f"the server reset the call (HTTP/2 error {code})")
            if flags & END_STREAM and kind in (DATA, HEADERS):
                break
        error = call_error(status, message)
        if error is not None:
            raise error
        return b"".join(body)[5:]


def read_status(headers, status: int | None, message: str) -> tuple[int | None, str]:
    """(grpc status, message) after one decoded header block of a call's answer."""
    for key, value in headers:
        if key == "grpc-status":
            status = int(value)
        elif key == "grpc-message":
            message = unquote(value)
        elif key == ":status" and value != "200":
            message = message or f"HTTP status {value}"
            status = 2 if status is None else status
    return status, message


def call_error(status: int | None, message: str) -> Exception | None:
    """A finished call's failure, None for OK: DEADLINE_EXCEEDED (the server kept the
    grpc-timeout) is a TimeoutError, any other status a ServerError with its message."""
    if status == 0:
        return None
    if status == 4:
        return TimeoutError("the server's deadline passed")
    name = STATUS[status] if status is not None and status < len(STATUS) else status
    return ServerError(f"gRPC {name}: {' '.join(message.split())}")


def split_url(url: str) -> tuple[tuple[str, int], str]:
    """((host, port), authority) of a gRPC endpoint given as host:port."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return (host, port), f"{host}:{port}"


class BlockingH2Call(PerThread):
    """The closed loop's lean gRPC client: the prepared request sent on the client thread's
    own HTTP/2 connection and the answer read there. Returns the reply message's bytes. A
    status other than OK raises ServerError and keeps the connection (the call ended
    cleanly); anything else drops it."""

    def __init__(self, url: str, method: str, message: bytes, timeout: float, metadata=()):
        self.address, authority = split_url(url)
        self.timeout = timeout
        self.template = Template(authority, method, message, tuple(metadata), timeout)
        self._setup()

    def _open(self) -> Connection:
        conn = Connection(self.address, self.timeout)
        conn.template = self.template.copy()
        return conn

    def _query(self, conn: Connection) -> bytes:
        return conn.call(conn.template)

    def _keeps(self, conn: Connection, exc: BaseException | None) -> bool:
        return (exc is None or isinstance(exc, ServerError)) and conn.usable()
