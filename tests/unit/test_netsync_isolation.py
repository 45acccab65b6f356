"""The network step of a pass: one failure (nft refuses, an instance vanished) stops nothing else."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from phoenixci.localcloud import hostsg, netsync
from phoenixci.localcloud.eip import ApplyResult
from phoenixci.localcloud.netsync import NetworkSync
from phoenixci.localcloud.snapshot import InstanceView, Snapshot

pytestmark = pytest.mark.unit


def _view(iid: str, ip: str, state: str = "running") -> InstanceView:
    return InstanceView(iid, state, ip, "subnet-1", "10.0.0.0/24", "02:00:00:00:00:01", ())


class Forwarding:
    def __init__(self) -> None:
        self.applied = 0

    def apply(self, desired: dict) -> ApplyResult:
        self.applied += 1
        return ApplyResult()

    def close(self) -> None:
        pass


def make(snap: Snapshot, present: set[str]) -> tuple[NetworkSync, Forwarding]:
    runtime = SimpleNamespace(tag="phxabc", veth=lambda iid: "phxabcv" + iid[2:6])
    links = hostsg.CloudLinks(runtime, {"10.0.0.0/24": SimpleNamespace(name="phxabcb12345", gateway_ip="10.0.0.1")},
                              {}, services=())
    fwd = Forwarding()
    return NetworkSync(read=lambda: snap, ec2=lambda: None, running=lambda: present, links=links,
                       forwarding=fwd), fwd  # type: ignore[arg-type]


def test_refused_rules_do_not_stop_the_elastic_ips(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def refuse(tag: str, script: str) -> None:
        raise RuntimeError("nft: Error: Could not process rule")
    monkeypatch.setattr(netsync.hostsg, "apply", refuse)
    sync, fwd = make(Snapshot({"i-a": _view("i-a", "10.0.0.5")}, {}, {}), {"i-a"})
    sync.apply(Snapshot({}, {}, {}))
    assert fwd.applied == 1 and "security groups not applied this pass" in caplog.text


def test_a_vanished_instance_is_left_out_of_the_next_render(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts: list[str] = []
    monkeypatch.setattr(netsync.hostsg, "apply", lambda tag, script: scripts.append(script))
    snap = Snapshot({"i-a": _view("i-a", "10.0.0.5"), "i-b": _view("i-b", "10.0.0.6", "terminated")}, {}, {})
    present = {"i-a", "i-b"}
    sync, _ = make(snap, present)
    sync.apply(snap)
    present.discard("i-b")  # its container, namespace and veth went between two passes
    sync.apply(snap)
    assert "phxabcvb" in scripts[0] and "phxabcvb" not in scripts[1] and "phxabcva" in scripts[1]
