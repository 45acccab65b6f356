"""Several clouds on one machine: no collisions, overlapping subnets refused, one daemon per state
dir, and a ``kill -9`` of a daemon swept by the next ``cloud start`` (then ``cloud stop`` leaves
nothing — checked by ``running_cloud``'s teardown).
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudkit import (
    Cloud,
    attach,
    cloud_start,
    free_subnet,
    leftovers,
    make_network,
    processes_in_cgroups,
    require_root,
    run_instance,
    running,
    running_cloud,
    ssh_host,
    wait_no_leftovers,
)

from phoenixci.localcloud import daemon, netlink
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

USER_DATA = "#!/bin/bash\necho ran > /var/tmp/user-data-ran\n"


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cloud, Cloud]]:
    require_root()
    base = tmp_path_factory.mktemp("clouds")
    with running_cloud(base / "one") as one, running_cloud(base / "two") as two:
        yield one, two


def test_two_clouds_run_side_by_side(clouds: tuple[Cloud, Cloud], ssh_key: Path) -> None:
    one, two = clouds
    assert one.tag != two.tag
    assert one.env["AWS_ENDPOINT_URL"] != two.env["AWS_ENDPOINT_URL"]
    net1 = make_network(one, ssh_key)
    net2 = make_network(two, ssh_key, cidr=free_subnet(avoid=(net1.cidr,)))  # one's bridge is not up yet
    i1 = run_instance(one, net1, USER_DATA)
    i2 = run_instance(two, net2, USER_DATA)
    for cloud, inst in ((one, i1), (two, i2)):
        host = ssh_host(cloud, inst["InstanceId"], inst["PrivateIpAddress"], ssh_key)
        cloud.wait_phase(inst["InstanceId"], "ready")
        assert host.file("/var/tmp/user-data-ran").exists
    s1, s2 = one.status(), two.status()
    assert s1["subnets"][net1.cidr]["bridge"].startswith(one.tag)
    assert s2["subnets"][net2.cidr]["bridge"].startswith(two.tag)
    assert s1["subnets"][net1.cidr]["api_url"] != s2["subnets"][net2.cidr]["api_url"]
    # each cloud's API knows only its own instances
    ids1 = {i["InstanceId"] for r in one.aws("ec2", "describe-instances")["Reservations"] for i in r["Instances"]}
    assert i1["InstanceId"] in ids1 and i2["InstanceId"] not in ids1


def test_subnet_overlapping_another_clouds_is_refused(clouds: tuple[Cloud, Cloud], ssh_key: Path) -> None:
    one, two = clouds
    busy = next(iter(one.status()["subnets"]))  # cloud one has a running instance there
    net = make_network(two, ssh_key, cidr=busy)
    inst = run_instance(two, net, USER_DATA)
    iid = inst["InstanceId"]
    status = wait_until(lambda: (s if (s := two.instance_status(iid)).get("error") else {}), timeout=15,
                        what=f"cloud two reports an error for {iid}")
    assert "overlaps" in status["error"] and busy in status["error"], status
    assert status["boot_phase"] == "absent"
    assert two.runtime.netns(iid) not in netlink.netns_names()
    assert busy not in two.status()["subnets"]
    two.aws("ec2", "terminate-instances", "--instance-ids", iid)


def test_second_start_on_a_running_state_dir_is_refused(clouds: tuple[Cloud, Cloud]) -> None:
    one, _ = clouds
    pid = one.pid()
    proc = cloud_start(one.state_dir)
    assert proc.returncode != 0
    assert "already runs" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert daemon.running_pid(one.state_dir) == pid  # the running one is untouched
    assert one.aws("sts", "get-caller-identity")["Account"]


def test_kill_9_then_start_sweeps_the_killed_run(tmp_path: Path, ssh_key: Path) -> None:
    require_root()
    state = tmp_path / "killed"
    with running_cloud(state) as cloud:
        net = make_network(cloud, ssh_key)
        inst = run_instance(cloud, net, USER_DATA)
        ssh_host(cloud, inst["InstanceId"], inst["PrivateIpAddress"], ssh_key)
        old = processes_in_cgroups(cloud.tag)
        assert old, "the instance and dnsmasq run in the cloud's cgroups"

        pid = cloud.pid()
        assert daemon.running_pid(cloud.state_dir) == pid  # it is that cloud's daemon, nothing else
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what=f"daemon {pid} gone")
        orphans = leftovers(cloud.tag, cloud.state_dir)
        assert any(o.startswith("netns") for o in orphans) and any(o.startswith("process") for o in orphans)

        proc = cloud_start(cloud.state_dir)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        restarted = attach(cloud.state_dir, cloud.home)
        assert wait_no_leftovers(cloud.tag, cloud.state_dir) == []  # the new daemon swept all of the old run
        assert not [p for p in old if running(p)]  # the old instance's processes were killed
        assert restarted.aws("ec2", "describe-instances")["Reservations"] == []
    # running_cloud's teardown: `cloud stop` on the restarted daemon, then no leftovers
