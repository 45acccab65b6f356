"""A template written for AWS by someone else runs on the local cloud unchanged but for its AMI id,
and what it describes is what exists (issue 8).

``templates/foreign-webapp.yaml`` is shaped like a typical AWS workshop lab: a VPC with a public
subnet pinned to us-east-1a, an Internet gateway and route, a network ACL with its entries, a
security group, an IAM role with inline ``Policies`` plus an ``AWS::IAM::Policy`` attached by
``Roles``, an instance profile, a web server whose user data serves HTTP, an Elastic IP attached
by ``InstanceId`` and a bucket with a fixed name. It is deployed on the session's local cloud
(``phoenix_backend``) with only ``LatestAmiId`` given; every resource is then checked through
the describe calls, the site is fetched through the Elastic IP, the role's permissions are used
as the instance would use them, and after DeleteStack nothing it made is left.
"""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from phoenixci import leaks, stacks
from phoenixci.templates import load_template
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parent / "templates" / "foreign-webapp.yaml"
BUCKET = "lab3-webapp-assets-us-east-1"
REGION = "us-east-1"


@dataclass
class Deployed:
    backend: Any
    run_id: str
    name: str
    stack: stacks.Stack
    resources: dict[str, str]  # logical id → physical id
    types: dict[str, str]

    def client(self, service: str) -> Any:
        return self.backend.client(service)


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def _denied(call: Any) -> bool:
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"] in ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException")
    return False


@pytest.fixture(scope="module")
def deployed(phoenix_backend: Any) -> Iterator[Deployed]:
    if not phoenix_backend.runs_instances:
        pytest.skip("needs a local cloud with instances")
    run_id = "foreign-" + uuid.uuid4().hex[:8]
    name = f"lab3-{run_id}"
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    stack = stacks.create(cfn, s3, name, load_template(TEMPLATE), {"LatestAmiId": str(phoenix_backend.image_id)},
                          run_id=run_id)
    listed = cfn.describe_stack_resources(StackName=name)["StackResources"]
    try:
        yield Deployed(phoenix_backend, run_id, name, stack,
                       {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in listed},
                       {r["LogicalResourceId"]: r["ResourceType"] for r in listed})
    finally:
        if stacks.describe(cfn, name) is not None:
            stacks.delete(cfn, s3, name)


def test_every_resource_is_listed(deployed: Deployed) -> None:
    template = load_template(TEMPLATE).document
    assert template is not None
    assert deployed.types == {k: v["Type"] for k, v in template["Resources"].items()}
    assert all(deployed.resources.values()), deployed.resources
    out = deployed.stack.outputs
    assert out["PublicIP"] == deployed.resources["WebServerEIP"]
    assert out["WebsiteURL"] == f"http://{out['PublicIP']}"
    assert out["AssetsBucketName"] == BUCKET


