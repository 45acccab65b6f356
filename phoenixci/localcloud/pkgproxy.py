"""A package proxy for the host's package sources (``pkgsources``), and for nothing else.

Two ``eip_splice.Listener``s on one address; each connection is served in its own daemon thread.

* https: the client's TLS ClientHello is *peeked* (never consumed, never terminated: the client
  talks to the real server and verifies its real certificate). The server name (SNI) decides:
  a name in ``allowed.https`` is spliced to ``resolve(name, 443)`` by ``eip_splice.Connection``,
  which forwards the peeked bytes like any others; no name, a malformed hello or a name not
  allowed is reset and logged in one line. The peek waits for the bytes it still needs with
  SO_RCVLOWAT (Linux), so a hello split over several segments costs no polling.
* http: a forward proxy for GET and HEAD (others: 405) to hosts in ``allowed.http`` (others:
  403 naming the ones served). Immutable files (pool/, by-hash/, .deb, .whl, …) are kept in
  ``cache_dir`` and served from there (``X-Cache: HIT``) without asking the upstream; index
  files never are.

``close()`` (or leaving the ``with``) stops the listeners, cuts every open connection and joins
every thread the proxy started. ``stats()`` counts what it did.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import urlsplit

from phoenixci.localcloud.eip_splice import BUFSIZE, Connection, Listener, reset
from phoenixci.localcloud.pkgsources import PackageSources

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], tuple[str, int]]
MAX_HELLO = 16 * 1024  # bytes of TLS records buffered to find the server name
MAX_CACHED = 512 * 1024 * 1024
_IMMUTABLE = re.compile(r"/(pool|by-hash)/|\.(deb|udeb|whl|tar\.gz|zip)$")
_INDEX = re.compile(r"/(InRelease|Release(\.gpg)?|(Packages|Sources|Contents-|Translation-)[^/]*)$")
_PASSED = ("Accept", "User-Agent", "If-Modified-Since", "If-None-Match", "If-Range", "Range",
           "Cache-Control", "Pragma")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
_KEPT = ("content-type", "last-modified", "etag")  # response headers a cache hit repeats


class _Refused(Exception):
    """Why a connection is not served (one line for the log)."""


def host_resolver(host: str, port: int) -> tuple[str, int]:
    """The first address the host's resolver gives for (host, port)."""
    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    return str(address[0]), int(address[1])


# --- TLS ClientHello -----------------------------------------------------------------------

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


# --- cache ---------------------------------------------------------------------------------

def cacheable(path: str) -> bool:
    """Immutable content (pool/, by-hash/, package files); never an index file or a listing."""
    path = path.split("?", 1)[0]
    return bool(_IMMUTABLE.search(path)) and not _INDEX.search(path) and not path.endswith("/")


class _Cache:
    """200 responses in ``directory``: one file per host+path (a JSON line with the length and
    a few headers, then the body), written under a temporary name and renamed when complete."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for part in self.directory.glob(".part-*"):  # left by a crash
            part.unlink(missing_ok=True)

    def entry(self, host: str, path: str) -> Path:
        return self.directory / hashlib.sha256(f"{host}{path}".encode()).hexdigest()

    def open(self, entry: Path) -> tuple[BinaryIO, list[tuple[str, str]], int] | None:
        """(file positioned at the body, headers, body length) of a complete entry, else None."""
        try:
            f = entry.open("rb")
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(f.readline())
            size = os.fstat(f.fileno()).st_size - f.tell()
            if size == meta["length"]:
                return f, [(str(k), str(v)) for k, v in meta["headers"]], size
        except (ValueError, KeyError, TypeError):
            pass
        f.close()
        log.warning("cache entry %s is damaged; fetching it again", entry.name)
        entry.unlink(missing_ok=True)
        return None


class _Pending:
    """One cache entry being written; a failed write only means it is not kept."""

    def __init__(self, entry: Path, headers: list[tuple[str, str]], length: int) -> None:
        self.entry, self.length, self.written = entry, length, 0
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".part-")
        self.tmp, self.file = Path(tmp), os.fdopen(fd, "wb")
        self.ok = self._do(json.dumps({"length": length, "headers": headers}).encode() + b"\n")

    def _do(self, data: bytes) -> bool:
        try:
            self.file.write(data)
            return True
        except OSError as e:
            log.warning("cache write failed (%s); %s not cached", e, self.entry.name)
            return False

    def write(self, data: bytes) -> None:
        self.ok = self.ok and self._do(data)
        self.written += len(data)

    def finish(self) -> None:
        """Rename into place when every byte came, else drop."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.ok and self.written == self.length:
                os.replace(self.tmp, self.entry)
                return
        except OSError as e:
            log.warning("cache entry %s not kept: %s", self.entry.name, e)
        self.file.close()
        self.tmp.unlink(missing_ok=True)


