"""The package proxy's plain-HTTP side: ``HttpHandler`` serves one client connection as a
forward proxy for GET and HEAD (others 405) to the hosts in ``allowed.http`` (others 403),
answering immutable files from the proxy's cache (``X-Cache: HIT``) and relaying everything else
from the upstream (``X-Cache: MISS``, 502 when it fails), keeping what ``cacheable`` allows."""
from __future__ import annotations

import http.client
import logging
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from phoenixci.localcloud.eip_splice import BUFSIZE
from phoenixci.localcloud.pkgcache import KEPT_HEADERS, MAX_CACHED, PendingEntry, cacheable

if TYPE_CHECKING:
    from phoenixci.localcloud.pkgproxy import PackageProxy

log = logging.getLogger("phoenixci.localcloud.pkgproxy")  # the package proxy's log lines, as before

_PASSED = ("Accept", "User-Agent", "If-Modified-Since", "If-None-Match", "If-Range", "Range",
           "Cache-Control", "Pragma")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


class HttpHandler(BaseHTTPRequestHandler):
    """One client connection of the http listener (kept alive while responses have a length)."""

    protocol_version = "HTTP/1.1"
    server_version = "phoenixci-pkgproxy"
    disable_nagle_algorithm = True  # as the IMDS: no delayed-ACK wait between headers and body

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
                pending = PendingEntry(entry, [(k, v) for k, v in headers if k.lower() in KEPT_HEADERS],
                                       expected)
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