def test_the_network_is_as_described(deployed: Deployed) -> None:
    ec2, r = deployed.client("ec2"), deployed.resources
    [vpc] = ec2.describe_vpcs(VpcIds=[r["VPC"]])["Vpcs"]
    assert vpc["CidrBlock"] == "10.192.0.0/16" and _tags(vpc)["Name"] == "Lab3 VPC"
    for attr, key in (("enableDnsSupport", "EnableDnsSupport"), ("enableDnsHostnames", "EnableDnsHostnames")):
        assert ec2.describe_vpc_attribute(VpcId=r["VPC"], Attribute=attr)[key]["Value"] is True
    [subnet] = ec2.describe_subnets(SubnetIds=[r["PublicSubnet"]])["Subnets"]
    assert (subnet["VpcId"], subnet["CidrBlock"], subnet["AvailabilityZone"]) == \
        (r["VPC"], "10.192.10.0/24", "us-east-1a")
    [igw] = ec2.describe_internet_gateways(InternetGatewayIds=[r["InternetGateway"]])["InternetGateways"]
    assert [a["VpcId"] for a in igw["Attachments"]] == [r["VPC"]]
    [table] = ec2.describe_route_tables(RouteTableIds=[r["PublicRouteTable"]])["RouteTables"]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": r["InternetGateway"]}.items() <= \
        next(x for x in table["Routes"] if x.get("DestinationCidrBlock") == "0.0.0.0/0").items()
    assert [a["SubnetId"] for a in table["Associations"] if a.get("SubnetId")] == [r["PublicSubnet"]]

    [acl] = ec2.describe_network_acls(NetworkAclIds=[r["PublicNetworkAcl"]])["NetworkAcls"]
    assert [a["SubnetId"] for a in acl["Associations"]] == [r["PublicSubnet"]]
    assert acl["Associations"][0]["NetworkAclAssociationId"] == r["PublicSubnetNetworkAclAssociation"]
    got = {(e["RuleNumber"], e["Egress"], e["RuleAction"], e["Protocol"], e["CidrBlock"],
            e.get("PortRange", {}).get("From"), e.get("PortRange", {}).get("To")) for e in acl["Entries"]}
    assert got == {(100, False, "allow", "6", "0.0.0.0/0", 80, 80), (101, False, "allow", "6", "0.0.0.0/0", 22, 22),
                   (102, False, "allow", "6", "0.0.0.0/0", 1024, 65535),
                   (100, True, "allow", "6", "0.0.0.0/0", 80, 80), (101, True, "allow", "6", "0.0.0.0/0", 443, 443),
                   (102, True, "allow", "6", "0.0.0.0/0", 1024, 65535),
                   (32767, False, "deny", "-1", "0.0.0.0/0", None, None),
                   (32767, True, "deny", "-1", "0.0.0.0/0", None, None)}

    [group] = ec2.describe_security_groups(GroupIds=[r["WebServerSecurityGroup"]])["SecurityGroups"]
    assert group["VpcId"] == r["VPC"]
    assert {(p["IpProtocol"], p["FromPort"], p["ToPort"], tuple(x["CidrIp"] for x in p["IpRanges"]))
            for p in group["IpPermissions"]} == {("tcp", 80, 80, ("0.0.0.0/0",)), ("tcp", 22, 22, ("0.0.0.0/0",))}


def test_the_subnet_maps_public_addresses_on_launch(deployed: Deployed) -> None:
    [subnet] = deployed.client("ec2").describe_subnets(SubnetIds=[deployed.resources["PublicSubnet"]])["Subnets"]
    assert subnet["MapPublicIpOnLaunch"] is True


