"""Elastic IP forwarding: TCP listeners on 127.x addresses that splice to instances.

A ``Forwarder`` listens on one (Elastic IP, port). Each accepted connection takes the target in
force at that moment and keeps it until it ends, so ``set_target`` moves *new* connections at
once while open ones finish on the old instance (AWS re-association without drops).
``EipForwarding`` reconciles a set of forwarders from the desired EIP → instance mapping.

Safety: listeners bind only inside 127.0.0.0/8; targets must lie in 127.0.0.0/8 or in a private
(RFC 1918) network the caller allowed (the run's own subnets).

This module holds ``EipForwarding`` (with ``Target`` and ``ApplyResult``); ``Forwarder`` and the
address checks are ``eip_forwarder``'s (re-exported here), the sockets ``eip_splice``'s.
"""
from __future__ import annotations

import functools
import ipaddress
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from phoenixci.localcloud.eip_forwarder import (
    THREAD_PREFIX,
    Forwarder,
    ForwarderStats,
    ForwardingError,
    check_target,
    private_networks,
)


@dataclass(frozen=True)
class Target:
    """Where an Elastic IP points: the instance's private IP, the ports to forward, a policy."""

    instance_ip: str
    ports: frozenset[int] | set[int] = field(default_factory=frozenset)
    #: ``allow(source_ip, port)``: e.g. the instance's security groups; ``None`` allows all.
    allow: Callable[[str, int], bool] | None = field(default=None, compare=False)


@dataclass
class ApplyResult:
    added: list[tuple[str, int]] = field(default_factory=list)
    retargeted: list[tuple[str, int]] = field(default_factory=list)
    removed: list[tuple[str, int]] = field(default_factory=list)


class EipForwarding:
    """The forwarders for every associated Elastic IP, reconciled by ``apply``. Thread-safe."""

    def __init__(self, allowed_networks: Iterable[str | ipaddress.IPv4Network] = (), *,
                 grace: float = 5.0, connect_timeout: float = 5.0, idle_timeout: float = 600.0) -> None:
        self._allowed = private_networks(allowed_networks)
        self._grace = grace
        self._opts = {"connect_timeout": connect_timeout, "idle_timeout": idle_timeout}
        self._lock = threading.Lock()
        self._forwarders: dict[tuple[str, int], Forwarder] = {}
        self._draining: list[Forwarder] = []

    def allow_network(self, network: str) -> None:
        """Allow targets in ``network`` too (a subnet bridge the local cloud just created)."""
        with self._lock:
            for net in private_networks([network]):
                if net not in self._allowed:
                    self._allowed.append(net)

    def forwarders(self) -> dict[tuple[str, int], Forwarder]:
        with self._lock:
            return dict(self._forwarders)

    def apply(self, desired: Mapping[str, Target]) -> ApplyResult:
        """Make the listeners match ``desired`` (public IP → Target). Idempotent.

        Every entry is attempted; failures are raised together at the end as ForwardingError.
        A removed listener stops accepting at once; its open connections drain.
        """
        result = ApplyResult()
        errors: list[str] = []
        with self._lock:
            self._reap()
            want: dict[tuple[str, int], Target] = {}
            for public_ip, target in desired.items():
                for port in target.ports:
                    want[(public_ip, port)] = target
            for key in sorted(set(self._forwarders) - set(want)):
                fwd = self._forwarders.pop(key)
                fwd.stop_listening()
                self._draining.append(fwd)
                result.removed.append(key)
            for key, target in sorted(want.items()):
                try:
                    self._ensure(key, target, result)
                except (ForwardingError, ValueError) as e:
                    errors.append(f"{key[0]}:{key[1]}: {e}")
        if errors:
            raise ForwardingError("Elastic IP forwarding incomplete: " + "; ".join(errors))
        return result

    def _ensure(self, key: tuple[str, int], target: Target, result: ApplyResult) -> None:
        public_ip, port = key
        allow = functools.partial(_port_allow, target.allow, port) if target.allow else None
        fwd = self._forwarders.get(key)
        if fwd is None:
            check_target(target.instance_ip, self._allowed)
            fwd = Forwarder(public_ip, port, allowed_networks=self._allowed, **self._opts)
            try:
                fwd.set_target(target.instance_ip, port, allow)
            except ForwardingError:
                fwd.close()
                raise
            self._forwarders[key] = fwd
            result.added.append(key)
            return
        if fwd.target != (check_target(target.instance_ip, self._allowed), port):
            result.retargeted.append(key)
        fwd.set_target(target.instance_ip, port, allow)

    def _reap(self) -> None:
        for fwd in list(self._draining):
            if fwd.stats().active == 0:
                fwd.close()
                self._draining.remove(fwd)

    def close(self, grace: float | None = None) -> None:
        """Close every forwarder (open connections get ``grace`` seconds, default the manager's)."""
        with self._lock:
            fwds = list(self._forwarders.values()) + self._draining
            self._forwarders.clear()
            self._draining = []
        for fwd in fwds:
            fwd.stop_listening()
        for fwd in fwds:
            fwd.close(self._grace if grace is None else grace)


def _port_allow(allow: Callable[[str, int], bool], port: int, source_ip: str) -> bool:
    return allow(source_ip, port)


__all__ = ["THREAD_PREFIX", "ApplyResult", "EipForwarding", "Forwarder", "ForwarderStats", "ForwardingError",
           "Target", "check_target", "private_networks"]
