"""Every resource of infra/infrastructure.yaml exists with the properties asked for.

Checked through the API, resource by resource: moto ignores some template properties
silently, so the stack reaching CREATE_COMPLETE proves little on its own.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from phoenixci.harness import Infrastructure
from phoenixci.localcloud.patches._conditions import parse_operator

pytestmark = pytest.mark.integration

DEFAULT_VPC_CIDR = "10.42.0.0/16"


@pytest.fixture(scope="module")
def vpc_cidr(scratch_infra: Infrastructure) -> str:
    """The template's default, unless the harness picked a free range on this machine."""
    return scratch_infra.stack.parameters.get("VpcCidr") or DEFAULT_VPC_CIDR


def _policy_actions(document: dict[str, Any]) -> list[str]:
    actions: list[str] = []
    for statement in document["Statement"]:
        value = statement.get("Action", [])
        actions += [value] if isinstance(value, str) else list(value)
    return actions


def _doc(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


@pytest.fixture(scope="module")
def ec2(phoenix_backend: Any) -> Any:
    return phoenix_backend.client("ec2")


@pytest.fixture(scope="module")
def iam(phoenix_backend: Any) -> Any:
    return phoenix_backend.client("iam")


@pytest.fixture(scope="module")
def s3(phoenix_backend: Any) -> Any:
    return phoenix_backend.client("s3")


def test_network(scratch_infra: Infrastructure, ec2: Any, vpc_cidr: str) -> None:
    out = scratch_infra.stack.outputs
    vpc = ec2.describe_vpcs(VpcIds=[out["VpcId"]])["Vpcs"][0]
    assert vpc["CidrBlock"] == vpc_cidr
    subnet = ec2.describe_subnets(SubnetIds=[out["SubnetId"]])["Subnets"][0]
    assert subnet["VpcId"] == out["VpcId"]
    assert ipaddress.ip_network(subnet["CidrBlock"]).subnet_of(ipaddress.ip_network(vpc_cidr))
    igws = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [out["VpcId"]]}])["InternetGateways"]
    assert len(igws) == 1
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": [out["SubnetId"]]}])["RouteTables"]
    assert len(tables) == 1
    default = [r for r in tables[0]["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert default and default[0]["GatewayId"] == igws[0]["InternetGatewayId"]


def _ingress(ec2: Any, group_id: str) -> set[tuple[int, str]]:
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    rules = set()
    for perm in group["IpPermissions"]:
        assert perm["FromPort"] == perm["ToPort"], f"port ranges are not wanted: {perm}"
        for r in perm.get("IpRanges", []):
            rules.add((perm["FromPort"], r["CidrIp"]))
        for g in perm.get("UserIdGroupPairs", []):
            rules.add((perm["FromPort"], g["GroupId"]))
    return rules


def test_security_groups(scratch_infra: Infrastructure, ec2: Any, vpc_cidr: str) -> None:
    out = scratch_infra.stack.outputs
    admin = scratch_infra.stack.parameters["AdminCidr"]
    agent = out["CiAgentSecurityGroupId"]
    # the CI server: SSH and the web UI for the admin; git fetch and the worker port for the agent only
    assert _ingress(ec2, out["CiSecurityGroupId"]) == {(22, admin), (8010, admin), (22, agent), (9989, agent)}
    # the agent accepts nothing but the admin's SSH (its worker connects out to the master)
    assert _ingress(ec2, agent) == {(22, admin)}
    assert _ingress(ec2, out["AppSecurityGroupId"]) == {(8080, "0.0.0.0/0"), (22, vpc_cidr)}


def test_artifact_bucket(scratch_infra: Infrastructure, s3: Any) -> None:
    bucket = scratch_infra.stack.outputs["ArtifactBucket"]
    assert bucket.startswith(f"phoenixci-{scratch_infra.run_id}".lower()), "no fixed global name"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                     "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    tls = [st for st in policy["Statement"] if st["Effect"] == "Deny"
           and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)]
    assert tls, f"no TLS-only deny statement in {policy}"
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags["phoenixci:run-id"] == scratch_infra.run_id


