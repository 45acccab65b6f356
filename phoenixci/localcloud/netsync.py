"""The local cloud's network kept in step with moto: security groups, anti-spoofing and the
metadata redirect as nftables rules on the host side of every instance's link (``hostsg``), Elastic
IPs as host-side forwarders (``eip.EipForwarding``).

Security groups: ``prepare(instance_id)`` applies the rules before the instance's container
starts (a port without rules sends nothing, so none may boot without them); ``apply(snap)`` keeps
them in step on every reconcile pass, from a fresh read of moto under the lock, and only runs
``nft`` when the rendered rules changed.

Elastic IPs follow the API *synchronously*. Waiting for the next reconcile pass (0.2 s apart,
longer while a pass boots or destroys instances) left a window after AssociateAddress returned
in which the address still led to the old server — and a pass destroyed the old server's
container before it retargeted the forwarder, so a deploy that moved the address and retired
the old stack at once dropped requests. Now three entry points share one lock:

- ``on_address_change(backend)``: the ``patches.eip_events`` listener, called in the API request
  thread after every association change, before AssociateAddress / DisassociateAddress /
  TerminateInstances (which disassociates) returns;
- ``apply(snap)``: the reconciler's network step on every pass;
- ``release(leaving)``: the reconciler, before it stops or destroys instances: afterwards no
  forwarder sends new connections to them (open ones keep their target until they end).

Every Elastic IP sync reads moto afresh under the lock, so a pass that read moto before a change
can never undo what the hook applied after it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from phoenixci.localcloud import hostsg, secgroups
from phoenixci.localcloud.eip import ApplyResult, EipForwarding, ForwardingError, Target
from phoenixci.localcloud.reconcile import RUNNING_STATES
from phoenixci.localcloud.snapshot import Snapshot

log = logging.getLogger(__name__)


def eip_targets(snap: Snapshot, running: Iterable[str]) -> dict[str, Target]:
    """public IP → Target for each address associated with a running instance whose container
    exists (``running``), forwarding the ports its security groups open to the internet."""
    have = set(running)
    desired = {}
    for public_ip, instance_id in snap.addresses.items():
        view = snap.instances.get(instance_id)
        if view is None or view.state not in RUNNING_STATES or instance_id not in have:
            continue
        groups = [secgroups.from_moto(snap.groups[g]) for g in view.group_ids if g in snap.groups]
        desired[public_ip] = Target(view.private_ip, secgroups.allowed_public_ports(groups))
    return desired


class NetworkSync:
    """Security groups and Elastic IPs of one local cloud; see the module docstring."""

    def __init__(self, *, read: Callable[[], Snapshot], ec2: Callable[[], Any],
                 running: Callable[[], Iterable[str]], links: hostsg.CloudLinks | None = None,
                 forwarding: EipForwarding | None = None) -> None:
        self._read, self._ec2, self._running = read, ec2, running
        self.links = links  # None: no security groups (Elastic IPs only)
        self.forwarding = forwarding if forwarding is not None else EipForwarding()
        self._ruleset: str | None = None  # the host-side rules last applied
        self._lock = threading.RLock()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> NetworkSync:
        """Follow association changes of the in-process moto from now on."""
        from phoenixci.localcloud.patches import eip_events

        eip_events.add_listener(self.on_address_change)
        return self

    def close(self) -> None:
        from phoenixci.localcloud.patches import eip_events

        eip_events.remove_listener(self.on_address_change)
        with self._lock:  # a sync in flight (an API call during stop) finishes first, later ones do nothing
            self._closed = True
        self.forwarding.close()

    def prepare(self, instance_id: str) -> None:
        """Before ``instance_id``'s container starts: its port and groups on the host, applied
        even if unchanged (the tables may have gone with the last bridge)."""
        self.sync_groups(force=True)
        log.debug("host-side rules in place for %s", instance_id)

    # -- the reconciler's network step --------------------------------------------------------
    def apply(self, snap: Snapshot) -> None:
        """Security groups (from moto now, not ``snap``: a pass never undoes a newer prepare),
        then the Elastic IPs; each isolated (a failure is logged and retried next pass). An
        instance whose container or namespace vanished meanwhile is simply left out of the next
        render (``hostsg.ports_of``: only instances that run or whose container is present)."""
        try:
            self.sync_groups()
        except Exception as e:  # noqa: BLE001 - the Elastic IPs still follow; retried next pass
            log.error("security groups not applied this pass (retried next pass): %s", e)
        try:
            self.sync_eips()
        except (ForwardingError, RuntimeError) as e:
            log.error("Elastic IP forwarding not fully applied this pass (retried next pass): %s", e)

    def sync_groups(self, *, force: bool = False) -> None:
        """Host-side rules = moto's instances and groups now; raises NetError if nft refuses."""
        if self.links is None:
            return
        with self._lock:
            if self._closed:
                return
            ruleset = self.links.render(self._fresh(), self._running())
            if ruleset and (force or ruleset != self._ruleset):
                hostsg.apply(self.links.tag, ruleset)
            self._ruleset = ruleset

    def _fresh(self) -> Snapshot:
        for attempt in range(3):
            try:
                return self._read()
            except RuntimeError:  # moto state changed during iteration: read again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- Elastic IPs ------------------------------------------------------------------------------

    def _desired(self) -> dict[str, Target]:
        return eip_targets(self._fresh(), self._running())

    def sync_eips(self) -> ApplyResult:
        """Forwarders = moto's associations now. Raises ForwardingError for entries that failed."""
        with self._lock:
            if self._closed:
                return ApplyResult()
            return self.forwarding.apply(self._desired())

    def on_address_change(self, backend: Any) -> None:
        """patches.eip_events listener: apply the change before the API call returns."""
        if backend is not self._ec2():
            return  # another account or region: not this cloud's addresses
        try:
            self.sync_eips()
        except (ForwardingError, RuntimeError) as e:
            log.error("Elastic IP change not applied at once (the next reconcile pass retries): %s", e)

    def release(self, leaving: Mapping[str, str]) -> None:
        """Before the instances ``leaving`` (id → private IP) stop or go: no forwarder may still
        send new connections to them. Retarget from moto's state; a forwarder that still points
        at one of them (its retarget failed) refuses new connections until the next pass."""
        with self._lock:
            if self._closed:
                return
            desired = self._desired()
            try:
                self.forwarding.apply(desired)
            except ForwardingError as e:
                log.error("Elastic IP forwarding before stopping %s: %s", ", ".join(sorted(leaving)), e)
            keep = {t.instance_ip for t in desired.values()}
            gone = {ip for ip in leaving.values() if ip and ip not in keep}
            for (public_ip, port), fwd in self.forwarding.forwarders().items():
                target = fwd.target
                if target is not None and target[0] in gone:
                    log.warning("EIP %s:%d still led to %s, which is going: refusing new connections",
                                public_ip, port, target[0])
                    fwd.clear_target()


__all__ = ["NetworkSync", "eip_targets"]
