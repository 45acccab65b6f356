"""Both CloudFormation templates create (and delete) cleanly on the session's embedded AWS.

Proves: parameters, intrinsic functions, GetAtt attributes and Outputs work in the emulator;
the app stack accepts the infrastructure stack's outputs; the app server's user data is a
cloud-config that carries the exact artifact fetcher; deleting both stacks leaves nothing behind.

Runs on ``phoenix_backend`` (IAM enforced) with the administrator's credentials; every name
carries this module's prefix (``tmpl-``) and the test removes what it made. The moto gaps the
local cloud's patches close are proven by the upstream probes (a subprocess with plain moto)
in test_moto_cfn_patches.py; the resource-by-resource checks of the infrastructure stack are in
test_infrastructure.py and not repeated here.
"""
from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from phoenixci import leaks, stacks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
REGION = "us-east-1"
PREFIX = "tmpl-"
# Its own revision, so its app stack never meets another module's app-<rev> stack.
REVISION = uuid.uuid4().hex + "7e4b1a7e"
SHA256 = "ab" * 32
# A public key only (no private key exists anywhere); moto checks the format.
PUBLIC_KEY = (b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8ZcJf2zv7wYtqkS0V5q4x6l0wqJ9vJtL2c0P0Qm6Hk "
              b"phoenixci-test")

INFRA_OUTPUTS = {
    "VpcId", "SubnetId", "ArtifactBucket", "ArtifactBucketArn", "CiSecurityGroupId", "CiAgentSecurityGroupId",
    "AppSecurityGroupId", "AppRoleArn", "AppRoleName", "AppInstanceProfile", "AgentRoleArn",
    "AgentRoleName", "AgentInstanceProfile", "CiServerRoleArn", "CiServerInstanceId",
    "CiServerPrivateIp", "CiServerPublicIp", "CiAgentInstanceId", "CiAgentPrivateIp",
    "AppEipAllocationId", "AppPublicIp",
}
FETCHER = "/usr/local/lib/phoenixapp/fetch_artifact.py"
BOOTSTRAP = "/usr/local/lib/phoenixapp/bootstrap.sh"
UNIT = "/usr/local/lib/phoenixapp/phoenixapp.service"


class Aws:
    """Admin clients on the session's embedded AWS, plus this test's key pair and an AMI id."""

    def __init__(self, backend: Any) -> None:
        self.run_id = PREFIX + uuid.uuid4().hex[:8]
        self.key_name = "phoenixci-" + self.run_id
        self.backend = backend
        self.ec2 = backend.client("ec2")
        self.cfn = backend.client("cloudformation")
        self.s3 = backend.client("s3")
        self.iam = backend.client("iam")
        self.image_id = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def infra_params(self) -> dict[str, str]:
        return {"RunId": self.run_id, "AdminCidr": "127.0.0.1/32", "KeyName": self.key_name,
                "ImageId": self.image_id}


@pytest.fixture
def aws(phoenix_backend: Any) -> Iterator[Aws]:
    aws = Aws(phoenix_backend)
    aws.ec2.import_key_pair(KeyName=aws.key_name, PublicKeyMaterial=PUBLIC_KEY)
    try:
        yield aws
    finally:
        aws.ec2.delete_key_pair(KeyName=aws.key_name)


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _status(cfn: Any, stack_id: str) -> str:
    """Status by stack id: as on AWS, a deleted stack is not found by its name."""
    return str(cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"])


@contextlib.contextmanager
def created_stack(cfn: Any, name: str, template: str, params: dict[str, str],
                  before_delete: Callable[[dict[str, str]], None] | None = None,
                  ) -> Iterator[dict[str, Any]]:
    cfn.create_stack(StackName=name, TemplateBody=(INFRA / template).read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                 for k, v in params.items()],
                     Capabilities=["CAPABILITY_IAM"],
                     Tags=[{"Key": "phoenixci:run-id", "Value": params["RunId"]}])
    try:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        yield stack
    finally:
        try:
            if before_delete:
                before_delete(_outputs(cfn.describe_stacks(StackName=name)["Stacks"][0]))
        finally:
            cfn.delete_stack(StackName=name)


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    return dict(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
                ["Instances"][0])


def _check_infrastructure(aws: Aws, out: dict[str, str]) -> None:
    """What the stack's outputs promise; the resources themselves: test_infrastructure.py."""
    assert set(out) == INFRA_OUTPUTS
    assert all(out.values()), out
    bucket = out["ArtifactBucket"]
    assert out["ArtifactBucketArn"] == f"arn:aws:s3:::{bucket}"
    enc = aws.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert out["AppEipAllocationId"].startswith("eipalloc-")
    assert len(aws.ec2.describe_launch_templates(Filters=[
        {"Name": "tag:phoenixci:run-id", "Values": [aws.run_id]}])["LaunchTemplates"]) == 1
    for key in ("CiServerInstanceId", "CiAgentInstanceId"):
        assert _instance(aws.ec2, out[key])["ImageId"] == aws.image_id

    role = aws.iam.get_role(RoleName=out["AgentRoleName"])["Role"]
    assert role["Arn"] == out["AgentRoleArn"]
    (policy_name,) = aws.iam.list_role_policies(RoleName=out["AgentRoleName"])["PolicyNames"]
    doc = aws.iam.get_role_policy(RoleName=out["AgentRoleName"],
                                  PolicyName=policy_name)["PolicyDocument"]
    assert isinstance(doc, dict), "policy must be stored as JSON (moto's IAM auth parses it)"
    statements = {s["Sid"]: s for s in doc["Statement"]}
    assert statements["MoveAppAddress"]["Resource"][0].endswith(
        f":elastic-ip/{out['AppEipAllocationId']}")
    assert statements["PassAppRole"]["Resource"] == out["AppRoleArn"]


