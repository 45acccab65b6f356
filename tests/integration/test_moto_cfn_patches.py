"""Stack deletion, AWS::S3::BucketPolicy and Elastic IP semantics of the patched moto.

Each test states the AWS behaviour a patch in ``phoenixci/localcloud/patches`` restores,
against the session's embedded AWS (``phoenix_backend``: patched, IAM enforced) with the
administrator's credentials. Names carry this module's prefix (``cfnp-``) and every test
removes what it made. The ``test_upstream_*`` tests run the same scenarios in a subprocess
WITHOUT the patches (``python tests/integration/test_moto_cfn_patches.py cfn|eip`` prints a
JSON dict of outcomes) and fail once upstream moto behaves, so the patch (or, for moto gaps
the templates avoid, the workaround in the template) can go.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from phoenixci import leaks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_world import Cleanup, remove_bucket, remove_stack  # noqa: E402  (shared helpers)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "infrastructure.yaml"
REGION = "us-east-1"
RUN_TAG = "phoenixci:run-id"
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
PREFIX = "cfnp-"

BUCKET_ONLY = """
Resources:
  Bucket:
    Type: AWS::S3::Bucket
Outputs:
  BucketName:
    Value: !Ref Bucket
"""

# A role with an inline policy, as AWS::IAM::Role Policies (patches/cfn_role_policies.py stores it as JSON).
ROLE_WITH_INLINE_POLICY = json.dumps({"Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": {
    "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
    "Policies": [{"PolicyName": "inline", "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/app/*"}]}}]}}}})


# --------------------------------------------------------------------------- helpers
def public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()


class Clients:
    def __init__(self, endpoint: str | None, creds: dict[str, str] | None = None,
                 verify: str | None = None) -> None:
        self.endpoint = endpoint
        self.verify = verify
        self.creds = creds or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        self._cache: dict[str, Any] = {}

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._cache:
            self._cache[service] = boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                                                config=NO_RETRY, verify=self.verify, **self.creds)
        return self._cache[service]

    def client(self, service: str) -> Any:
        """The same client, by name (moto_world's cleanup helpers ask for it this way)."""
        return getattr(self, service)


def image_id(aws: Clients) -> str:
    return str(aws.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def create_infra_stack(aws: Clients, run_id: str) -> dict[str, Any]:
    key_name = f"phoenixci-{run_id}"
    aws.ec2.import_key_pair(KeyName=key_name, PublicKeyMaterial=public_key().encode())
    aws.cloudformation.create_stack(
        StackName=f"phoenixci-{run_id}", TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in {
            "RunId": run_id, "AdminCidr": "127.0.0.1/32", "KeyName": key_name,
            "ImageId": image_id(aws)}.items()])
    stack = aws.cloudformation.describe_stacks(StackName=f"phoenixci-{run_id}")["Stacks"][0]
    return dict(stack)


def outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def empty_bucket(aws: Clients, bucket: str) -> None:
    for page in aws.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            aws.s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])


def error_code(call: Any) -> str | None:
    try:
        call()
    except ClientError as err:
        return str(err.response.get("Error", {}).get("Code"))
    return None


def run_instances(aws: Clients, count: int) -> list[str]:
    reply = aws.ec2.run_instances(ImageId=image_id(aws), MinCount=count, MaxCount=count,
                                  InstanceType="t3.micro")
    return [i["InstanceId"] for i in reply["Instances"]]


def instance(aws: Clients, instance_id: str) -> dict[str, Any]:
    reply = aws.ec2.describe_instances(InstanceIds=[instance_id])
    return dict(reply["Reservations"][0]["Instances"][0])


def address(aws: Clients, allocation_id: str) -> dict[str, Any]:
    return dict(aws.ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0])


def terminate(aws: Clients, instance_ids: list[str]) -> None:
    aws.ec2.terminate_instances(InstanceIds=instance_ids)


