"""Elastic IP forwarding over loopback: retargeting without drops, refusals, reconcile, cleanup."""
from __future__ import annotations

import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from phoenixci.localcloud.eip import (
    THREAD_PREFIX,
    EipForwarding,
    Forwarder,
    ForwardingError,
    Target,
)
from phoenixci.localcloud.secgroups import Rule, SecurityGroup, allows
from phoenixci.util import free_port, wait_until

pytestmark = pytest.mark.unit


class _Echo(socketserver.BaseRequestHandler):
    """Say the backend's name, echo everything, and after the client's EOF report the byte count."""

    def handle(self) -> None:
        name: str = self.server.name  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        sock.settimeout(10)
        sock.sendall(f"{name}\n".encode())
        total = 0
        while data := sock.recv(65536):
            total += len(data)
            sock.sendall(data)
        sock.sendall(f"{name} got {total}\n".encode())


class Backend(socketserver.ThreadingTCPServer):
    """A stand-in instance listening on (ip, port)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, ip: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((ip, port), _Echo)
        self.name = name
        self.ip, self.port = self.server_address[0], int(self.server_address[1])
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def _rand_ip(prefix: str = "127.10") -> str:
    return f"{prefix}.{random.randint(1, 254)}.{random.randint(1, 254)}"


def _eip() -> tuple[str, int]:
    ip = _rand_ip()
    return ip, free_port(ip)


def _connect(ip: str, port: int) -> tuple[socket.socket, str]:
    """Connect and read the backend's name line."""
    s = socket.create_connection((ip, port), timeout=3)
    return s, _readline(s)


