"""The reconciler: make the EC2 state in moto real.

Each pass reads moto's in-process EC2 backend (instances, subnets, security groups, Elastic
IPs) and drives the runtime towards it: a running instance is a running system container, a
stopped one is stopped, a terminated one is destroyed; each subnet with instances has a bridge
(with the API and the IMDS listening on its gateway); security groups become nftables rules on
the host side of each instance's link; associated Elastic IPs are forwarded from the host.

Pure functions (``desired_*``) compute what should exist from a snapshot; ``Reconciler`` applies
the difference and records per-instance phases and errors for ``phoenixci cloud status``.

Each instance's step is isolated (one bad instance never stalls the others), and so is the
network step. A start that fails — the runtime raised, or the container exited before the
instance was ever ready — is retried after a growing delay, ``launches.StartPolicy.attempts``
times in all; then ``fail`` gives up on the instance (the local cloud terminates it in the API
with EC2's launch-failure reason: launches.py) and its record keeps the reason.

Before a pass stops or destroys any instance's container it calls ``release`` with those
instances: no Elastic IP may still lead new connections to a server that is going away (the
local cloud retargets its forwarders from moto's current state there). If that fails, the
pass leaves those containers alone and tries again next time.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phoenixci.localcloud.launches import StartPolicy
from phoenixci.localcloud.snapshot import InstanceView, Snapshot

log = logging.getLogger(__name__)

RUNNING_STATES = {"pending", "running"}
STOPPED_STATES = {"stopping", "stopped"}
GONE_STATES = {"shutting-down", "terminated"}


@dataclass
class InstanceRecord:
    """What the reconciler knows of an instance beyond moto: its phase and last error."""

    instance_id: str
    phase: str = "absent"
    error: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    private_ip: str = ""
    #: a pass has acted on it and read its phase at least once
    converged: bool = False
    #: a container was started for it and it has not been ready since (its exit = a failed start)
    launching: bool = False
    #: failed starts since it was last ready; no new start before ``retry_at`` (monotonic)
    failures: int = 0
    retry_at: float | None = None
    #: set when the reconciler gave up starting it: why (kept after its container is gone)
    failure: str | None = None


@dataclass
class Reconciler:
    """Runs passes on a thread until stopped. ``apply_*`` callables are the runtime's hooks."""

    read: Callable[[], Snapshot]
    ensure_running: Callable[[InstanceView], None]
    ensure_stopped: Callable[[str], None]
    ensure_gone: Callable[[str], None]
    phase_of: Callable[[str], str]
    apply_network: Callable[[Snapshot], None] = lambda snap: None
    #: called with {instance id: private IP} of the instances this pass will stop or destroy
    release: Callable[[dict[str, str]], None] = lambda leaving: None
    #: why the container of an instance that never became ready has ended
    exit_reason: Callable[[str], str] = lambda instance_id: "the container exited at start"
    #: give up on an instance (called with its id and the reason once the policy says so)
    fail: Callable[[str, str], None] = lambda instance_id, reason: None
    policy: StartPolicy = field(default_factory=StartPolicy)
    interval: float = 0.2
    records: dict[str, InstanceRecord] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    passes: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a pass now (the API calls it after each request that may change something):
        a launch is picked up at once instead of at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a wake during the pass below runs the next one at once
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the loop must survive; the error is logged
                log.exception("reconcile pass failed")
            self._wake.wait(self.interval)

    def run_once(self) -> None:
        """One pass: converge every instance, then the network (SGs, EIPs)."""
        for attempt in range(3):
            try:
                snap = self.read()
                break
            except RuntimeError:  # moto state changed during iteration: read again
                if attempt == 2:
                    raise
        with self._lock:
            forgotten = set(self.records) - set(snap.instances)
            leaving = {v.instance_id: v.private_ip for v in snap.instances.values() if self._leaving(v)}
            leaving.update({i: self.records[i].private_ip for i in forgotten})
            held = False
            if leaving:
                try:
                    self.release(leaving)
                except Exception as e:  # noqa: BLE001 - keep those containers this pass, retry next
                    log.error("not stopping %s this pass: %s", ", ".join(sorted(leaving)), e)
                    held = True
            for view in snap.instances.values():
                if not (held and view.instance_id in leaving):
                    self._converge(view)
            for gone in () if held else forgotten:
                self._act(gone, functools.partial(self.ensure_gone, gone))
                if self.records[gone].error is None:
                    del self.records[gone]  # moto forgot it and its container is gone
            try:
                self.apply_network(snap)
            except Exception:  # noqa: BLE001 - the instances were converged; the next pass retries
                log.exception("network step of a reconcile pass failed (retried next pass)")
            self.passes += 1

    def _idle(self, view: InstanceView) -> bool:
        """True when the last pass left ``view``'s container as its stopped/gone state wants."""
        record = self.records.get(view.instance_id)
        if record is None or not record.converged or record.error is not None:
            return False
        if view.state in GONE_STATES:
            return record.phase == "absent"
        return view.state in STOPPED_STATES and record.phase in {"absent", "stopped"}

    def _leaving(self, view: InstanceView) -> bool:
        """This pass will stop or destroy ``view``'s container (it may still be running)."""
        return view.state not in RUNNING_STATES and not self._idle(view)

    def _converge(self, view: InstanceView) -> None:
        idle = self._idle(view)  # already stopped / destroyed: nothing to do (and nothing to log)
        record = self.records.setdefault(view.instance_id, InstanceRecord(view.instance_id))
        record.private_ip = view.private_ip
        if view.state in RUNNING_STATES:
            self._start(view, record)
        else:
            record.launching = False
        if view.state in STOPPED_STATES:
            if not idle:
                self._act(view.instance_id, lambda: self.ensure_stopped(view.instance_id))
            record.started_at = None
        elif view.state in GONE_STATES and not idle:
            self._act(view.instance_id, lambda: self.ensure_gone(view.instance_id))
        record.converged = True
        try:
            record.phase = self.phase_of(view.instance_id)
        except Exception as e:  # noqa: BLE001 - report, do not stop the pass
            record.phase = "unknown"
            record.error = str(e)
        if record.phase == "ready" and record.ready_at is None:
            record.ready_at = time.monotonic()
        if record.phase == "ready":
            record.launching, record.failures, record.retry_at = False, 0, None

    def _start(self, view: InstanceView, record: InstanceRecord) -> None:
        """Start (or keep running) ``view``, counting failed starts against the policy."""
        iid = view.instance_id
        if record.failure is not None:  # given up, but the API still has it running: tell it again
            self._give_up(record, record.failure)
            return
        if record.launching and self._phase(iid) == "stopped":
            record.launching = False
            self._failed_start(record, self._reason(iid))  # the container exited before ready
        if record.failure is not None or (record.retry_at is not None and time.monotonic() < record.retry_at):
            return
        if record.started_at is None or record.phase in {"absent", "stopped"}:
            record.started_at = time.monotonic()
            record.ready_at = None
            record.launching = True  # this pass starts its container
        try:
            self.ensure_running(view)
            record.error = None
        except Exception as e:  # noqa: BLE001 - one bad instance must not stall the others
            record.launching = False
            self._failed_start(record, str(e) or type(e).__name__)

    def _phase(self, instance_id: str) -> str:
        try:
            return self.phase_of(instance_id)
        except Exception:  # noqa: BLE001 - unknown: not counted as an exit
            return "unknown"

    def _reason(self, instance_id: str) -> str:
        try:
            return self.exit_reason(instance_id)
        except Exception as e:  # noqa: BLE001
            return f"the container exited at start (no details: {e})"

    def _failed_start(self, record: InstanceRecord, reason: str) -> None:
        record.failures += 1
        delay = self.policy.delay_after(record.failures)
        if delay is None:
            self._give_up(record, f"failed to start {record.failures} times, last: {reason}")
            return
        record.retry_at = time.monotonic() + delay
        record.error = (f"start {record.failures} of {self.policy.attempts} failed: {reason} "
                        f"(next in {delay:g} s)")
        log.error("instance %s: %s", record.instance_id, record.error)

    def _give_up(self, record: InstanceRecord, reason: str) -> None:
        if record.failure is None:
            log.error("instance %s: giving up: %s", record.instance_id, reason)
        record.failure = record.error = reason
        try:
            self.fail(record.instance_id, reason)
        except Exception as e:  # noqa: BLE001 - the next pass tells the API again
            log.error("instance %s: could not mark it failed: %s", record.instance_id, e)

    def _act(self, instance_id: str, action: Callable[[], None]) -> None:
        record = self.records.setdefault(instance_id, InstanceRecord(instance_id))
        try:
            action()
            record.error = None
        except Exception as e:  # noqa: BLE001 - one bad instance must not stall the others
            if record.error != str(e):
                log.error("instance %s: %s", instance_id, e)
            record.error = str(e)

    def status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {i: {"phase": r.phase, "error": r.error or r.failure} for i, r in self.records.items()}
