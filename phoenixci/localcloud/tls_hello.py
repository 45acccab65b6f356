"""The TLS ClientHello as the package proxy reads it: buffering the records of one hello
(``client_hello``), its server name (``server_name``, SNI) and ``peek_server_name``, which reads
both from a socket without consuming a byte (SO_RCVLOWAT, Linux), so the connection can still
be spliced to the real server untouched."""
from __future__ import annotations

import contextlib
import socket
import time

MAX_HELLO = 16 * 1024  # bytes of TLS records buffered to find the server name


class Refused(Exception):
    """Why a connection is not served (one line for the log)."""


def client_hello(buf: bytes) -> bytes | int:
    """The ClientHello message body in ``buf`` (one or more TLS records), or the length of
    ``buf`` needed before it can be complete; ``ValueError`` when ``buf`` is no TLS handshake."""
    body, pos = b"", 0
    while True:
        if len(buf) < pos + 5:
            return pos + 5
        if buf[pos] != 0x16 or buf[pos + 1] != 3:
            raise ValueError("not a TLS handshake")
        end = pos + 5 + int.from_bytes(buf[pos + 3:pos + 5], "big")
        if len(buf) < end:
            return end
        body, pos = body + buf[pos + 5:end], end
        if len(body) >= 4:
            if body[0] != 1:
                raise ValueError("not a ClientHello")
            if len(body) >= 4 + int.from_bytes(body[1:4], "big"):
                return body[4:4 + int.from_bytes(body[1:4], "big")]


class _Reader:
    """Length-prefixed fields of a TLS message; ``ValueError`` past the end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise ValueError("ClientHello truncated")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def vector(self, width: int) -> _Reader:
        return _Reader(self.take(int.from_bytes(self.take(width), "big")))


def server_name(hello: bytes) -> str | None:
    """The host name in a ClientHello body's server_name extension (None without one);
    ``ValueError`` when the hello is malformed."""
    r = _Reader(hello)
    r.take(2 + 32)  # legacy version, random
    r.vector(1), r.vector(2), r.vector(1)  # session id, cipher suites, compression methods
    extensions = r.vector(2) if r.left else _Reader(b"")
    while extensions.left:
        kind, data = int.from_bytes(extensions.take(2), "big"), extensions.vector(2)
        if kind == 0:  # server_name: a list of (type, name); type 0 is a host name
            names = data.vector(2)
            while names.left:
                name_type, name = names.take(1), names.vector(2)
                if name_type == b"\0":
                    return name.data.decode("ascii").rstrip(".").lower()
            return None
    return None


def peek_server_name(sock: socket.socket, hello_timeout: float) -> str | None:
    """The SNI of the client's ClientHello, read without consuming it (``Refused`` if none
    comes in ``hello_timeout``). SO_RCVLOWAT makes each peek wait for the bytes still needed."""
    deadline = time.monotonic() + hello_timeout
    want = 5
    try:
        while True:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            buf = sock.recv(MAX_HELLO, socket.MSG_PEEK)
            if len(buf) < want:
                raise Refused(f"the client closed after {len(buf)} bytes, before a complete ClientHello")
            found = client_hello(buf)
            if isinstance(found, bytes):
                return server_name(found)
            if found > MAX_HELLO:
                raise Refused(f"a ClientHello over {MAX_HELLO} bytes")
            want = found
    except TimeoutError:
        raise Refused(f"no complete ClientHello within {hello_timeout:g}s") from None
    except (OSError, ValueError) as e:
        raise Refused(f"unreadable ClientHello: {e}") from e
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
