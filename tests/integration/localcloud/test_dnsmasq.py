"""A bridge's dnsmasq holds an instance's lease before the instance starts (real dnsmasq on a
bridge this test makes and removes): ``start`` returns once dnsmasq has read its hosts file and
``set_host`` once it has re-read it, so no instance's first DHCP request meets a dnsmasq that
does not know it yet (what made a boot take 50-120 s now and then)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudkit import free_subnet, require_root

from phoenixci.localcloud import cgroups, netlink
from phoenixci.localcloud.dnsmasq import Dnsmasq
from phoenixci.localcloud.netlink import NetError

pytestmark = pytest.mark.integration


def reads(dq: Dnsmasq) -> int:
    """How often dnsmasq's own log says it read the hosts file."""
    return sum(line.endswith(f": read {dq.hosts}") for line in dq.logfile.read_text().splitlines())


@pytest.fixture
def bridge() -> Iterator[tuple[str, str]]:
    require_root()
    name, cidr = f"phxdq{uuid.uuid4().hex[:8]}", free_subnet()
    netlink.ensure_bridge(name, cidr)
    try:
        yield name, cidr
    finally:
        netlink.delete_link(name)
    assert name not in netlink.link_names()


@pytest.fixture
def cgroup() -> Iterator[Path]:
    path = cgroups.create(f"phxdq-{uuid.uuid4().hex[:8]}")
    try:
        yield path
    finally:
        cgroups.remove(path)  # kills the dnsmasq in it
    assert not path.exists()


def test_start_returns_with_the_hosts_file_read_and_each_lease_confirmed(
        bridge: tuple[str, str], cgroup: Path, tmp_path: Path) -> None:
    name, cidr = bridge
    dq = Dnsmasq(name, cidr, tmp_path / "dq")
    dq.start(cgroup / "cgroup.procs")
    pid = dq.pid()
    assert pid is not None and pid in cgroups.pids(cgroup)
    assert reads(dq) == 1, dq.logfile.read_text()
    prefix = cidr.rsplit(".", 1)[0]
    for n in range(1, 6):  # each call returns only after dnsmasq's own log says it re-read the file
        dq.set_host(f"02:00:00:00:00:{n:02x}", f"{prefix}.{n + 3}")
        assert reads(dq) == 1 + n
    assert dq.hosts.read_text().splitlines() == [f"02:00:00:00:00:{n:02x},{prefix}.{n + 3}" for n in range(1, 6)]
    dq.set_host("02:00:00:00:00:03", None)
    assert "02:00:00:00:00:03," not in dq.hosts.read_text()
    dq.start(cgroup / "cgroup.procs")  # idempotent: the running one stays
    assert dq.pid() == pid


def test_a_dnsmasq_that_cannot_start_says_why(cgroup: Path, tmp_path: Path) -> None:
    require_root()
    missing = f"phxdq{uuid.uuid4().hex[:8]}"  # no such interface: dnsmasq exits at once
    dq = Dnsmasq(missing, free_subnet(), tmp_path / "dq")
    with pytest.raises(NetError, match=rf"dnsmasq for bridge {missing} exited at start with status \d+: .*{missing}"):
        dq.start(cgroup / "cgroup.procs")
    assert dq.pid() is None


def test_a_lease_for_a_bridge_without_dnsmasq_is_refused(bridge: tuple[str, str], tmp_path: Path) -> None:
    name, cidr = bridge
    dq = Dnsmasq(name, cidr, tmp_path / "dq")
    dq.state.mkdir(parents=True)
    with pytest.raises(NetError, match=rf"dnsmasq for bridge {name} is not running .* would get no DHCP lease"):
        dq.set_host("02:00:00:00:00:01", cidr.rsplit(".", 1)[0] + ".4")
    assert os.path.exists(dq.hosts)