def release(aws: Clients, allocation_ids: list[str]) -> None:
    for a in aws.ec2.describe_addresses()["Addresses"]:
        if a.get("AllocationId") in allocation_ids:
            if a.get("AssociationId"):
                aws.ec2.disassociate_address(AssociationId=a["AssociationId"])
            aws.ec2.release_address(AllocationId=a["AllocationId"])


def delete_key_pair(aws: Clients, name: str) -> None:
    aws.ec2.delete_key_pair(KeyName=name)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def admin(phoenix_backend: Any) -> dict[str, str]:
    """The session's administrator (allowed everything under enforcement)."""
    creds = phoenix_backend.session.get_credentials().get_frozen_credentials()
    return {"aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key}


@pytest.fixture()
def aws(phoenix_backend: Any, admin: dict[str, str]) -> Clients:
    return Clients(str(phoenix_backend.endpoint_url), admin, verify=phoenix_backend.ca_bundle)


@pytest.fixture()
def cleanup() -> Iterator[Cleanup]:
    undo = Cleanup()
    try:
        yield undo
    finally:
        undo.run()


@pytest.fixture()
def run_id() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- stack deletion
def test_infrastructure_stack_deletes_every_resource(phoenix_backend: Any, aws: Clients, run_id: str,
                                                     cleanup: Cleanup) -> None:
    """AWS: DeleteStack removes every resource it created, in dependency order."""
    cleanup.add(delete_key_pair, aws, f"phoenixci-{run_id}")
    cleanup.add(remove_stack, aws, f"phoenixci-{run_id}")
    stack = create_infra_stack(aws, run_id)
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    out = outputs(stack)
    resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in
                 aws.cloudformation.describe_stack_resources(StackName=stack["StackId"])["StackResources"]}
    vpc_id = out["VpcId"]

    # the bucket policy of the template is on the bucket
    policy = json.loads(aws.s3.get_bucket_policy(Bucket=out["ArtifactBucket"])["Policy"])
    [deny] = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(deny["Resource"]) == {out["ArtifactBucketArn"], out["ArtifactBucketArn"] + "/*"}

    # the subnet is really associated, the IGW attached, the EIPs tagged
    tables = aws.ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    assert any(a.get("SubnetId") == out["SubnetId"] for t in tables for a in t["Associations"])
    igw_id = resources["InternetGateway"]
    assert aws.ec2.describe_internet_gateways(InternetGatewayIds=[igw_id])[
        "InternetGateways"][0]["Attachments"][0]["VpcId"] == vpc_id
    tagged_eips = aws.ec2.describe_addresses(
        Filters=[{"Name": f"tag:{RUN_TAG}", "Values": [run_id]}])["Addresses"]
    assert len(tagged_eips) == 2

    aws.s3.put_object(Bucket=out["ArtifactBucket"], Key="app/a.txt", Body=b"1")
    aws.s3.put_object(Bucket=out["ArtifactBucket"], Key="app/a.txt", Body=b"2")
    empty_bucket(aws, out["ArtifactBucket"])
    aws.cloudformation.delete_stack(StackName=stack["StackId"])
    final = aws.cloudformation.describe_stacks(StackName=stack["StackId"])["Stacks"][0]
    assert final["StackStatus"] == "DELETE_COMPLETE", final

    ec2, iam = aws.ec2, aws.iam
    # nothing tagged with the run id remains, except terminated instances (AWS lists them a while)
    left = ec2.describe_tags(Filters=[{"Name": "key", "Values": [RUN_TAG]},
                                      {"Name": "value", "Values": [run_id]}])["Tags"]
    for tag in left:
        assert tag["ResourceType"] == "instance", tag
        assert instance(aws, tag["ResourceId"])["State"]["Name"] == "terminated"
    assert vpc_id not in {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    assert not [s for s in ec2.describe_subnets()["Subnets"] if s["VpcId"] == vpc_id]
    assert not ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    assert not [r for t in ec2.describe_route_tables()["RouteTables"] for r in t["Routes"]
                if r.get("GatewayId") == igw_id]
    assert igw_id not in {g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]}
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert out["CiSecurityGroupId"] not in groups and out["AppSecurityGroupId"] not in groups
    assert not [g for g in groups.values() if g.get("VpcId") == vpc_id]
    for eni in ec2.describe_network_interfaces()["NetworkInterfaces"]:
        if eni["SubnetId"] == out["SubnetId"] or eni["VpcId"] == vpc_id:
            owner = eni.get("Attachment", {}).get("InstanceId")
            assert owner and instance(aws, owner)["State"]["Name"] == "terminated", eni
    for logical_id in ("CiServer", "CiAgent"):
        assert instance(aws, resources[logical_id])["State"]["Name"] == "terminated"
    assert not {e["AllocationId"] for e in tagged_eips} & {
        e.get("AllocationId") for e in ec2.describe_addresses()["Addresses"]}
    assert not {resources["CiServerEip"], resources["AppEip"]} & {
        e["PublicIp"] for e in ec2.describe_addresses()["Addresses"]}
    assert resources["CiLaunchTemplate"] not in {
        t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]}
    role_names = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert not {resources[r] for r in ("AppRole", "AgentRole", "CiServerRole")} & role_names
    profiles = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    assert not {resources[p] for p in ("AppInstanceProfile", "AgentInstanceProfile",
                                       "CiServerInstanceProfile")} & profiles
    assert out["ArtifactBucket"] not in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}
    aws.ec2.delete_key_pair(KeyName=f"phoenixci-{run_id}")
    assert leaks.leftovers(phoenix_backend, run_id) == []


