"""The package proxy against real servers on loopback, made-up names mapped to them by ``resolve``.

An HTTP upstream (http.server) and a TLS upstream (its own self-signed certificate) run on
127.0.0.1; the proxy serves "deb.example.test" over http and "pkgs.example.test" over https and
nothing else, although its resolver would lead every name below to one of the two upstreams: a
name that is refused never reaches them.
"""
from __future__ import annotations

import contextlib
import datetime
import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from phoenixci.localcloud.pkgproxy import PackageProxy, cacheable
from phoenixci.localcloud.pkgsources import PackageSources
from phoenixci.util import free_port, wait_until

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
TIMEOUT = 5.0  # every client socket of these tests
DEB = "/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"
INDEX = "/debian/dists/stable/InRelease"
ALLOWED = PackageSources(http=frozenset({"deb.example.test"}), https=frozenset({"pkgs.example.test"}))


# --- upstreams -----------------------------------------------------------------------------

class Upstream(ThreadingHTTPServer):
    """A loopback HTTP(S) server that remembers every connection and request it got."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__((LOOPBACK, 0), UpstreamHandler)
        self.context = context
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.index_version = 0

    def get_request(self) -> tuple[Any, Any]:
        sock, peer = super().get_request()
        self.connections += 1
        if self.context is not None:  # the handshake happens in the handler's thread
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        sock.settimeout(TIMEOUT)
        return sock, peer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets are part of the story


class UpstreamHandler(BaseHTTPRequestHandler):
    server: Upstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append((self.command, self.path, dict(self.headers.items())))
        if self.path.startswith("/stream/"):  # no length: chunked, as a dynamic answer would be
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first part, ", b"second part\n", b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            return
        if self.path == INDEX:
            self.server.index_version += 1
            body = f"index version {self.server.index_version}\n".encode()
        elif self.path.endswith(".deb"):
            body = b"!<arch>\n" + bytes(range(256)) * 64
        else:
            body = f"upstream says hello to {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        self.send_header("X-Upstream", "yes")
        self.send_header("Keep-Alive", "timeout=5")  # hop-by-hop: the proxy drops it
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_HEAD = do_GET


@contextlib.contextmanager
def serving(server: Upstream) -> Iterator[Upstream]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@dataclass
class Certificate:
    pem: Path
    key: Path
    der: bytes = field(repr=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A throwaway self-signed certificate for pkgs.example.test (as tls.py makes them: EC P-256)."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pkgs.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("pkgs.example.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem, key_path = directory / "cert.pem", directory / "key.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificate(pem, key_path, cert.public_bytes(serialization.Encoding.DER))


@pytest.fixture
def web() -> Iterator[Upstream]:
    with serving(Upstream()) as server:
        yield server


@pytest.fixture
def tls_web(certificate: Certificate) -> Iterator[Upstream]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.pem, certificate.key)
    with serving(Upstream(context)) as server:
        yield server


@pytest.fixture
def client_tls(certificate: Certificate) -> ssl.SSLContext:
    """What a client on an instance has: it trusts the upstream's certificate and nothing else."""
    return ssl.create_default_context(cafile=str(certificate.pem))


@pytest.fixture
def proxy(web: Upstream, tls_web: Upstream, tmp_path: Path) -> Iterator[PackageProxy]:
    """The proxy on free loopback ports; its resolver leads allowed and refused names alike."""
    def resolve(host: str, port: int) -> tuple[str, int]:
        upstream = {80: web, 443: tls_web}[port]
        if host.endswith(".example.test"):
            return LOOPBACK, upstream.server_address[1]
        raise socket.gaierror(f"{host}: unknown in this test")

    with PackageProxy(LOOPBACK, ALLOWED, tmp_path / "cache", http_port=0, https_port=0, resolve=resolve,
                      idle_timeout=TIMEOUT, hello_timeout=1.0, upstream_timeout=TIMEOUT) as p:
        yield p


# --- clients -------------------------------------------------------------------------------

