"""An instance that cannot start says why and is given up after a few attempts, while another
instance of the same RunInstances boots and answers SSH (issue 9: "scale without surprises").

The failure is made deterministic with the test-only hook PHOENIXCI_TEST_FAIL_START (launches.py):
the daemon kills PID 1 of the instance whose private IP is the subnet's .5 right after systemd
started, as systemd exits at start when the host runs out of inotify instances. moto hands out a
fresh subnet's addresses in order (.4, .5, … after AWS's reserved ones), so of the two instances
of one RunInstances exactly one is hit.
"""
from __future__ import annotations

import ipaddress
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudkit import (
    PHOENIXCI,
    Cloud,
    Network,
    free_subnet,
    make_network,
    require_root,
    running_cloud,
    ssh_host,
    terminate,
)

from phoenixci.localcloud.launches import TEST_HOOK, StartPolicy
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

ATTEMPTS = StartPolicy().attempts


def starts(console: str) -> int:
    """The starts the hook saw: one line each in the console (not those quoted in the reason)."""
    return sum(line.startswith(f"phoenixci test hook {TEST_HOOK}") for line in console.splitlines())


@pytest.fixture(scope="module")
def cidr() -> str:
    return free_subnet()


def bad_ip(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr).network_address + 5)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, cidr: str) -> Iterator[Cloud]:
    require_root()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TEST_HOOK, " " + re.escape(bad_ip(cidr)) + "$")  # the daemon inherits it from `cloud start`
        with running_cloud(tmp_path_factory.mktemp("cloud") / "state") as c:
            mp.delenv(TEST_HOOK)
            yield c


@pytest.fixture(scope="module")
def net(cloud: Cloud, ssh_key: Path, cidr: str) -> Network:
    return make_network(cloud, ssh_key, ports=(22,), cidr=cidr)


def test_a_failed_start_is_reported_bounded_and_stalls_nobody(cloud: Cloud, net: Network) -> None:
    hit_ip = bad_ip(net.cidr)
    t0 = time.monotonic()
    out = cloud.aws("ec2", "run-instances", "--image-id", cloud.image_id, "--count", "2",
                    "--instance-type", "t3.micro", "--key-name", net.key_name, "--subnet-id", net.subnet_id,
                    "--security-group-ids", net.group_id)
    by_ip = {i["PrivateIpAddress"]: i["InstanceId"] for i in out["Instances"]}
    ids = list(by_ip.values())
    try:
        assert hit_ip in by_ip, f"moto did not give {hit_ip} to either instance: {sorted(by_ip)}"
        bad = by_ip.pop(hit_ip)
        (good_ip, good), = by_ip.items()
        host = ssh_host(cloud, good, good_ip, net.key_file)  # the other one boots and answers SSH
        assert host.run("cloud-init status --wait").rc == 0

        def terminated() -> dict:
            inst = cloud.aws("ec2", "describe-instances", "--instance-ids", bad)["Reservations"][0]["Instances"][0]
            return dict(inst) if inst["State"]["Name"] == "terminated" else {}
        inst = wait_until(terminated, timeout=30, interval=0.5, what=f"{bad} terminated after failed starts")
        assert inst["StateReason"]["Code"] == "Server.InternalError"
        assert inst["StateReason"]["Message"].startswith("Server.InternalError: Internal error on launch (")
        assert inst["StateTransitionReason"] == inst["StateReason"]["Message"]

        # status.json is rewritten every second: it may still show the state before the API's
        def reported() -> dict:
            status = cloud.instance_status(bad)
            return status if status["state"] == "terminated" else {}
        status = wait_until(reported, timeout=5, interval=0.2, what=f"{bad} terminated in the cloud's status")
        # how it ended (unshare reports the SIGKILL of its child as status 1), then the last console lines
        assert re.match(rf"failed to start {ATTEMPTS} times, last: the container (exited with status \d+|was "
                        r"killed by \w+) before the instance was ready; console: .*" + TEST_HOOK, status["error"])
        assert cloud.instance_status(good)["error"] is None

        console = cloud.aws("ec2", "get-console-output", "--instance-id", bad).get("Output", "")
        assert starts(console) == ATTEMPTS, console
        assert "phoenixci: instance failed to start: failed to start" in console

        time.sleep(3)  # not retried afterwards: nothing more starts, and nothing of it is left
        again = cloud.aws("ec2", "get-console-output", "--instance-id", bad).get("Output", "")
        assert starts(again) == ATTEMPTS
        assert bad not in cloud.runtime.list()
        log = (cloud.state_dir / "cloud.log").read_text()
        assert log.count(f"instance {bad}: giving up") == 1
        assert time.monotonic() - t0 < 60
    finally:
        terminate(cloud, *ids)


def test_status_names_the_kernel_limits(cloud: Cloud) -> None:
    """Root on this machine: the limits were raised at start (logged), so status has nothing to ask."""
    log = (cloud.state_dir / "cloud.log").read_text()
    for key in ("fs.inotify.max_user_instances", "fs.inotify.max_user_watches"):
        value = int(Path("/proc/sys", *key.split(".")).read_text())
        assert value >= {"fs.inotify.max_user_instances": 8192}.get(key, 524288), (key, value)
    assert cloud.status().get("limits") is None, log[-2000:]
    proc = subprocess.run([PHOENIXCI, "cloud", "status", "--state-dir", str(cloud.state_dir)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert "kernel limits too low" not in proc.stdout
