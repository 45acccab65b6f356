"""A network ACL made through the EC2 API is enforced at the subnet boundary of a real instance.

On the session's local cloud (``phoenix_backend``, admin credentials): a VPC and subnet of their
own, a security group open on 8080 and 8081, and an instance whose user data serves both. With
the subnet's ACL denying TCP 8080 as rule 100 and allowing everything as rule 200, the host
(the internet) reaches 8081 but not 8080; with an egress rule allowing only HTTPS the server's
replies (to the host's ephemeral port) are dropped — ACLs are stateless — until an egress rule
allows ephemeral ports. Back on the default ACL both ports answer. Everything is tagged with the
module's run id and removed; the session's leak checks look for leftovers on the host too.
(Instances of different subnets have no route to each other on the local cloud, so "another
subnet" is the host; the chains between subnets are in tests/unit/test_nacls.py.)
"""
from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from phoenixci import leaks
from phoenixci.localcloud.addressing import free_vpc_cidr
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

#: instance address → the bridge of its subnet (the only way probes may go)
LAB_BRIDGE: dict[str, str] = {}
USER_DATA = """#cloud-config
runcmd:
  - [systemd-run, --unit=web-8080, /usr/bin/python3, -m, http.server, "8080", --directory, /tmp]
  - [systemd-run, --unit=web-8081, /usr/bin/python3, -m, http.server, "8081", --directory, /tmp]
"""


@dataclass
class Lab:
    ec2: Any
    run_id: str
    vpc: str
    subnet: str
    acl: str
    default_acl: str
    association: str
    ip: str = ""
    instance: str = ""


def routed_via(ip: str) -> str:
    """The interface the host sends ``ip``'s packets through."""
    words = subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True, text=True, check=True,
                           timeout=10).stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else ""


def opens(ip: str, port: int, timeout: float = 1.0) -> bool:
    """A TCP connection from the host (the internet) to ip:port — only ever over the lab's bridge:
    before the cloud made it, a VPC address would be routed off the machine."""
    assert routed_via(ip) == LAB_BRIDGE[ip], f"{ip} is not routed via its subnet's bridge"
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def entry(lab: Lab, number: int, egress: bool, action: str, protocol: str = "-1",
          ports: tuple[int, int] | None = None, *, replace: bool = False) -> None:
    args: dict[str, Any] = {"NetworkAclId": lab.acl, "RuleNumber": number, "Protocol": protocol,
                            "RuleAction": action, "Egress": egress, "CidrBlock": "0.0.0.0/0"}
    if ports:
        args["PortRange"] = {"From": ports[0], "To": ports[1]}
    (lab.ec2.replace_network_acl_entry if replace else lab.ec2.create_network_acl_entry)(**args)


@pytest.fixture(scope="module")
def lab(phoenix_backend: Any) -> Iterator[Lab]:
    if getattr(phoenix_backend, "cloud", None) is None:
        pytest.skip("needs the in-process local cloud (moto://) with real instances")
    ec2 = phoenix_backend.client("ec2")
    run_id = "naclc-" + uuid.uuid4().hex[:8]
    tags = [{"Key": "phoenixci:run-id", "Value": run_id}]
    net = ipaddress.ip_network(free_vpc_cidr(run_id))
    vpc = ec2.create_vpc(CidrBlock=str(net), TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}])["Vpc"]["VpcId"]
    lab: Lab | None = None
    try:
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=str(next(net.subnets(new_prefix=24))),
                                   AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=f"{run_id}-web", Description="web", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8081, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        [default] = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
            "NetworkAcls"]
        acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
        lab = Lab(ec2, run_id, vpc, subnet, acl, default["NetworkAclId"],
                  default["Associations"][0]["NetworkAclAssociationId"])
        entry(lab, 100, False, "deny", "6", (8080, 8080))
        entry(lab, 200, False, "allow")
        entry(lab, 100, True, "allow")
        lab.association = ec2.replace_network_acl_association(AssociationId=lab.association,
                                                              NetworkAclId=acl)["NewAssociationId"]
        inst = ec2.run_instances(ImageId=phoenix_backend.image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 SubnetId=subnet, SecurityGroupIds=[group], UserData=USER_DATA,
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]
        lab.instance, lab.ip = inst["InstanceId"], inst["PrivateIpAddress"]
        cidr = str(next(net.subnets(new_prefix=24)))
        LAB_BRIDGE[lab.ip] = wait_until(lambda: phoenix_backend.local_subnet(cidr).get("bridge"), timeout=60,
                                        what=f"the cloud's bridge for {cidr}")
        wait_until(lambda: routed_via(lab.ip) == LAB_BRIDGE[lab.ip], timeout=10, what="the route to the subnet")
        wait_until(lambda: opens(lab.ip, 8081), timeout=90, interval=0.5, what=f"{lab.ip}:8081 serving")
        yield lab
    finally:
        _teardown(ec2, vpc, lab)
    assert leaks.leftovers(phoenix_backend, run_id) == []


def _teardown(ec2: Any, vpc: str, lab: Lab | None) -> None:
    if lab is not None and lab.instance:
        ec2.terminate_instances(InstanceIds=[lab.instance])
        wait_until(lambda: ec2.describe_instances(InstanceIds=[lab.instance])["Reservations"][0]["Instances"][0]
                   ["State"]["Name"] == "terminated", timeout=60, what="the instance terminated")
    acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkAcls"]
    default = next(a["NetworkAclId"] for a in acls if a["IsDefault"])
    for acl in (a for a in acls if not a["IsDefault"]):
        for assoc in acl["Associations"]:
            ec2.replace_network_acl_association(AssociationId=assoc["NetworkAclAssociationId"], NetworkAclId=default)
        ec2.delete_network_acl(NetworkAclId=acl["NetworkAclId"])
    for group in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]:
        if group["GroupName"] != "default":
            ec2.delete_security_group(GroupId=group["GroupId"])
    for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]:
        with contextlib.suppress(ClientError):
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vpc)


def test_a_denied_port_is_closed_while_another_answers(lab: Lab) -> None:
    assert opens(lab.ip, 8081)
    assert not opens(lab.ip, 8080), "rule 100 denies TCP 8080 before rule 200 allows everything"


def test_replies_need_an_egress_rule(lab: Lab) -> None:
    entry(lab, 100, True, "allow", "6", (443, 443), replace=True)  # egress: HTTPS only
    wait_until(lambda: not opens(lab.ip, 8081, 0.5), timeout=15, what="8081's replies dropped by the egress rules")
    entry(lab, 110, True, "allow", "6", (1024, 65535))  # and replies to ephemeral ports
    wait_until(lambda: opens(lab.ip, 8081), timeout=15, what="8081 answering again")
    assert not opens(lab.ip, 8080)


def test_back_on_the_default_acl_everything_answers(lab: Lab) -> None:
    lab.association = lab.ec2.replace_network_acl_association(AssociationId=lab.association,
                                                              NetworkAclId=lab.default_acl)["NewAssociationId"]
    wait_until(lambda: opens(lab.ip, 8080), timeout=15, what="8080 answering on the default ACL")
    assert opens(lab.ip, 8081)