# --- http ----------------------------------------------------------------------------------

class _HttpHandler(BaseHTTPRequestHandler):
    """One client connection of the http listener (kept alive while responses have a length)."""

    protocol_version = "HTTP/1.1"
    server_version = "phoenixci-pkgproxy"

    def __init__(self, sock: socket.socket, peer: tuple[str, int], proxy: PackageProxy) -> None:
        self.proxy = proxy
        super().__init__(sock, peer, None)  # type: ignore[arg-type]  # no socketserver: never used

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        log.debug("http from %s: " + format, self.client_address[0], *args)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        self.proxy._count("refused")
        self._reply(405, f"{self.command} is not served (GET and HEAD only)", close=True)
        return False

    def _reply(self, code: int, text: str, *, close: bool = False) -> None:
        body = f"phoenixci package proxy: {text}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if code == 405:
            self.send_header("Allow", "GET, HEAD")
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _target(self) -> tuple[str, str] | None:
        """(host, path) of an allowed request, else None after answering why not."""
        netloc, path = self.headers.get("Host", ""), self.path
        if not path.startswith("/"):  # absolute form
            url = urlsplit(path)
            netloc, path = url.netloc, (url.path or "/") + (f"?{url.query}" if url.query else "")
            if url.scheme.lower() != "http":
                self._reply(400, "only http:// URLs and paths are served here")
                return None
        try:
            url = urlsplit(f"//{netloc}")
            host, port = (url.hostname or "").rstrip("."), url.port
        except ValueError:
            host, port = "", None
        if not host:
            self._reply(400, "the request names no host (Host header or absolute URL)")
            return None
        name = host if port in (None, 80) else f"{host}:{port}"
        if name not in self.proxy.allowed.http:
            self.proxy._count("refused")
            log.warning("http from %s for %r refused: not one of the package sources",
                        self.client_address[0], name)
            served = ", ".join(sorted(self.proxy.allowed.http)) or "none over http"
            self._reply(403, f"{name} is not one of this cloud's package sources ({served})")
            return None
        return host, path

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        target = self._target()
        if target is None:
            return
        host, path = target
        entry = self.proxy._cache.entry(host, path) if cacheable(path) else None
        hit = self.proxy._cache.open(entry) if entry else None
        if hit is None:
            self._forward(host, path, entry)
            return
        f, headers, size = hit
        with f:
            self.proxy._count("http_hits")
            self.send_response(200)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Cache", "HIT")
            self.end_headers()
            if self.command == "GET":
                self.connection.sendfile(f, f.tell())

    do_HEAD = do_GET

    def _forward(self, host: str, path: str, entry: Path | None) -> None:
        proxy = self.proxy
        upstream = http.client.HTTPConnection(host, timeout=proxy.upstream_timeout)
        sock = None
        try:
            try:
                ip, port = proxy.resolve(host, 80)
                upstream.sock = sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                sock.settimeout(proxy.upstream_timeout)
                proxy._track(sock)  # before connecting: close() can cut a slow connect short
                sock.connect((ip, port))
                headers = {k: v for k in _PASSED if (v := self.headers.get(k)) is not None}
                upstream.request(self.command, path, headers=headers)  # Host: the connection's
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException, ValueError) as e:
                proxy._count("upstream_errors")
                log.warning("http %s%s: the upstream failed: %s", host, path, e)
                self._reply(502, f"{host} did not answer: {e}")
                return
            proxy._count("http_misses")
            self._relay(response, entry)
        finally:
            if sock is not None:
                proxy._untrack(sock)
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, entry: Path | None) -> None:
        expected = response.length  # None: until the upstream closes (or chunked)
        drop = _HOP_BY_HOP | {t.strip().lower() for t in (response.getheader("Connection") or "").split(",")}
        if response.chunked:
            drop.add("content-length")
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in drop]
        self.send_response_only(response.status, response.reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("X-Cache", "MISS")
        if expected is None:
            self.send_header("Connection", "close")
        self.end_headers()
        pending = None
        if entry and self.command == "GET" and response.status == 200 and expected is not None \
                and expected <= MAX_CACHED:
            try:
                pending = _Pending(entry, [(k, v) for k, v in headers if k.lower() in _KEPT], expected)
            except OSError as e:
                log.warning("cache unusable (%s); %s not cached", e, entry.name)
        sent = 0
        try:
            while chunk := response.read1(BUFSIZE):
                self.wfile.write(chunk)
                sent += len(chunk)
                if pending:
                    pending.write(chunk)
        except (OSError, http.client.HTTPException) as e:
            log.warning("http %s: relaying the body failed after %d bytes: %s", self.path, sent, e)
            self.close_connection = True
        if expected is not None and sent != expected:
            log.warning("http %s: %d of %d bytes relayed; closing", self.path, sent, expected)
            self.close_connection = True
        if pending:
            pending.finish()
        self.log_request(response.status, sent)


# --- the proxy -----------------------------------------------------------------------------

class PackageProxy:
    """Serve the package sources ``allowed`` on ``address`` (see the module's docstring)."""

    def __init__(self, address: str, allowed: PackageSources, cache_dir: Path, *, http_port: int = 80,
                 https_port: int = 443, resolve: Resolver = host_resolver, idle_timeout: float = 60.0,
                 hello_timeout: float = 10.0, upstream_timeout: float = 30.0) -> None:
        self.address, self.allowed = address, allowed
        self.http_port, self.https_port = http_port, https_port
        self.resolve = resolve
        self.idle_timeout, self.hello_timeout = idle_timeout, hello_timeout
        self.upstream_timeout = upstream_timeout
        self._cache = _Cache(Path(cache_dir))
        self._lock = threading.Lock()
        self._closing = False
        self._listeners: list[Listener] = []
        self._threads: set[threading.Thread] = set()
        self._socks: set[socket.socket] = set()
        self._tunnels: set[Connection] = set()
        self._stats = dict.fromkeys(("http_hits", "http_misses", "refused", "https_tunnels",
                                     "upstream_errors"), 0)

    def __enter__(self) -> PackageProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> PackageProxy:
        """Listen on both ports (0: any free one, read back ``http_port``/``https_port``);
        ``OSError`` (nothing left open) when the cache or a port cannot be had."""
        try:
            self._cache.prepare()
            self._listen(self.http_port, self._serve_http, "http")
            self._listen(self.https_port, self._serve_https, "https")
        except OSError:
            self.close()
            raise
        self.http_port, self.https_port = (listener.port for listener in self._listeners)
        log.info("package proxy on %s (http %d, https %d): %s", self.address, self.http_port,
                 self.https_port, self.allowed.describe())
        return self

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def close(self) -> None:
        """Stop listening, cut every connection, join every thread (idempotent)."""
        with self._lock:
            self._closing = True
        for listener in self._listeners:
            listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        deadline = time.monotonic() + self.upstream_timeout  # a connect or a lookup under way
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        with self._lock:
            tunnels = list(self._tunnels)
        for tunnel in tunnels:
            tunnel.abort()
        for tunnel in tunnels:
            tunnel.join(max(deadline - time.monotonic(), 0.0))
        left = [t.name for t in threads if t.is_alive()] + [str(c.target) for c in tunnels if c.alive]
        if left:
            log.warning("package proxy closed with connections still ending: %s", ", ".join(left))

    def _count(self, what: str) -> None:
        with self._lock:
            self._stats[what] += 1

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._closing:
                raise OSError("the package proxy is closing")
            self._socks.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def _listen(self, port: int, serve: Callable[[socket.socket, tuple[str, int]], bool], kind: str) -> None:
        def accepted(sock: socket.socket, peer: tuple[str, int]) -> None:
            with self._lock:
                if self._closing:
                    reset(sock)
                    return
                thread = threading.Thread(target=self._run, args=(serve, sock, peer), daemon=True,
                                          name=f"pkgproxy-{kind}-{peer[0]}:{peer[1]}")
                self._threads.add(thread)
                self._socks.add(sock)
                thread.start()
        self._listeners.append(Listener(self.address, port, accepted, name=f"pkgproxy-{kind}"))

    def _run(self, serve: Callable[[socket.socket, tuple[str, int]], bool], sock: socket.socket,
             peer: tuple[str, int]) -> None:
        handed_over = False
        try:
            handed_over = serve(sock, peer)
        except Exception:  # noqa: BLE001 - one bad connection must not stop the proxy
            log.exception("serving %s:%d failed", *peer)
            reset(sock)
        finally:
            self._untrack(sock)
            if not handed_over:
                sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _serve_http(self, sock: socket.socket, peer: tuple[str, int]) -> bool:
        sock.settimeout(self.idle_timeout)
        try:
            _HttpHandler(sock, peer, self)
        except OSError as e:
            log.debug("http from %s ended: %s", peer[0], e)
        return False

    def _serve_https(self, sock: socket.socket, peer: tuple[str, int]) -> bool:
        try:
            name = self._peek_server_name(sock)
            if name is None:
                raise _Refused("no server name (SNI) in the ClientHello")
            if name not in self.allowed.https:
                raise _Refused(f"{name!r} is not one of this cloud's package sources")
        except _Refused as e:
            self._count("refused")
            (log.debug if self._closing else log.warning)("https from %s refused: %s", peer[0], e)
            reset(sock)
            return False
        try:
            target = self.resolve(name, 443)
        except (OSError, ValueError) as e:
            self._count("upstream_errors")
            log.warning("https from %s for %r: cannot resolve: %s", peer[0], name, e)
            reset(sock)
            return False
        with self._lock:
            if self._closing:
                reset(sock)
                return False
            self._socks.discard(sock)
            tunnel = Connection(sock, target, connect_timeout=self.upstream_timeout,
                                idle_timeout=self.idle_timeout, on_done=self._tunnel_done,
                                name="pkgproxy-https")
            self._tunnels.add(tunnel)
            self._stats["https_tunnels"] += 1
            tunnel.start()
        log.info("https from %s to %s (%s:%d)", peer[0], name, *target)
        return True

    def _tunnel_done(self, tunnel: Connection) -> None:
        with self._lock:
            self._tunnels.discard(tunnel)

    def _peek_server_name(self, sock: socket.socket) -> str | None:
        """The SNI of the client's ClientHello, read without consuming it (``_Refused`` if none
        comes in ``hello_timeout``). SO_RCVLOWAT makes each peek wait for the bytes still needed."""
        deadline = time.monotonic() + self.hello_timeout
        want = 5
        try:
            while True:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                buf = sock.recv(MAX_HELLO, socket.MSG_PEEK)
                if len(buf) < want:
                    raise _Refused(f"the client closed after {len(buf)} bytes, before a complete ClientHello")
                found = client_hello(buf)
                if isinstance(found, bytes):
                    return server_name(found)
                if found > MAX_HELLO:
                    raise _Refused(f"a ClientHello over {MAX_HELLO} bytes")
                want = found
        except TimeoutError:
            raise _Refused(f"no complete ClientHello within {self.hello_timeout:g}s") from None
        except (OSError, ValueError) as e:
            raise _Refused(f"unreadable ClientHello: {e}") from e
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