def test_the_server_role_and_bucket_are_as_described(deployed: Deployed) -> None:
    ec2, iam, s3, r = deployed.client("ec2"), deployed.client("iam"), deployed.client("s3"), deployed.resources
    [inst] = ec2.describe_instances(InstanceIds=[r["WebServerInstance"]])["Reservations"][0]["Instances"]
    assert inst["ImageId"] == deployed.backend.image_id and inst["InstanceType"] == "t3.micro"
    assert inst["SubnetId"] == r["PublicSubnet"] and inst["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [r["WebServerSecurityGroup"]]
    assert _tags(inst)["Name"] == "Lab3 WebServer"
    profile = iam.get_instance_profile(InstanceProfileName=r["WebServerInstanceProfile"])["InstanceProfile"]
    assert inst["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert [x["RoleName"] for x in profile["Roles"]] == [r["WebServerRole"]]
    user_data = base64.b64decode(ec2.describe_instance_attribute(
        InstanceId=r["WebServerInstance"], Attribute="userData")["UserData"]["Value"]).decode()
    assert user_data.startswith("#!/bin/bash -xe\n") and f"Hello from {deployed.name} in {REGION}" in user_data

    [eip] = ec2.describe_addresses(PublicIps=[r["WebServerEIP"]])["Addresses"]
    assert (eip["Domain"], eip["InstanceId"]) == ("vpc", r["WebServerInstance"])
    assert inst["PublicIpAddress"] == r["WebServerEIP"]

    role = iam.get_role(RoleName=r["WebServerRole"])["Role"]
    assert role["Arn"] == deployed.stack.outputs["WebServerRoleArn"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": ["ec2.amazonaws.com"]}
    assert sorted(iam.list_role_policies(RoleName=r["WebServerRole"])["PolicyNames"]) == ["AssetsAccess", "DescribeEC2"]
    inline = iam.get_role_policy(RoleName=r["WebServerRole"], PolicyName="AssetsAccess")["PolicyDocument"]
    assert isinstance(inline, dict), "the inline policy must be stored as a JSON document"
    assert inline["Version"] == "2012-10-17"
    assert inline["Statement"][0]["Resource"] == f"arn:aws:s3:::{BUCKET}/*"
    assert inline["Statement"][1] == {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"}

    assert r["AssetsBucket"] == BUCKET
    assert BUCKET in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}["Project"] == "Lab3"


def test_the_site_serves_through_the_elastic_ip(deployed: Deployed) -> None:
    url = deployed.stack.outputs["WebsiteURL"] + "/"

    def page() -> str:
        reply = requests.get(url, timeout=2)
        return reply.text if reply.status_code == 200 else ""

    text = wait_until(page, timeout=90, interval=0.5, what=f"{url} serving the lab's page")
    assert f"<h1>Hello from {deployed.name} in {REGION}</h1>" in text


def test_the_role_can_do_what_its_policies_allow_and_nothing_else(deployed: Deployed) -> None:
    backend, r = deployed.backend, deployed.resources
    session = backend.instance_role_session(deployed.stack.outputs["WebServerRoleArn"])
    s3, ec2, iam = (backend.client(s, session) for s in ("s3", "ec2", "iam"))
    s3.put_object(Bucket=BUCKET, Key="img/logo.txt", Body=b"logo")  # inline Policies
    assert s3.get_object(Bucket=BUCKET, Key="img/logo.txt")["Body"].read() == b"logo"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["img/logo.txt"]
    assert ec2.describe_instances(InstanceIds=[r["WebServerInstance"]])["Reservations"]  # AWS::IAM::Policy
    assert _denied(lambda: s3.delete_object(Bucket=BUCKET, Key="img/logo.txt"))
    assert _denied(lambda: s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Statement": []})))
    assert _denied(lambda: ec2.terminate_instances(InstanceIds=[r["WebServerInstance"]]))
    assert _denied(lambda: iam.list_users())


def test_deleting_the_stack_leaves_nothing(deployed: Deployed) -> None:
    ec2, iam, s3, r = deployed.client("ec2"), deployed.client("iam"), deployed.client("s3"), deployed.resources
    stacks.delete(deployed.client("cloudformation"), s3, deployed.name)  # empties the bucket first
    assert stacks.describe(deployed.client("cloudformation"), deployed.name) is None
    assert not [v for v in ec2.describe_vpcs()["Vpcs"] if v["VpcId"] == r["VPC"]]
    assert not ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [r["VPC"]]}])["Subnets"]
    assert not ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [r["VPC"]]}])["NetworkAcls"]
    assert not ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [r["VPC"]]}])["RouteTables"]
    assert r["InternetGateway"] not in {g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]}
    assert r["WebServerSecurityGroup"] not in {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert r["WebServerEIP"] not in {a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]}
    [inst] = ec2.describe_instances(InstanceIds=[r["WebServerInstance"]])["Reservations"][0]["Instances"]
    assert inst["State"]["Name"] in ("shutting-down", "terminated")
    assert r["WebServerRole"] not in {x["RoleName"] for x in iam.list_roles()["Roles"]}
    assert r["WebServerInstanceProfile"] not in {
        p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    assert BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert f"{deployed.name}-VpcId" not in {e["Name"] for e in deployed.client("cloudformation").list_exports()["Exports"]}
    assert leaks.leftovers(deployed.backend, deployed.run_id) == []
