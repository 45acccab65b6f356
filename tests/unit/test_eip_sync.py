"""Elastic IPs follow the API synchronously (localcloud/netsync.py, patches/eip_events.py) and
the reconciler never takes a server away while an Elastic IP still leads to it (reconcile.py).

Forwarding is real (listeners and backends on 127.x); moto's state is a plain snapshot.
"""
from __future__ import annotations

import random
import socket
import socketserver
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from phoenixci.localcloud import hostsg
from phoenixci.localcloud.eip import THREAD_PREFIX, EipForwarding, ForwardingError, Target
from phoenixci.localcloud.netsync import NetworkSync, eip_targets
from phoenixci.localcloud.patches import eip_events
from phoenixci.localcloud.reconcile import Reconciler
from phoenixci.localcloud.snapshot import InstanceView, Snapshot
from phoenixci.util import free_port, wait_until

pytestmark = pytest.mark.unit


def _group(port: int) -> Any:
    """A moto-shaped security group opening ``port`` to the internet."""
    rule = SimpleNamespace(ip_range={"CidrIp": "0.0.0.0/0"}, source_group={}, ip_protocol="tcp",
                           from_port=port, to_port=port)
    return SimpleNamespace(id="sg-web", ingress_rules=[rule])


def view(iid: str, ip: str, state: str = "running") -> InstanceView:
    return InstanceView(iid, state, ip, "subnet-1", "10.0.0.0/24", "02:00:00:00:00:01", ("sg-web",))


class Moto:
    """Stands in for moto's EC2 backend: instances, associations, security groups."""

    def __init__(self, port: int, **ips: str) -> None:
        self.views = {iid: view(iid, ip) for iid, ip in ips.items()}
        self.addresses: dict[str, str] = {}
        self.groups = {"sg-web": _group(port)}
        self.reads = 0

    def read(self) -> Snapshot:
        self.reads += 1
        return Snapshot(dict(self.views), dict(self.addresses), dict(self.groups))