def _readline(s: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError(f"EOF after {buf!r}")
        buf += chunk
    return buf.decode().strip()


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def _refused(ip: str, port: int) -> bool:
    """True if a connection is refused or reset (not answered by a backend), quickly."""
    try:
        s = socket.create_connection((ip, port), timeout=1)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    with s:
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True


def _ended(s: socket.socket) -> bool:
    """True if the forwarder ended the connection (EOF or reset) before the socket timeout."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _forwarder_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """No forwarder thread this test started outlives it (a local cloud running in the same
    process has forwarders of its own: those are not the test's)."""
    before = _forwarder_threads()
    yield
    wait_until(lambda: not (_forwarder_threads() - before), timeout=5, what="forwarder threads to end")


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    a, b = Backend("A"), Backend("B")
    yield a, b
    a.stop()
    b.stop()


def test_switch_moves_new_connections_and_open_ones_finish(backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    fwd = Forwarder(*_eip())
    try:
        fwd.set_target("127.0.0.1", a.port)
        long, name = _connect(fwd.listen_ip, fwd.port)
        assert name == "A"
        sent = 0
        with long:
            for i in range(40):  # stream across two switches
                if i == 10:
                    fwd.set_target("127.0.0.1", b.port)
                    new, new_name = _connect(fwd.listen_ip, fwd.port)
                    new.close()
                    assert new_name == "B"
                if i == 30:
                    fwd.set_target("127.0.0.1", a.port)
                chunk = bytes([i]) * (1000 + 997 * i)
                long.sendall(chunk)
                assert _recv_exact(long, len(chunk)) == chunk
                sent += len(chunk)
            long.shutdown(socket.SHUT_WR)  # half-close: the backend sees EOF, we still read
            assert _readline(long) == f"A got {sent}"
            assert long.recv(1) == b""
        wait_until(lambda: fwd.stats().active == 0, timeout=3, what="connections to end")
        assert fwd.stats().total == 2
    finally:
        fwd.close()


def test_clear_target_refuses_new_connections_quickly(backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    fwd = Forwarder(*_eip())
    try:
        fwd.set_target("127.0.0.1", a.port)
        open_conn, _ = _connect(fwd.listen_ip, fwd.port)
        fwd.clear_target()
        start = time.monotonic()
        assert _refused(fwd.listen_ip, fwd.port)
        assert time.monotonic() - start < 1.0
        with open_conn:  # the connection made before still works
            open_conn.sendall(b"still here")
            assert _recv_exact(open_conn, 10) == b"still here"
        assert fwd.stats().rejected == 1
    finally:
        fwd.close()
    assert _refused(fwd.listen_ip, fwd.port)


def test_allow_callback_decides_per_source(backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    fwd = Forwarder(*_eip())
    try:
        fwd.set_target("127.0.0.1", a.port, allow=lambda src: False)
        assert _refused(fwd.listen_ip, fwd.port)
        groups = [SecurityGroup("sg-1", [Rule("tcp", a.port, a.port, ["127.0.0.1/32"])])]
        fwd.set_target("127.0.0.1", a.port, allow=lambda src: allows(groups, source_ip=src, port=a.port))
        s, name = _connect(fwd.listen_ip, fwd.port)
        s.close()
        assert name == "A"
    finally:
        fwd.close()


def test_unreachable_target_resets_client() -> None:
    fwd = Forwarder(*_eip(), connect_timeout=1)
    try:
        fwd.set_target("127.0.0.1", free_port())
        assert _refused(fwd.listen_ip, fwd.port)
    finally:
        fwd.close()


def test_close_cuts_open_connections_after_grace(backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    fwd = Forwarder(*_eip())
    fwd.set_target("127.0.0.1", a.port)
    s, _ = _connect(fwd.listen_ip, fwd.port)
    start = time.monotonic()
    fwd.close(grace=0.3)
    assert 0.25 < time.monotonic() - start < 3
    with s:
        assert _ended(s)


def test_listen_and_target_safety() -> None:
    with pytest.raises(ForwardingError, match="127.0.0.0/8"):
        Forwarder("192.0.2.2", 8080)
    with pytest.raises(ForwardingError, match="RFC 1918"):
        Forwarder(_rand_ip(), 0, allowed_networks=["8.8.8.0/24"])
    fwd = Forwarder(_rand_ip(), 0, allowed_networks=["10.77.0.0/16"])
    try:
        with pytest.raises(ForwardingError, match="refusing to forward"):
            fwd.set_target("8.8.8.8", 80)
        with pytest.raises(ForwardingError, match="refusing to forward"):
            fwd.set_target("10.78.0.5", 80)
        fwd.set_target("10.77.0.5", 80)  # allowed (not connected until a client comes)
        assert fwd.target == ("10.77.0.5", 80)
    finally:
        fwd.close()


def test_eip_forwarding_reconciles() -> None:
    before = _forwarder_threads()
    port = free_port()
    a = Backend("A", "127.0.0.1", port)
    b_ip = _rand_ip("127.11")
    b = Backend("B", b_ip, port)
    eip1, eip2 = _rand_ip(), _rand_ip()
    mgr = EipForwarding(grace=0.2)
    try:
        res = mgr.apply({eip1: Target("127.0.0.1", {port})})
        assert res.added == [(eip1, port)]
        assert _connect(eip1, port)[1] == "A"
        res = mgr.apply({eip1: Target("127.0.0.1", {port})})  # idempotent
        assert (res.added, res.retargeted, res.removed) == ([], [], [])
        draining, name = _connect(eip1, port)
        assert name == "A"

        res = mgr.apply({eip1: Target(b_ip, {port})})
        assert res.retargeted == [(eip1, port)]
        s, name = _connect(eip1, port)
        s.close()
        assert name == "B"

        res = mgr.apply({eip2: Target("127.0.0.1", {port})})
        assert res.removed == [(eip1, port)] and res.added == [(eip2, port)]
        assert _refused(eip1, port)
        with draining:  # opened before the removal: still served
            draining.sendall(b"ping")
            assert _recv_exact(draining, 4) == b"ping"
        assert _connect(eip2, port)[1] == "A"

        with pytest.raises(ForwardingError, match="8.8.8.8"):
            mgr.apply({eip2: Target("127.0.0.1", {port}), eip1: Target("8.8.8.8", {port})})
        assert set(mgr.forwarders()) == {(eip2, port)}  # the good entry was still applied
    finally:
        mgr.close()
        a.stop()
        b.stop()
    assert _refused(eip1, port) and _refused(eip2, port)
    assert not (_forwarder_threads() - before)


def test_eip_forwarding_per_port_policy() -> None:
    a = Backend("A")
    eip = _rand_ip()
    groups = [SecurityGroup("sg-1", [Rule("tcp", a.port, a.port, ["10.0.0.0/8"])])]
    mgr = EipForwarding()
    try:
        mgr.apply({eip: Target("127.0.0.1", {a.port},
                               allow=lambda src, port: allows(groups, source_ip=src, port=port))})
        assert _refused(eip, a.port)  # 127.0.0.1 (the internet) is not in 10/8
    finally:
        mgr.close()
        a.stop()


def test_idle_connections_end(backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    fwd = Forwarder(*_eip(), idle_timeout=0.3)
    try:
        fwd.set_target("127.0.0.1", a.port)
        s, _ = _connect(fwd.listen_ip, fwd.port)
        with s:
            start = time.monotonic()
            assert _ended(s)
            assert 0.2 < time.monotonic() - start < 2
    finally:
        fwd.close()
