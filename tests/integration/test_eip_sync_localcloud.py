"""On the local cloud an Elastic IP's data plane follows the API before the API call returns.

Two real instances serve their own name on port 8080 (user data). Through the API (admin, as
any client would): AssociateAddress, a move without AllowReassociation, DisassociateAddress and
TerminateInstances of the holder — and right after each call returns, a new connection to the
Elastic IP (a 127.x listener on the host) lands where the API says, and later reconcile passes
do not undo it.
"""
from __future__ import annotations

import contextlib
import http.client
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from phoenixci.harness import Infrastructure
from phoenixci.localcloud.patches import eip_events
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

PORT = 8080
USER_DATA = """#cloud-config
write_files:
  - path: /srv/www/name
    content: "{name}"
runcmd:
  - [systemd-run, --unit=name-web, /usr/bin/python3, -m, http.server, "{port}", --directory, /srv/www]
"""


def name_at(ip: str, timeout: float = 3.0) -> str:
    """GET /name on a new connection; "refused" when nothing accepts (or the forwarder resets)."""
    conn = http.client.HTTPConnection(ip, PORT, timeout=timeout)
    try:
        conn.request("GET", "/name")
        return conn.getresponse().read().decode().strip()
    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
        return "refused"
    finally:
        conn.close()


@pytest.fixture
def servers(phoenix_backend: Any, scratch_infra: Infrastructure) -> Iterator[dict[str, Any]]:
    cloud = getattr(phoenix_backend, "cloud", None)
    if cloud is None:
        pytest.skip("needs the in-process local cloud (moto://) with real instances")
    ec2 = phoenix_backend.client("ec2")
    outputs = scratch_infra.stack.outputs
    tags = [{"Key": "phoenixci:run-id", "Value": scratch_infra.run_id}]
    undo: list[Callable[[], Any]] = []
    found: dict[str, Any] = {"ec2": ec2, "cloud": cloud}
    try:
        alloc = ec2.allocate_address(Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip",
                                                                     "Tags": tags}])
        undo.append(lambda: ec2.release_address(AllocationId=alloc["AllocationId"]))
        found.update(eip=alloc["PublicIp"], alloc=alloc["AllocationId"])
        for name in ("A", "B"):
            inst = ec2.run_instances(
                ImageId=cloud.image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                SubnetId=outputs["SubnetId"], SecurityGroupIds=[outputs["AppSecurityGroupId"]],
                UserData=USER_DATA.format(name=name, port=PORT),
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]
            undo.append(lambda iid=inst["InstanceId"]: ec2.terminate_instances(InstanceIds=[iid]))
            found[name] = inst["InstanceId"]
            found[f"ip_{name}"] = inst["PrivateIpAddress"]
        for name in ("A", "B"):
            ip = found[f"ip_{name}"]
            wait_until(lambda ip=ip, name=name: name_at(ip, 1.0) == name, timeout=90, interval=0.3,
                       what=f"instance {name} to serve its name on {ip}:{PORT}")
        yield found
    finally:
        for step in reversed(undo):
            with contextlib.suppress(ClientError):
                step()
        for iid in (found[k] for k in ("A", "B") if k in found):
            wait_until(lambda iid=iid: iid not in cloud.runtime.list(), timeout=60,
                       what=f"{iid}'s container to be destroyed")


def test_the_data_plane_follows_each_api_call_before_it_returns(servers: dict[str, Any]) -> None:
    ec2, cloud, eip, alloc = servers["ec2"], servers["cloud"], servers["eip"], servers["alloc"]
    assert name_at(eip) == "refused", "an unassociated Elastic IP accepts nothing"

    ec2.associate_address(AllocationId=alloc, InstanceId=servers["A"])
    assert name_at(eip) == "A"

    heard: list[Any] = []
    eip_events.add_listener(heard.append)
    try:
        ec2.associate_address(AllocationId=alloc, InstanceId=servers["B"])  # a move (reassociation by default)
    finally:
        eip_events.remove_listener(heard.append)
    assert name_at(eip) == "B"
    assert len(heard) == 1, "a move is one change: never detached half-way"

    passes = cloud.reconciler.passes
    wait_until(lambda: cloud.reconciler.passes >= passes + 3, timeout=30, what="three reconcile passes")
    assert name_at(eip) == "B", "reconcile passes keep what the API said"

    association = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]["AssociationId"]
    ec2.disassociate_address(AssociationId=association)
    assert name_at(eip) == "refused"

    ec2.associate_address(AllocationId=alloc, InstanceId=servers["A"])
    assert name_at(eip) == "A"
    ec2.terminate_instances(InstanceIds=[servers["A"]])
    assert name_at(eip) == "refused", "terminating the holder disassociates at once"
    assert not ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0].get("InstanceId")
    assert name_at(servers["ip_B"]) == "B"
