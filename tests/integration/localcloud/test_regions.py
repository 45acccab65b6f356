"""A local cloud in another region, as a workshop's user meets it: ``phoenixci cloud start --region
eu-west-1``, the env file and the ``aws`` CLI, then SSH.

One eu-west-1 daemon serves the module (its teardown stops it and checks nothing is left). Its status
is complete the moment ``cloud start`` returns; an instance boots and knows its region, zone and
hostname; a zone of another region is refused with EC2's error, by CreateSubnet and in a stack; a call
for another region gets the answer of an account with that Region not enabled.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudkit import (
    IMDS,
    TOKEN,
    AwsCliError,
    Cloud,
    Network,
    make_network,
    port_open,
    remote,
    require_root,
    run_instance,
    running_cloud,
    ssh_host,
    terminate,
    unique,
)

from phoenixci.localcloud import pkgsources
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

REGION, ZONE = "eu-west-1", "eu-west-1a"
EU_ZONES = "eu-west-1a, eu-west-1b, eu-west-1c"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_root()
    with running_cloud(tmp_path_factory.mktemp("cloud") / "state", "--region", REGION) as c:
        yield c


def test_status_is_complete_right_after_start(cloud: Cloud) -> None:
    """What a script reads the moment `cloud start` returned, and what `cloud status --json` prints."""
    for status in (cloud.started_status, cloud.status()):
        assert status["running"] is True
        assert status["region"] == REGION
        assert status["image_id"] == cloud.image_id and status["image_id"].startswith("ami-")
        assert status["endpoint_url"] == cloud.env["AWS_ENDPOINT_URL"]
        assert status["subnets"] == {} and status["instances"] == []
    assert cloud.env["AWS_DEFAULT_REGION"] == REGION


@pytest.fixture(scope="module")
def net(cloud: Cloud, ssh_key: Path) -> Network:
    return make_network(cloud, ssh_key, ports=(22,), zone=ZONE)


@pytest.fixture(scope="module")
def booted(cloud: Cloud, net: Network) -> Iterator[tuple[str, str, Any]]:
    inst = run_instance(cloud, net, "#!/bin/bash\necho ran > /var/tmp/user-data-ran\n",
                        "--metadata-options", "HttpTokens=required,HttpEndpoint=enabled")
    iid, ip = inst["InstanceId"], inst["PrivateIpAddress"]
    try:
        yield iid, ip, ssh_host(cloud, iid, ip, net.key_file)
    finally:
        terminate(cloud, iid)


def test_an_instance_boots_and_knows_its_region(cloud: Cloud, booted: tuple[str, str, Any]) -> None:
    iid, ip, host = booted
    wait_until(lambda: host.file("/var/tmp/user-data-ran").exists, timeout=60, interval=0.2,
               what="user data (cloud-init's last stage) to run")
    meta = {path: remote(host, f'curl -sf -H "X-aws-ec2-metadata-token: {TOKEN}" {IMDS}/{path}').stdout.strip()
            for path in ("meta-data/placement/region", "meta-data/placement/availability-zone",
                         "meta-data/local-hostname", "dynamic/instance-identity/document")}
    dashed = ip.replace(".", "-")
    assert meta["meta-data/placement/region"] == REGION
    assert meta["meta-data/placement/availability-zone"] == ZONE
    assert meta["meta-data/local-hostname"] == f"ip-{dashed}.{REGION}.compute.internal"
    document = json.loads(meta["dynamic/instance-identity/document"])
    assert (document["region"], document["availabilityZone"], document["instanceId"]) == (REGION, ZONE, iid)
    assert host.check_output("hostname") == f"ip-{dashed}"
    assert host.check_output("hostname -f") == f"ip-{dashed}.{REGION}.compute.internal"
    described = cloud.aws("ec2", "describe-instances", "--instance-ids", iid)["Reservations"][0]["Instances"][0]
    assert described["Placement"]["AvailabilityZone"] == ZONE


def test_a_subnet_in_another_regions_zone_is_refused(cloud: Cloud, net: Network) -> None:
    for zone in ("us-east-1a", "eu-west-1z"):
        with pytest.raises(AwsCliError) as refused:
            cloud.aws("ec2", "create-subnet", "--vpc-id", net.vpc_id, "--cidr-block",
                      net.cidr.rsplit(".", 2)[0] + ".250.0/24", "--availability-zone", zone)
        assert (f"(InvalidParameterValue) when calling the CreateSubnet operation: Value ({zone}) for parameter "
                f"availabilityZone is invalid. Subnets can currently only be created in the following "
                f"availability zones: {EU_ZONES}.") in refused.value.stderr


def subnet_stack(zone: Any) -> str:
    return json.dumps({"Resources": {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.77.0.0/16"}},
        "Subnet": {"Type": "AWS::EC2::Subnet", "Properties": {
            "VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.77.1.0/24", "AvailabilityZone": zone}}},
        "Outputs": {"SubnetId": {"Value": {"Ref": "Subnet"}}}})


@contextlib.contextmanager
def stack(cloud: Cloud, template: str) -> Iterator[dict[str, Any]]:
    name = unique("regions")
    body = cloud.home / f"{name}.json"
    body.write_text(template)
    cloud.aws("cloudformation", "create-stack", "--stack-name", name, "--template-body", f"file://{body}")
    try:
        yield cloud.aws("cloudformation", "describe-stacks", "--stack-name", name)["Stacks"][0]
    finally:
        cloud.aws("cloudformation", "delete-stack", "--stack-name", name)


def test_a_template_takes_its_zones_from_the_region(cloud: Cloud) -> None:
    """``!Select [0, !GetAZs '']`` is eu-west-1a here; the stack's ARN names the region."""
    with stack(cloud, subnet_stack({"Fn::Select": ["0", {"Fn::GetAZs": ""}]})) as made:
        assert made["StackStatus"] == "CREATE_COMPLETE", made
        assert made["StackId"].startswith(f"arn:aws:cloudformation:{REGION}:")
        subnet = made["Outputs"][0]["OutputValue"]
        zone = cloud.aws("ec2", "describe-subnets", "--subnet-ids", subnet)["Subnets"][0]["AvailabilityZone"]
        assert zone == ZONE