def get(proxy: PackageProxy, path: str, host: str = "deb.example.test", method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, proxy.http_port, timeout=TIMEOUT)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def hello(context: ssl.SSLContext, name: str | None) -> bytes:
    """The ClientHello a client with ``context`` sends for ``name`` (no SNI when None)."""
    if name is None:
        context.check_hostname = False
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def is_reset(port: int, data: bytes) -> bool:
    """Send ``data`` to the proxy's https port: True when it answers with a TCP reset."""
    with socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        try:
            sock.recv(1)
        except ConnectionResetError:
            return True
        return False


def tls_get(proxy: PackageProxy, context: ssl.SSLContext, name: str) -> tuple[bytes, bytes]:
    """GET / over TLS through the proxy: (the server's certificate, the response)."""
    with socket.create_connection((LOOPBACK, proxy.https_port), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        cert = tls.getpeercert(binary_form=True) or b""
        tls.sendall(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
        return cert, b"".join(iter(lambda: tls.recv(65536), b""))


# --- http ----------------------------------------------------------------------------------

def test_an_allowed_get_passes_through(proxy: PackageProxy, web: Upstream) -> None:
    response, body = get(proxy, "/debian/README", headers={"User-Agent": "apt-test", "Proxy-Authorization": "x"})
    assert response.status == 200
    assert body == b"upstream says hello to /debian/README\n"
    assert response.getheader("X-Upstream") == "yes"
    assert response.getheader("Last-Modified") == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert response.getheader("X-Cache") == "MISS"
    assert response.getheader("Keep-Alive") is None  # hop-by-hop, not passed on
    [(method, path, headers)] = web.requests
    assert (method, path, headers["Host"], headers["User-Agent"]) == ("GET", "/debian/README", "deb.example.test",
                                                                      "apt-test")
    assert "Proxy-Authorization" not in headers

    head, empty = get(proxy, "/debian/README", method="HEAD")
    assert (head.status, empty, head.getheader("Content-Length")) == (200, b"", str(len(body)))
    absolute, body2 = get(proxy, "http://deb.example.test/debian/README?x=1")  # absolute-form, as to a proxy
    assert (absolute.status, web.requests[-1][1]) == (200, "/debian/README?x=1")


def test_a_pool_file_is_served_from_the_cache_with_the_upstream_gone(proxy: PackageProxy, web: Upstream) -> None:
    first, deb = get(proxy, DEB)
    assert (first.status, first.getheader("X-Cache"), len(deb)) == (200, "MISS", 8 + 256 * 64)
    web.shutdown()
    web.server_close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(web.server_address, timeout=TIMEOUT)
    second, again = get(proxy, DEB)
    assert (second.status, second.getheader("X-Cache"), again) == (200, "HIT", deb)
    assert second.getheader("Content-Type") == "application/octet-stream"
    assert second.getheader("Last-Modified") == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert [path for _, path, _ in web.requests] == [DEB]
    assert proxy.stats()["http_hits"] == 1 and proxy.stats()["http_misses"] == 1
    gone, reason = get(proxy, "/debian/other.txt")  # not in the cache: the upstream is asked, and is gone
    assert gone.status == 502 and b"deb.example.test did not answer" in reason


def test_keep_alive_and_a_response_without_a_length(proxy: PackageProxy, web: Upstream) -> None:
    """Two requests on one connection; a chunked answer is streamed to the end, then the connection
    closes (and, its length unknown, it is not cached even under pool/)."""
    conn = http.client.HTTPConnection(LOOPBACK, proxy.http_port, timeout=TIMEOUT)
    try:
        for path in ("/debian/README", "/stream/pool/x.deb"):
            conn.request("GET", path, headers={"Host": "deb.example.test"})
            response = conn.getresponse()
            body = response.read()
        assert body == b"first part, second part\n"
        assert response.getheader("Connection") == "close" and response.getheader("Transfer-Encoding") is None
    finally:
        conn.close()
    assert web.connections == 2  # one per request: the proxy does not keep upstream connections
    assert get(proxy, "/stream/pool/x.deb")[0].getheader("X-Cache") == "MISS"


@pytest.mark.parametrize(("path", "cached"), [
    (DEB, True), ("/debian/dists/stable/main/binary-amd64/by-hash/SHA256/0123abcd", True),
    ("/packages/ab/cd/tool-1.0-py3-none-any.whl", True), ("/src/tool-1.0.tar.gz", True),
    ("/x/tool-1.0.zip?download=1", True), (INDEX, False), ("/debian/dists/stable/Release", False),
    ("/debian/dists/stable/main/binary-amd64/Packages.xz", False), ("/debian/pool/main/", False),
    ("/simple/tool/", False), ("/debian/README", False)])
def test_only_immutable_files_are_cacheable(path: str, cached: bool) -> None:
    assert cacheable(path) is cached


def test_index_files_are_never_cached(proxy: PackageProxy, web: Upstream, tmp_path: Path) -> None:
    bodies = []
    for _ in range(2):
        response, body = get(proxy, INDEX)
        assert (response.status, response.getheader("X-Cache")) == (200, "MISS")
        bodies.append(body)
    assert bodies == [b"index version 1\n", b"index version 2\n"]
    assert [path for _, path, _ in web.requests] == [INDEX, INDEX]
    assert os.listdir(tmp_path / "cache") == []


def test_a_name_that_is_not_a_package_source_gets_403(proxy: PackageProxy, web: Upstream) -> None:
    for host in ("evil.example.test", "deb.example.test:8080"):
        response, body = get(proxy, "/debian/README", host=host)
        assert response.status == 403
        assert body.decode() == (f"phoenixci package proxy: {host} is not one of this cloud's package "
                                 "sources (deb.example.test)\n")
    response, _ = get(proxy, "http://evil.example.test/debian/README")
    assert response.status == 403
    assert web.connections == 0
    assert proxy.stats()["refused"] == 3


def test_methods_other_than_get_and_head_get_405(proxy: PackageProxy, web: Upstream) -> None:
    for method in ("POST", "PUT", "CONNECT"):
        response, _ = get(proxy, "/debian/README", method=method)
        assert (response.status, response.getheader("Allow")) == (405, "GET, HEAD")
    assert web.connections == 0


# --- https ---------------------------------------------------------------------------------

def test_https_to_an_allowed_name_reaches_the_upstream_uninterrupted(
        proxy: PackageProxy, tls_web: Upstream, client_tls: ssl.SSLContext, certificate: Certificate) -> None:
    cert, response = tls_get(proxy, client_tls, "pkgs.example.test")
    assert cert == certificate.der  # the upstream's own certificate, verified by the client: no interception
    assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"upstream says hello to /\n")
    assert tls_web.connections == 1 and tls_web.requests[0][2]["Host"] == "pkgs.example.test"
    assert proxy.stats()["https_tunnels"] == 1


def test_a_client_hello_in_pieces_is_still_read(proxy: PackageProxy, tls_web: Upstream,
                                                client_tls: ssl.SSLContext) -> None:
    """Two TLS records, sent as three TCP segments with pauses between them; then a whole request."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls.wrap_bio(incoming, outgoing, server_hostname="pkgs.example.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    record = outgoing.read()
    body = record[5:]
    cut = len(body) // 2
    records = [record[:3] + len(part).to_bytes(2, "big") + part for part in (body[:cut], body[cut:])]
    wire = b"".join(records)
    with socket.create_connection((LOOPBACK, proxy.https_port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (wire[:3], wire[3:len(records[0]) + 10], wire[len(records[0]) + 10:]):
            sock.sendall(piece)
            time.sleep(0.1)  # a pause, not a poll: the proxy must see the hello arrive in pieces
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the connection closed during the handshake"
                incoming.write(data)
        tls.write(b"GET /split HTTP/1.0\r\nHost: pkgs.example.test\r\n\r\n")
        sock.sendall(outgoing.read())
        response = b""
        while data := sock.recv(65536):  # the upstream closes after its answer (HTTP/1.0)
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                while chunk := tls.read(65536):
                    response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"upstream says hello to /split\n")
    assert tls_web.connections == 1 and proxy.stats()["https_tunnels"] == 1


def test_https_without_an_allowed_server_name_is_reset(proxy: PackageProxy, tls_web: Upstream,
                                                       client_tls: ssl.SSLContext,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    port = proxy.https_port
    assert is_reset(port, hello(client_tls, "evil.example.test"))
    assert is_reset(port, hello(client_tls, None))
    assert is_reset(port, b"GET / HTTP/1.1\r\nHost: pkgs.example.test\r\n\r\n")  # not TLS at all
    started = time.monotonic()
    assert is_reset(port, b"")  # nothing: reset after hello_timeout (1 s here)
    assert 0.9 < time.monotonic() - started < TIMEOUT
    with pytest.raises(ConnectionResetError), socket.create_connection((LOOPBACK, port), timeout=TIMEOUT) as raw:
        client_tls.wrap_socket(raw, server_hostname="evil.example.test")  # what a real client meets
    assert tls_web.connections == 0
    assert proxy.stats()["refused"] == 5 and proxy.stats()["https_tunnels"] == 0
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "'evil.example.test' is not one of this cloud's package sources" in refusals[0]
    assert "no server name (SNI)" in refusals[1]
    assert "not a TLS handshake" in refusals[2]
    assert "no complete ClientHello within 1s" in refusals[3]


# --- lifecycle -----------------------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_closing_leaves_no_thread_or_socket_and_frees_the_ports(
        web: Upstream, tls_web: Upstream, client_tls: ssl.SSLContext, tmp_path: Path) -> None:
    def resolve(host: str, port: int) -> tuple[str, int]:
        return LOOPBACK, (web if port == 80 else tls_web).server_address[1]

    threads, fds = set(threading.enumerate()), open_fds()
    http_port, https_port = free_port(), free_port()
    proxy = PackageProxy(LOOPBACK, ALLOWED, tmp_path / "cache", http_port=http_port, https_port=https_port,
                         resolve=resolve, idle_timeout=30.0, hello_timeout=30.0, upstream_timeout=TIMEOUT)
    with proxy:
        assert (proxy.http_port, proxy.https_port) == (http_port, https_port)
        keep_alive = http.client.HTTPConnection(LOOPBACK, http_port, timeout=TIMEOUT)
        keep_alive.request("GET", "/debian/README", headers={"Host": "deb.example.test"})
        assert keep_alive.getresponse().read()  # the connection stays open, idle
        tunnel = client_tls.wrap_socket(socket.create_connection((LOOPBACK, https_port), timeout=TIMEOUT),
                                        server_hostname="pkgs.example.test")  # open, idle
        silent = socket.create_connection((LOOPBACK, https_port), timeout=TIMEOUT)  # no hello yet
        wait_until(lambda: len([t for t in threading.enumerate() if t.name.startswith("pkgproxy")]) >= 6,
                   timeout=TIMEOUT, what="the proxy's threads for three connections")
        started = time.monotonic()
    assert time.monotonic() - started < 2.0, "close() waited for idle connections instead of cutting them"
    assert [t.name for t in threading.enumerate() if t.name.startswith("pkgproxy")] == []
    for sock in (keep_alive.sock, tunnel, silent):  # each was cut: an end or a reset, not a timeout
        assert sock is not None
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            assert sock.recv(1) == b""
    keep_alive.close()
    tunnel.close()
    silent.close()
    wait_until(lambda: set(threading.enumerate()) <= threads, timeout=TIMEOUT, what="the upstreams' threads")
    wait_until(lambda: open_fds() == fds, timeout=TIMEOUT, what="every socket closed")
    with PackageProxy(LOOPBACK, ALLOWED, tmp_path / "cache", http_port=http_port, https_port=https_port) as again:
        assert (again.http_port, again.https_port) == (http_port, https_port)
    proxy.close()  # idempotent