def _role_name(arn: str) -> str:
    return arn.rsplit("/", 1)[1]


@pytest.mark.parametrize("output", ["AppRoleArn", "AgentRoleArn", "CiServerRoleArn"])
def test_roles_trust_only_ec2_and_have_no_wildcard_actions(scratch_infra: Infrastructure, iam: Any,
                                                           output: str) -> None:
    name = _role_name(scratch_infra.stack.outputs[output])
    role = iam.get_role(RoleName=name)["Role"]
    trust = _doc(role["AssumeRolePolicyDocument"])
    principals = [st["Principal"] for st in trust["Statement"]]
    assert principals == [{"Service": "ec2.amazonaws.com"}]
    for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        doc = _doc(iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"])
        for action in _policy_actions(doc):
            assert "*" not in action, f"{name}/{policy_name} grants wildcard action {action}"
        for st in doc["Statement"]:  # conditions are evaluated locally: only operators IAM defines
            for operator in st.get("Condition", {}):
                parse_operator(operator)
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []


def test_app_role_reads_only_app_objects(scratch_infra: Infrastructure, iam: Any) -> None:
    out = scratch_infra.stack.outputs
    name = _role_name(out["AppRoleArn"])
    statements = []
    for policy_name in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        statements += _doc(iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"])[
            "Statement"]
    def as_list(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    assert [(st["Effect"], as_list(st["Action"]), as_list(st["Resource"])) for st in statements] == [
        ("Allow", ["s3:GetObject"], [f"{out['ArtifactBucketArn']}/app/*"])]


def test_instance_profiles_hold_their_roles(scratch_infra: Infrastructure, iam: Any) -> None:
    out = scratch_infra.stack.outputs
    for profile, role in (("AppInstanceProfile", "AppRoleArn"), ("AgentInstanceProfile", "AgentRoleArn")):
        roles = iam.get_instance_profile(InstanceProfileName=out[profile])["InstanceProfile"]["Roles"]
        assert [r["Arn"] for r in roles] == [out[role]]


def test_ci_instances(scratch_infra: Infrastructure, ec2: Any, iam: Any) -> None:
    out = scratch_infra.stack.outputs
    for key, profile, group in (("CiServerInstanceId", None, "CiSecurityGroupId"),
                                ("CiAgentInstanceId", "AgentInstanceProfile", "CiAgentSecurityGroupId")):
        inst = ec2.describe_instances(InstanceIds=[out[key]])["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] == "running"
        assert inst["SubnetId"] == out["SubnetId"]
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [out[group]]
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert inst["MetadataOptions"]["HttpEndpoint"] == "enabled"
        assert inst["KeyName"] == scratch_infra.key.name
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["phoenixci:run-id"] == scratch_infra.run_id
        if profile:
            assert inst["IamInstanceProfile"]["Arn"].endswith("/" + out[profile])
    agent = ec2.describe_instances(InstanceIds=[out["CiAgentInstanceId"]])["Reservations"][0]["Instances"][0]
    assert agent["PrivateIpAddress"] == out["CiAgentPrivateIp"]


def test_elastic_ips(scratch_infra: Infrastructure, ec2: Any) -> None:
    out = scratch_infra.stack.outputs
    by_ip = {a["PublicIp"]: a for a in ec2.describe_addresses()["Addresses"]}
    ci = by_ip[out["CiServerPublicIp"]]
    assert ci["InstanceId"] == out["CiServerInstanceId"]
    app = by_ip[out["AppPublicIp"]]
    assert app["AllocationId"] == out["AppEipAllocationId"]
    assert app["Domain"] == "vpc"
    assert not app.get("InstanceId"), "the app address is moved by deploy, not by the template"
    assert ci["PublicIp"] != app["PublicIp"]


def test_no_key_pair_resource_in_the_stack(scratch_infra: Infrastructure) -> None:
    types = {r["ResourceType"] for r in scratch_infra.stack.resources}
    assert "AWS::EC2::KeyPair" not in types
    assert {"AWS::EC2::VPC", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::IAM::Role",
            "AWS::EC2::Instance", "AWS::EC2::EIP"} <= types