def _app_params(aws: Aws, out: dict[str, str]) -> dict[str, str]:
    return {
        "Revision": REVISION, "RunId": aws.run_id, "ArtifactBucket": out["ArtifactBucket"],
        "ArtifactKey": f"app/{REVISION}/app-{REVISION}.tar.gz", "ArtifactSha256": SHA256,
        "ImageId": aws.image_id, "KeyName": aws.key_name, "SubnetId": out["SubnetId"],
        "SecurityGroupId": out["AppSecurityGroupId"],
        "InstanceProfile": out["AppInstanceProfile"],
        "AwsEndpointUrl": "http://10.42.1.1:5000",
    }


def _check_app_server(aws: Aws, out: dict[str, str], app_out: dict[str, str]) -> None:
    assert set(app_out) == {"InstanceId", "PrivateIp", "Revision"}
    assert app_out["Revision"] == REVISION
    inst = _instance(aws.ec2, app_out["InstanceId"])
    tags = _tags(inst)
    assert tags["Name"] == f"app-{REVISION}"
    assert tags["phoenixci:revision"] == REVISION
    assert tags["phoenixci:run-id"] == aws.run_id
    assert inst["PrivateIpAddress"] == app_out["PrivateIp"]
    assert inst["SubnetId"] == out["SubnetId"]
    assert inst["IamInstanceProfile"]["Arn"].endswith("/" + out["AppInstanceProfile"])
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [out["AppSecurityGroupId"]]
    assert inst["MetadataOptions"]["HttpTokens"] == "required"

    raw = aws.ec2.describe_instance_attribute(InstanceId=app_out["InstanceId"],
                                              Attribute="userData")
    user_data = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert user_data.startswith("#cloud-config\n")
    assert "${" not in user_data, "an Fn::Sub reference was left unresolved"
    config = yaml.safe_load(user_data)
    files = {f["path"]: f["content"] for f in config["write_files"]}
    assert files[FETCHER] == (INFRA / "files" / "fetch_artifact.py").read_text()
    boot = files[BOOTSTRAP]
    assert f"BUCKET='{out['ArtifactBucket']}'" in boot
    assert f"KEY='app/{REVISION}/app-{REVISION}.tar.gz'" in boot
    assert f"SHA256='{SHA256}'" in boot
    assert "ENDPOINT='http://10.42.1.1:5000'" in boot
    assert f"REGION='{REGION}'" in boot
    assert "Environment=PORT=8080" in files[UNIT]
    assert f"WorkingDirectory=/opt/phoenixapp/{REVISION}" in files[UNIT]
    assert config["runcmd"] == [[BOOTSTRAP]]


def _assert_nothing_left(aws: Aws, out: dict[str, str], app_instance: str) -> None:
    vpc_id = out["VpcId"]
    assert not [v for v in aws.ec2.describe_vpcs()["Vpcs"] if v["VpcId"] == vpc_id]
    assert not aws.ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert not aws.ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"]
    allocs = {a.get("AllocationId") for a in aws.ec2.describe_addresses()["Addresses"]}
    assert out["AppEipAllocationId"] not in allocs
    public = {a["PublicIp"] for a in aws.ec2.describe_addresses()["Addresses"]}
    assert out["CiServerPublicIp"] not in public
    for iid in (out["CiServerInstanceId"], out["CiAgentInstanceId"], app_instance):
        assert _instance(aws.ec2, iid)["State"]["Name"] in ("shutting-down", "terminated")
    assert not aws.ec2.describe_launch_templates(Filters=[
        {"Name": "tag:phoenixci:run-id", "Values": [aws.run_id]}])["LaunchTemplates"]
    roles = {r["RoleName"] for r in aws.iam.list_roles()["Roles"]}
    assert not roles & {out["AppRoleName"], out["AgentRoleName"]}
    profiles = {p["InstanceProfileName"]
                for p in aws.iam.list_instance_profiles()["InstanceProfiles"]}
    assert not profiles & {out["AppInstanceProfile"], out["AgentInstanceProfile"]}
    buckets = {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}
    assert out["ArtifactBucket"] not in buckets


def test_infrastructure_and_app_stacks_create_and_delete(aws: Aws) -> None:
    # moto's ValidateTemplate parses but returns no Parameters; it must at least accept both.
    for name in ("infrastructure.yaml", "app-server.yaml"):
        aws.cfn.validate_template(TemplateBody=(INFRA / name).read_text())

    def before_infra_delete(out: dict[str, str]) -> None:
        stacks.empty_bucket(aws.s3, out["ArtifactBucket"])  # versioned: every version goes

    with created_stack(aws.cfn, f"phoenixci-{aws.run_id}", "infrastructure.yaml",
                       aws.infra_params(), before_delete=before_infra_delete) as infra:
        assert infra["StackStatus"] == "CREATE_COMPLETE", infra
        out = _outputs(infra)
        _check_infrastructure(aws, out)

        params = _app_params(aws, out)
        aws.s3.put_object(Bucket=out["ArtifactBucket"], Key=params["ArtifactKey"], Body=b"x")
        with created_stack(aws.cfn, f"app-{REVISION}", "app-server.yaml", params) as app:
            assert app["StackStatus"] == "CREATE_COMPLETE", app
            app_out = _outputs(app)
            _check_app_server(aws, out, app_out)
        assert _status(aws.cfn, app["StackId"]) == "DELETE_COMPLETE"

    assert _status(aws.cfn, infra["StackId"]) == "DELETE_COMPLETE"
    _assert_nothing_left(aws, out, app_out["InstanceId"])
    assert leaks.leftovers(aws.backend, aws.run_id) == []
