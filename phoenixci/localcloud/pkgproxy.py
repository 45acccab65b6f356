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

This module holds ``PackageProxy`` (listeners, lifecycle, stats, the https passthrough); the
ClientHello is read by ``tls_hello``, http is served by ``pkghttp``, the cache is ``pkgcache``.
Their public names are re-exported here.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from phoenixci.localcloud.eip_splice import Connection, Listener, reset
from phoenixci.localcloud.pkgcache import MAX_CACHED, Cache, cacheable
from phoenixci.localcloud.pkghttp import HttpHandler
from phoenixci.localcloud.pkgsources import PackageSources
from phoenixci.localcloud.tls_hello import MAX_HELLO, client_hello, peek_server_name, server_name
from phoenixci.localcloud.tls_hello import Refused as _Refused

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], tuple[str, int]]


def host_resolver(host: str, port: int) -> tuple[str, int]:
    """The first address the host's resolver gives for (host, port)."""
    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    return str(address[0]), int(address[1])


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
        self._cache = Cache(Path(cache_dir))
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
            HttpHandler(sock, peer, self)
        except OSError as e:
            log.debug("http from %s ended: %s", peer[0], e)
        return False

    def _serve_https(self, sock: socket.socket, peer: tuple[str, int]) -> bool:
        try:
            name = peek_server_name(sock, self.hello_timeout)
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


__all__ = ["MAX_CACHED", "MAX_HELLO", "PackageProxy", "Resolver", "cacheable", "client_hello", "host_resolver",
           "server_name"]