def test_a_template_pinning_another_regions_zone_fails_as_on_aws(cloud: Cloud) -> None:
    with stack(cloud, subnet_stack("us-east-1a")) as made:
        assert made["StackStatus"] == "ROLLBACK_COMPLETE", made
        events = cloud.aws("cloudformation", "describe-stack-events", "--stack-name", made["StackId"])
        failed = [e for e in events["StackEvents"] if e["ResourceStatus"] == "CREATE_FAILED"]
        assert [e["LogicalResourceId"] for e in failed] == ["Subnet"]
        assert ("Value (us-east-1a) for parameter availabilityZone is invalid. Subnets can currently only be "
                f"created in the following availability zones: {EU_ZONES}.") in failed[0]["ResourceStatusReason"]


@pytest.mark.parametrize(("call", "code"), [
    (("ec2", "run-instances", "--image-id", "IMAGE", "--count", "1", "--instance-type", "t3.micro"),
     "AuthFailure"),
    (("cloudformation", "create-stack", "--stack-name", "elsewhere", "--template-body",
      json.dumps({"Resources": {"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.78.0.0/16"}}}})),
     "InvalidClientTokenId"),
    (("ssm", "get-parameter", "--name", "/aws/service/debian/release/bookworm/latest/amd64"),
     "UnrecognizedClientException"),
])
def test_a_call_for_another_region_is_refused(cloud: Cloud, call: tuple[str, ...], code: str) -> None:
    """As an account with only eu-west-1 enabled answers, naming the cloud's region and the way to another."""
    args = tuple(cloud.image_id if a == "IMAGE" else a for a in call)
    proc = cloud.aws_raw("--region", "us-west-2", *args)
    assert proc.returncode != 0
    assert re.search(rf"\({code}\) when calling the \w+ operation: ", proc.stderr), proc.stderr
    assert f"this local cloud serves {REGION} only" in proc.stderr
    assert "phoenixci cloud start --region us-west-2" in proc.stderr
    assert cloud.aws("--region", "us-east-1", "iam", "get-user")["User"]["UserName"]  # IAM is global


def test_without_the_package_proxy_nothing_resolves(cloud: Cloud, net: Network, booted: tuple[str, str, Any]) -> None:
    """`cloud start` without --package-proxy: no DNS, nothing on the gateway's ports 53, 80 and 443."""
    _, _, host = booted
    gateway = cloud.subnet_info(net.cidr)["gateway"]
    sources = pkgsources.read_sources()
    for name in sorted(sources.http | sources.https)[:2]:
        assert remote(host, f"getent hosts {name}", timeout=15).rc != 0
    assert not host.file("/etc/resolv.conf").contains(gateway)
    for port in (80, 443):
        assert remote(host, f"curl -s -m 5 -o /dev/null http://{gateway}:{port}/", timeout=15).rc != 0
    assert cloud.status()["package_proxy"] is None


def test_a_public_subnet_gives_its_instances_a_reachable_public_address(cloud: Cloud, net: Network) -> None:
    """MapPublicIpOnLaunch: the public address comes from the local pool (never AWS's ranges) and
    answers on the ports the instance's groups open, like an Elastic IP."""
    cloud.aws("ec2", "modify-subnet-attribute", "--subnet-id", net.subnet_id, "--map-public-ip-on-launch")
    iid = ""
    try:
        iid = run_instance(cloud, net, "#!/bin/bash\ntrue\n")["InstanceId"]
        inst = cloud.aws("ec2", "describe-instances", "--instance-ids", iid)["Reservations"][0]["Instances"][0]
        public = ipaddress.ip_address(inst["PublicIpAddress"])
        assert public in ipaddress.ip_network("127.0.0.0/8") and public not in ipaddress.ip_network("127.0.0.0/24")
        host = ssh_host(cloud, iid, str(public), net.key_file)  # port 22 is open in the group
        assert host.check_output("hostname") == "ip-" + inst["PrivateIpAddress"].replace(".", "-")
        terminate(cloud, iid)
        wait_until(lambda: not port_open(str(public), 22), timeout=30, interval=0.2,
                   what=f"{public} to stop answering once {iid} is gone")
    finally:
        if iid:
            terminate(cloud, iid)
        cloud.aws("ec2", "modify-subnet-attribute", "--subnet-id", net.subnet_id, "--no-map-public-ip-on-launch")
