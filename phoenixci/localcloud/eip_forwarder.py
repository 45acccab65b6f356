"""One Elastic IP listener (``Forwarder``; ``eip`` keeps one per EIP and port) and the address checks.

A forwarder listens on one 127.x (address, port); each connection it accepts is spliced
(``eip_splice``) to the target in force at that moment, or reset when there is none or
``allow`` refuses its source. Listeners bind only inside 127.0.0.0/8; targets must lie in
127.0.0.0/8 or in the RFC 1918 networks the caller allowed (``private_networks``, ``check_target``).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from phoenixci.errors import PhoenixError
from phoenixci.localcloud.eip_splice import Connection, Listener, reset

log = logging.getLogger("phoenixci.localcloud.eip")  # the Elastic IP log lines, as before

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
RFC1918 = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
THREAD_PREFIX = "phx-eip"


class ForwardingError(PhoenixError):
    """A forwarder could not listen, or was asked to reach an address it must not."""


@dataclass(frozen=True)
class ForwarderStats:
    active: int
    total: int
    rejected: int


def _check_listen_ip(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ForwardingError(f"bad listen address {ip!r}") from None
    if addr.version != 4 or addr not in LOOPBACK:
        raise ForwardingError(f"refusing to listen on {ip}: Elastic IPs are forwarded only on 127.0.0.0/8")
    return str(addr)


def private_networks(networks: Iterable[str | ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    """Parse ``networks`` and check each lies inside RFC 1918 space."""
    out = []
    for n in networks:
        try:
            net = ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n
        except ValueError:
            raise ForwardingError(f"bad network {n!r}") from None
        if not isinstance(net, ipaddress.IPv4Network) or not any(net.subnet_of(r) for r in RFC1918):
            raise ForwardingError(f"refusing target network {n}: only RFC 1918 networks may be allowed")
        out.append(net)
    return out


def check_target(ip: str, allowed: Iterable[ipaddress.IPv4Network]) -> str:
    """Return ``ip`` normalised if it is 127/8 or inside an allowed network; else raise."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ForwardingError(f"bad target address {ip!r}") from None
    if addr.version == 4 and (addr in LOOPBACK or any(addr in n for n in allowed)):
        return str(addr)
    raise ForwardingError(f"refusing to forward to {ip}: not in 127.0.0.0/8 or the allowed networks")


@dataclass(frozen=True)
class _Target:
    ip: str
    port: int
    allow: Callable[[str], bool] | None


class Forwarder:
    """One TCP listener on (listen_ip, port) forwarding to the current target.

    Without a target, new connections are reset at once. ``port=0`` picks a free port
    (see ``port``). ``idle_timeout`` ends a connection with no traffic either way.
    """

    def __init__(self, listen_ip: str, port: int, *,
                 allowed_networks: Iterable[str | ipaddress.IPv4Network] = (),
                 connect_timeout: float = 5.0, idle_timeout: float = 600.0) -> None:
        self.listen_ip = _check_listen_ip(listen_ip)
        self._allowed = private_networks(allowed_networks)
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._target: _Target | None = None
        self._conns: set[Connection] = set()
        self._total = 0
        self._rejected = 0
        try:
            self._listener = Listener(self.listen_ip, port, self._accepted,
                                      name=f"{THREAD_PREFIX}-{self.listen_ip}:{port}")
        except OSError as e:
            raise ForwardingError(f"cannot listen on {self.listen_ip}:{port}: {e}") from e
        self.port = self._listener.port
        log.debug("forwarder listening on %s:%d", self.listen_ip, self.port)

    def __repr__(self) -> str:
        return f"Forwarder({self.listen_ip}:{self.port} -> {self.target})"

    @property
    def target(self) -> tuple[str, int] | None:
        t = self._target
        return (t.ip, t.port) if t else None

    @property
    def listening(self) -> bool:
        return self._listener.running

    def set_target(self, ip: str, port: int, allow: Callable[[str], bool] | None = None) -> None:
        """New connections go to (ip, port) from now on; ``allow(source_ip)`` may refuse them."""
        ip = check_target(ip, self._allowed)
        if not 0 < port < 65536:
            raise ForwardingError(f"bad target port {port}")
        with self._lock:
            old, self._target = self._target, _Target(ip, port, allow)
        if old is None or (old.ip, old.port) != (ip, port):
            log.info("EIP %s:%d -> %s:%d", self.listen_ip, self.port, ip, port)

    def clear_target(self) -> None:
        """New connections are reset at once; open ones go on."""
        with self._lock:
            self._target = None
        log.info("EIP %s:%d -> nothing", self.listen_ip, self.port)

    def stats(self) -> ForwarderStats:
        with self._lock:
            return ForwarderStats(active=len(self._conns), total=self._total, rejected=self._rejected)

    def _accepted(self, sock: socket.socket, source: tuple[str, int]) -> None:
        with self._lock:
            target = self._target
        if target is None or (target.allow is not None and not _safe_allow(target.allow, source[0])):
            with self._lock:
                self._rejected += 1
            log.debug("EIP %s:%d: rejected %s (target %s)", self.listen_ip, self.port, source[0], target)
            reset(sock)
            return
        conn = Connection(sock, (target.ip, target.port), connect_timeout=self._connect_timeout,
                          idle_timeout=self._idle_timeout, on_done=self._finished,
                          name=f"{THREAD_PREFIX}-{self.listen_ip}:{self.port}")
        with self._lock:
            self._conns.add(conn)
            self._total += 1
        conn.start()

    def _finished(self, conn: Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def stop_listening(self) -> None:
        """Stop accepting; open connections go on."""
        self._listener.close()

    def close(self, grace: float = 0.0) -> None:
        """Stop listening, give open connections up to ``grace`` seconds, then cut and join them."""
        self.stop_listening()
        deadline = time.monotonic() + grace
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.abort()
        for c in conns:
            c.join(self._connect_timeout + 5.0)
        log.debug("forwarder %s:%d closed", self.listen_ip, self.port)


def _safe_allow(allow: Callable[[str], bool], source_ip: str) -> bool:
    try:
        return bool(allow(source_ip))
    except Exception:  # noqa: BLE001 - a failing policy check must refuse, never crash the listener
        log.exception("allow() failed for %s; refusing", source_ip)
        return False