def test_failed_resource_deletion_ends_delete_failed_and_can_be_retried(aws: Clients, run_id: str,
                                                                       cleanup: Cleanup) -> None:
    """AWS: a resource that cannot be deleted -> DELETE_FAILED naming it; the stack stays."""
    name = f"bucket-{run_id}"
    cleanup.add(remove_stack, aws, name)
    stack_id = aws.cloudformation.create_stack(StackName=name, TemplateBody=BUCKET_ONLY)["StackId"]
    bucket = outputs(aws.cloudformation.describe_stacks(StackName=name)["Stacks"][0])["BucketName"]
    aws.s3.put_object(Bucket=bucket, Key="left-behind", Body=b"x")

    aws.cloudformation.delete_stack(StackName=name)  # the call itself succeeds, as in AWS
    stack = aws.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "DELETE_FAILED"
    assert "[Bucket]" in stack.get("StackStatusReason", ""), stack
    events = aws.cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    failed = [e for e in events if e["LogicalResourceId"] == "Bucket"
              and e["ResourceStatus"] == "DELETE_FAILED"]
    assert failed and "not empty" in failed[0]["ResourceStatusReason"]
    assert bucket in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}

    empty_bucket(aws, bucket)
    aws.cloudformation.delete_stack(StackName=name)
    assert aws.cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"] == \
        "DELETE_COMPLETE"
    assert bucket not in {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}


def tls_only_policy(bucket: str) -> str:
    arn = f"arn:aws:s3:::{bucket}"
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