class _Name(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(f"{self.server.name}\n".encode())  # type: ignore[attr-defined]
        self.request.settimeout(5)
        while self.request.recv(1024):
            pass


class Server(socketserver.ThreadingTCPServer):
    """A stand-in instance that says its name on every connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, ip: str, port: int) -> None:
        super().__init__((ip, port), _Name)
        self.name = name
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def who(ip: str, port: int) -> str:
    """The name of the server a new connection to (ip, port) reaches ("" if refused/reset)."""
    try:
        with socket.create_connection((ip, port), timeout=3) as s:
            return s.makefile().readline().strip()
    except (ConnectionRefusedError, ConnectionResetError):
        return ""


class Links:
    """Stands in for hostsg.CloudLinks: the host-side rules name the addresses of each snapshot."""

    tag = "phxt01"

    def render(self, snap: Snapshot, present: Any = ()) -> str:
        return " ".join(sorted(v.private_ip for v in snap.instances.values()))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """Instances A and B (real servers on 127.x), an Elastic IP address, a NetworkSync over them."""
    net = f"127.{random.randint(60, 90)}.{random.randint(1, 254)}"
    ip_a, ip_b, eip = f"{net}.2", f"{net}.3", f"{net}.1"
    port = free_port(ip_a)
    a, b = Server("A", ip_a, port), Server("B", ip_b, port)
    moto = Moto(port, **{"i-a": ip_a, "i-b": ip_b})
    backend = object()
    running = {"i-a", "i-b"}
    applied: list[str] = []
    monkeypatch.setattr(hostsg, "apply", lambda tag, ruleset: applied.append(ruleset))  # no real nft here
    sync = NetworkSync(read=moto.read, ec2=lambda: backend, running=lambda: set(running),
                       links=Links(), forwarding=EipForwarding(grace=0))  # type: ignore[arg-type]
    before = {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}
    yield SimpleNamespace(moto=moto, sync=sync, backend=backend, eip=eip, port=port, running=running,
                          ip_a=ip_a, ip_b=ip_b, applied=applied)
    sync.close()
    a.stop()
    b.stop()
    wait_until(lambda: not ({t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)} - before),
               timeout=5, what="forwarder threads to end")


def test_targets_only_running_instances_with_a_container() -> None:
    snap = Snapshot({"i-a": view("i-a", "10.0.0.5"), "i-b": view("i-b", "10.0.0.6", "stopped"),
                     "i-c": view("i-c", "10.0.0.7")},
                    {"127.9.0.1": "i-a", "127.9.0.2": "i-b", "127.9.0.3": "i-c", "127.9.0.4": "i-gone"},
                    {"sg-web": _group(8080)})
    assert eip_targets(snap, running={"i-a", "i-b"}) == {"127.9.0.1": Target("10.0.0.5", frozenset({8080}))}


def test_an_association_change_takes_effect_before_the_api_call_returns(world: SimpleNamespace) -> None:
    world.moto.addresses[world.eip] = "i-a"           # AssociateAddress …
    world.sync.on_address_change(world.backend)       # … and the listener, inside that call
    assert who(world.eip, world.port) == "A"
    with socket.create_connection((world.eip, world.port), timeout=3) as open_to_a:
        assert open_to_a.makefile().readline().strip() == "A"
        world.moto.addresses[world.eip] = "i-b"       # the move
        world.sync.on_address_change(world.backend)
        assert who(world.eip, world.port) == "B", "new connections go to the new instance at once"
        open_to_a.sendall(b"still here")              # the open one keeps its target
    world.moto.addresses.pop(world.eip)               # DisassociateAddress
    world.sync.on_address_change(world.backend)
    assert who(world.eip, world.port) == ""


def test_changes_in_another_account_are_ignored(world: SimpleNamespace) -> None:
    world.moto.addresses[world.eip] = "i-a"
    reads = world.moto.reads
    world.sync.on_address_change(object())
    assert world.moto.reads == reads and world.sync.forwarding.forwarders() == {}


def test_nothing_listens_after_close(world: SimpleNamespace) -> None:
    world.sync.close()
    world.moto.addresses[world.eip] = "i-a"  # an API call while the cloud stops
    world.sync.on_address_change(world.backend)
    world.sync.release({"i-a": world.ip_a})
    assert world.sync.forwarding.forwarders() == {} and who(world.eip, world.port) == ""


def test_a_pass_that_read_moto_before_the_move_cannot_undo_it(world: SimpleNamespace) -> None:
    world.moto.addresses[world.eip] = "i-a"
    stale = world.moto.read()                        # a reconcile pass reads moto …
    world.moto.addresses[world.eip] = "i-b"          # … the API moves the address meanwhile …
    world.sync.on_address_change(world.backend)
    world.sync.apply(stale)                          # … and the pass applies its network step
    assert who(world.eip, world.port) == "B"
    assert world.applied == [f"{world.ip_a} {world.ip_b}"]
    world.moto.views["i-c"] = view("i-c", "127.0.0.9")  # RunInstances after the pass read moto
    world.sync.apply(stale)
    assert world.applied[-1] == " ".join(sorted([world.ip_a, world.ip_b, "127.0.0.9"])), "rules follow moto now"
    world.sync.apply(stale)
    assert len(world.applied) == 2, "unchanged rules are not applied again"
    world.sync.prepare("i-c")
    assert len(world.applied) == 3, "before a container starts its rules are applied whatever the cache says"


def test_release_retargets_before_an_instance_goes(world: SimpleNamespace) -> None:
    world.moto.addresses[world.eip] = "i-a"
    world.sync.sync_eips()
    world.moto.views["i-a"] = view("i-a", world.ip_a, "stopping")  # StopInstances keeps the association
    world.sync.release({"i-a": world.ip_a})
    assert who(world.eip, world.port) == "", "a stopping instance gets no new connections"


class StuckForwarder:
    def __init__(self, ip: str, port: int) -> None:
        self.target: tuple[str, int] | None = (ip, port)

    def clear_target(self) -> None:
        self.target = None


class StuckForwarding:
    """A forwarding whose retarget fails: its forwarder still points at the old instance."""

    def __init__(self, fwd: StuckForwarder) -> None:
        self.fwd = fwd

    def apply(self, desired: dict[str, Target]) -> None:
        raise ForwardingError("Elastic IP forwarding incomplete: cannot listen")

    def forwarders(self) -> dict[tuple[str, int], StuckForwarder]:
        return {("127.9.0.1", 8080): self.fwd}

    def close(self) -> None:
        pass


def test_release_refuses_new_connections_when_the_retarget_fails() -> None:
    moto = Moto(8080, **{"i-a": "10.0.0.5", "i-b": "10.0.0.6"})
    moto.addresses["127.9.0.1"] = "i-b"
    moto.views["i-a"] = view("i-a", "10.0.0.5", "terminated")
    stuck = StuckForwarder("10.0.0.5", 8080)
    sync = NetworkSync(read=moto.read, ec2=object, running=lambda: {"i-a", "i-b"},
                       forwarding=StuckForwarding(stuck))  # type: ignore[arg-type]
    sync.release({"i-a": "10.0.0.5"})
    assert stuck.target is None


# -- the reconciler: release before stop/destroy ------------------------------------------------
class Runtime:
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events
        self.phases: dict[str, str] = {}

    def running(self, v: InstanceView) -> None:
        self.phases[v.instance_id] = "ready"

    def stopped(self, iid: str) -> None:
        self.events.append(("stop", iid))
        self.phases[iid] = "stopped"

    def gone(self, iid: str) -> None:
        self.events.append(("destroy", iid))
        self.phases.pop(iid, None)

    def phase(self, iid: str) -> str:
        return self.phases.get(iid, "absent")


def reconciler(snaps: list[Snapshot], events: list[tuple[str, Any]], fail_release: list[bool]) -> Reconciler:
    rt = Runtime(events)

    def release(leaving: dict[str, str]) -> None:
        events.append(("release", dict(leaving)))
        if fail_release and fail_release.pop(0):
            raise ForwardingError("cannot retarget")

    return Reconciler(read=lambda: snaps.pop(0) if len(snaps) > 1 else snaps[0], ensure_running=rt.running,
                      ensure_stopped=rt.stopped, ensure_gone=rt.gone, phase_of=rt.phase, release=release)


def snap(*views: InstanceView) -> Snapshot:
    return Snapshot({v.instance_id: v for v in views}, {}, {})


def test_a_pass_releases_instances_before_destroying_or_stopping_them() -> None:
    events: list[tuple[str, Any]] = []
    rec = reconciler([snap(view("i-a", "10.0.0.5"), view("i-b", "10.0.0.6")),
                      snap(view("i-a", "10.0.0.5", "terminated"), view("i-b", "10.0.0.6", "stopped")),
                      snap(view("i-a", "10.0.0.5", "terminated"), view("i-b", "10.0.0.6", "stopped"))],
                     events, [])
    rec.run_once()
    assert events == [], "nothing leaves while everything runs"
    rec.run_once()
    assert events[0] == ("release", {"i-a": "10.0.0.5", "i-b": "10.0.0.6"})
    assert sorted(events[1:]) == [("destroy", "i-a"), ("stop", "i-b")]
    rec.run_once()
    assert len(events) == 3, "an instance already destroyed or stopped is neither released nor acted on again"


def test_a_failed_release_keeps_the_containers_until_a_later_pass() -> None:
    events: list[tuple[str, Any]] = []
    rec = reconciler([snap(view("i-a", "10.0.0.5")), snap(view("i-a", "10.0.0.5", "terminated"))],
                     events, [True, False])
    rec.run_once()
    rec.run_once()
    assert events == [("release", {"i-a": "10.0.0.5"})], "release failed: the container stays"
    rec.run_once()
    assert events[1:] == [("release", {"i-a": "10.0.0.5"}), ("destroy", "i-a")]


def test_an_instance_moto_forgot_is_released_with_its_last_address() -> None:
    events: list[tuple[str, Any]] = []
    rec = reconciler([snap(view("i-a", "10.0.0.5")), snap()], events, [])
    rec.run_once()
    rec.run_once()
    assert events == [("release", {"i-a": "10.0.0.5"}), ("destroy", "i-a")]


# -- patches/eip_events: one report per outermost change ----------------------------------------
class FakeBackend:
    """moto's shape: a move disassociates internally; release disassociates first."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def associate_address(self, fail: bool = False) -> None:
        self.disassociate_address()
        self.calls.append("associate")
        if fail:
            raise RuntimeError("moto refused")

    def disassociate_address(self) -> None:
        self.calls.append("disassociate")

    def release_address(self) -> None:
        self.disassociate_address()
        self.calls.append("release")


def test_listeners_hear_each_outermost_change_once() -> None:
    cls = type("Wrapped", (FakeBackend,), {name: eip_events._reporting(getattr(FakeBackend, name))
                                           for name in ("associate_address", "disassociate_address",
                                                        "release_address")})
    backend = cls()
    heard: list[list[str]] = []

    def listener(b: Any) -> None:
        heard.append(list(b.calls))

    def broken(b: Any) -> None:
        raise RuntimeError("a broken listener must not fail the API call")

    eip_events.add_listener(broken)
    eip_events.add_listener(listener)
    try:
        backend.associate_address()
        backend.disassociate_address()
        backend.release_address()
        with pytest.raises(RuntimeError, match="moto refused"):
            backend.associate_address(fail=True)
    finally:
        eip_events.remove_listener(listener)
        eip_events.remove_listener(broken)
    assert [h[-1] for h in heard] == ["associate", "disassociate", "release", "associate"]
    assert heard[0] == ["disassociate", "associate"], "a move is reported once, after it completed"
    backend.disassociate_address()
    assert len(heard) == 4, "a removed listener hears nothing"