def test_bucket_policy_conditions_are_evaluated(aws: Clients, run_id: str, cleanup: Cleanup) -> None:
    """AWS: a conditional Deny applies only when its condition holds; a plain Deny denies."""
    from phoenixci.localcloud.patches.cfn_bucket_policy import bucket_permission

    bucket = f"policy-{run_id}"
    cleanup.add(remove_bucket, aws, bucket)
    aws.s3.create_bucket(Bucket=bucket)
    policy = json.loads(tls_only_policy(bucket))
    policy["Statement"].append({"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                "Resource": f"arn:aws:s3:::{bucket}/blocked/*"})
    aws.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    aws.s3.put_object(Bucket=bucket, Key="open/a", Body=b"a")  # local transport counts as TLS
    assert aws.s3.get_object(Bucket=bucket, Key="open/a")["Body"].read() == b"a"
    assert error_code(lambda: aws.s3.put_object(Bucket=bucket, Key="blocked/a", Body=b"a")) in \
        {"403", "AccessDenied"}
    insecure = bucket_permission(json.dumps(policy), "s3:GetObject", f"arn:aws:s3:::{bucket}/open/a",
                                 {"aws:SecureTransport": "false"})
    assert insecure.name == "DENIED"
    aws.s3.delete_object(Bucket=bucket, Key="open/a")
    aws.s3.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------------- Elastic IPs
def test_terminating_an_instance_disassociates_its_address(aws: Clients, cleanup: Cleanup) -> None:
    """AWS: TerminateInstances disassociates the instance's Elastic IP (still allocated)."""
    [iid] = run_instances(aws, 1)
    cleanup.add(terminate, aws, [iid])
    alloc = aws.ec2.allocate_address(Domain="vpc")["AllocationId"]
    cleanup.add(release, aws, [alloc])
    aws.ec2.associate_address(InstanceId=iid, AllocationId=alloc)
    assert address(aws, alloc).get("InstanceId") == iid
    aws.ec2.terminate_instances(InstanceIds=[iid])
    after = address(aws, alloc)
    assert not after.get("InstanceId") and not after.get("AssociationId"), after
    aws.ec2.release_address(AllocationId=alloc)


def test_associating_an_associated_address_moves_it(aws: Clients, cleanup: Cleanup) -> None:
    """AWS (VPC): reassociation is the default; the old instance loses the public IP."""
    old, new = run_instances(aws, 2)
    cleanup.add(terminate, aws, [old, new])
    eip = aws.ec2.allocate_address(Domain="vpc")
    cleanup.add(release, aws, [eip["AllocationId"]])
    aws.ec2.associate_address(InstanceId=old, AllocationId=eip["AllocationId"])
    assert instance(aws, old).get("PublicIpAddress") == eip["PublicIp"]

    aws.ec2.associate_address(InstanceId=new, AllocationId=eip["AllocationId"])
    assert address(aws, eip["AllocationId"])["InstanceId"] == new
    assert instance(aws, new).get("PublicIpAddress") == eip["PublicIp"]
    assert instance(aws, old).get("PublicIpAddress") != eip["PublicIp"]

    # AllowReassociation=false still refuses, as in AWS
    assert error_code(lambda: aws.ec2.associate_address(
        InstanceId=old, AllocationId=eip["AllocationId"], AllowReassociation=False)) == \
        "Resource.AlreadyAssociated"
    aws.ec2.terminate_instances(InstanceIds=[old, new])
    aws.ec2.release_address(AllocationId=eip["AllocationId"])


def test_allocated_addresses_are_unique_loopback_addresses(aws: Clients, cleanup: Cleanup) -> None:
    """AWS: no two allocated Elastic IPs share an address (ours: 127/8 minus 127.0.0.0/24)."""
    from moto.moto_api._internal import mock_random

    allocations: list[dict[str, Any]] = []
    cleanup.add(lambda: release(aws, [a["AllocationId"] for a in allocations]))
    allocations += [aws.ec2.allocate_address(Domain="vpc") for _ in range(200)]
    cleanup.add(mock_random.seed)  # back to an unpredictable sequence for everyone after us
    for _ in range(2):  # moto's own generator repeats itself once seeded alike
        mock_random.seed(7)
        allocations.append(aws.ec2.allocate_address(Domain="vpc"))
    ips = [ipaddress.IPv4Address(a["PublicIp"]) for a in allocations]
    assert len(set(ips)) == len(ips)
    for ip in ips:
        assert ip in ipaddress.IPv4Network("127.0.0.0/8")
        assert ip not in ipaddress.IPv4Network("127.0.0.0/24")
        assert ip != ipaddress.IPv4Address("127.255.255.255")
    for a in allocations:
        aws.ec2.release_address(AllocationId=a["AllocationId"])


# --------------------------------------------------------------------------- upstream probes
def _probe(kind: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([sys.executable, __file__, kind], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def upstream_cfn() -> dict[str, Any]:
    return _probe("cfn")


@pytest.fixture(scope="module")
def upstream_eip() -> dict[str, Any]:
    return _probe("eip")


def test_upstream_moto_still_needs_cfn_delete(upstream_cfn: dict[str, Any]) -> None:
    assert upstream_cfn["delete_error"] or upstream_cfn["leftovers"] \
        or upstream_cfn["nonempty_bucket_status"] != "DELETE_FAILED", \
        "upstream moto fixed ordered CloudFormation stack deletion: remove patches/cfn_delete.py"


def test_upstream_moto_still_needs_cfn_bucket_policy(upstream_cfn: dict[str, Any]) -> None:
    assert not upstream_cfn["bucket_policy"], \
        "upstream moto fixed AWS::S3::BucketPolicy in CloudFormation: remove patches/cfn_bucket_policy.py"


def test_upstream_moto_still_ignores_bool_conditions(upstream_cfn: dict[str, Any]) -> None:
    assert upstream_cfn["tls_policy_denies_all"], \
        "upstream moto fixed Bool conditions in bucket policies: remove FakeBucket.get_permission " \
        "from patches/cfn_bucket_policy.py"


@pytest.mark.parametrize("fact", ["instance_security_group_ids_ignored",
                                  "instance_launch_template_metadata_ignored"])
def test_upstream_moto_still_needs_cfn_instance(upstream_cfn: dict[str, Any], fact: str) -> None:
    assert upstream_cfn[fact], \
        f"upstream moto fixed CloudFormation instance {fact!r}: remove patches/cfn_instance.py " \
        "(that part of it)"


@pytest.mark.parametrize("fact", ["bucket_versioning_ignored", "bucket_public_access_block_ignored"])
def test_upstream_moto_still_needs_cfn_bucket(upstream_cfn: dict[str, Any], fact: str) -> None:
    assert upstream_cfn[fact], \
        f"upstream moto fixed CloudFormation bucket {fact!r}: remove patches/cfn_bucket.py (that part of it)"


def test_upstream_moto_still_stores_role_inline_policies_as_repr(upstream_cfn: dict[str, Any]) -> None:
    assert upstream_cfn["role_inline_policy_not_json"], \
        "upstream moto fixed AWS::IAM::Role inline Policies (Role.create_from_cloudformation_json " \
        "stored the document as a Python dict repr, which moto's IAM auth cannot parse): remove " \
        "patches/cfn_role_policies.py"


@pytest.mark.parametrize("fact", ["terminate_keeps_association", "move_refused_by_default",
                                  "old_instance_keeps_ip", "seeded_duplicate"])
def test_upstream_moto_still_needs_eip_semantics(upstream_eip: dict[str, Any], fact: str) -> None:
    assert upstream_eip[fact], \
        f"upstream moto fixed Elastic IP {fact!r}: remove patches/eip_semantics.py (that part of it)"


# --------------------------------------------------------------------------- the probe script
def _probe_cfn(aws: Clients) -> dict[str, Any]:
    run_id = "probe"
    stack = create_infra_stack(aws, run_id)
    out = outputs(stack)
    ci_server = instance(aws, out["CiServerInstanceId"])
    groups_ignored = [g["GroupId"] for g in ci_server.get("SecurityGroups", [])] != [out["CiSecurityGroupId"]]
    metadata_ignored = ci_server.get("MetadataOptions", {}).get("HttpTokens") != "required"
    bucket_policy = error_code(lambda: aws.s3.get_bucket_policy(Bucket=out["ArtifactBucket"])) is None
    versioning_ignored = aws.s3.get_bucket_versioning(Bucket=out["ArtifactBucket"]).get("Status") != "Enabled"
    public_block_ignored = error_code(
        lambda: aws.s3.get_public_access_block(Bucket=out["ArtifactBucket"])) is not None
    delete_error = error_code(lambda: aws.cloudformation.delete_stack(StackName=stack["StackId"]))
    vpc_id = out["VpcId"]
    leftovers = (
        [t["RouteTableId"] for t in aws.ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]]
        + [g["InternetGatewayId"] for g in aws.ec2.describe_internet_gateways()["InternetGateways"]]
        + [a["PublicIp"] for a in aws.ec2.describe_addresses()["Addresses"]]
        + [v["VpcId"] for v in aws.ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]])
    aws.cloudformation.create_stack(StackName="nonempty", TemplateBody=BUCKET_ONLY)
    bucket = outputs(aws.cloudformation.describe_stacks(StackName="nonempty")["Stacks"][0])["BucketName"]
    aws.s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    aws.cloudformation.delete_stack(StackName="nonempty")
    summaries = aws.cloudformation.list_stacks()["StackSummaries"]
    status = next((s["StackStatus"] for s in summaries if s["StackName"] == "nonempty"), "MISSING")
    aws.s3.create_bucket(Bucket="tls-only")
    aws.s3.put_bucket_policy(Bucket="tls-only", Policy=tls_only_policy("tls-only"))
    denied = error_code(lambda: aws.s3.put_object(Bucket="tls-only", Key="k", Body=b"x")) is not None
    aws.cloudformation.create_stack(StackName="inline-policy", TemplateBody=ROLE_WITH_INLINE_POLICY,
                                    Capabilities=["CAPABILITY_IAM"])
    [role] = aws.cloudformation.describe_stack_resources(StackName="inline-policy")["StackResources"]
    document = aws.iam.get_role_policy(RoleName=role["PhysicalResourceId"], PolicyName="inline")[
        "PolicyDocument"]
    return {"bucket_policy": bucket_policy, "delete_error": delete_error, "leftovers": leftovers,
            "nonempty_bucket_status": status, "tls_policy_denies_all": denied,
            "instance_security_group_ids_ignored": groups_ignored,
            "instance_launch_template_metadata_ignored": metadata_ignored,
            "role_inline_policy_not_json": not isinstance(document, dict),
            "bucket_versioning_ignored": versioning_ignored,
            "bucket_public_access_block_ignored": public_block_ignored}


def _probe_eip(aws: Clients) -> dict[str, Any]:
    from moto.moto_api._internal import mock_random

    a, b = run_instances(aws, 2)
    eip = aws.ec2.allocate_address(Domain="vpc")
    aws.ec2.associate_address(InstanceId=a, AllocationId=eip["AllocationId"])
    move_error = error_code(lambda: aws.ec2.associate_address(InstanceId=b, AllocationId=eip["AllocationId"]))
    aws.ec2.associate_address(InstanceId=b, AllocationId=eip["AllocationId"], AllowReassociation=True)
    old_keeps = instance(aws, a).get("PublicIpAddress") == eip["PublicIp"]
    aws.ec2.terminate_instances(InstanceIds=[b])
    keeps = address(aws, eip["AllocationId"]).get("InstanceId") == b
    ips = []
    for _ in range(2):
        mock_random.seed(7)
        ips.append(aws.ec2.allocate_address(Domain="vpc")["PublicIp"])
    return {"terminate_keeps_association": keeps,
            "move_refused_by_default": move_error == "Resource.AlreadyAssociated",
            "old_instance_keeps_ip": old_keeps, "seeded_duplicate": ips[0] == ips[1]}


def main(kind: str) -> None:
    """Run one scenario on plain moto (no phoenixci patches) and print the outcomes as JSON."""
    import logging
    import warnings

    from moto import mock_aws

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        os.environ[key] = value
    assert "phoenixci.localcloud.patches" not in sys.modules
    with mock_aws():
        result = {"cfn": _probe_cfn, "eip": _probe_eip}[kind](Clients(None))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
