"""The local cloud's moto decides IAM like AWS (phoenixci.localcloud.patches).

Each patch has a test stating the AWS behaviour it restores, and an "upstream" test
that runs the same scenario against UNPATCHED moto in a subprocess: when one of
those fails, upstream moto fixed the problem and the named patch can go.

The in-process tests run on the session's embedded AWS (``phoenix_backend``: patched, IAM
enforced), set up by its administrator. Names start with ``mp-`` (stacks ``app-mp-``, as the
scoped policies require ``app-*``); what a test makes is removed after it, the module's
shared users and roles after the module.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_world import (  # noqa: E402
    ACCOUNT,
    REGION,
    STACK_ARN_APP,
    Cleanup,
    World,
    allow,
    bucket_template,
    instance_template,
    outcome,
    release,
    remove_bucket,
    remove_stack,
    terminate,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PASS_ROLE_DENIED = "403:UnauthorizedOperation"


@pytest.fixture(scope="module")
def world(phoenix_backend: Any) -> Iterator[World]:
    world = World.on_backend(phoenix_backend)
    assert world.account == ACCOUNT, "the policies below name moto's default account"
    try:
        yield world
    finally:
        world.stop()  # deletes the module's users and roles; the shared server keeps running


@pytest.fixture(autouse=True)
def undo(world: World) -> Iterator[Cleanup]:
    """Removes what the test made: registered resources, then the users and roles it created
    (module-scoped fixtures' ones stay for the module)."""
    keep = len(world.made)
    steps = Cleanup()
    try:
        yield steps
        steps.run()
    finally:
        world.forget(keep)


@pytest.fixture(scope="module")
def upstream() -> dict[str, str]:
    """Outcomes of the same scenarios in a fresh process with moto NOT patched."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("moto_world.py"))],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def count_instances(world: World, **filters: str) -> int:
    flt = [{"Name": k, "Values": [v]} for k, v in filters.items()]
    flt.append({"Name": "instance-state-name", "Values": ["pending", "running"]})
    pages = world.client("ec2").describe_instances(Filters=flt)["Reservations"]
    return sum(len(r["Instances"]) for r in pages)


# --- resource_arns.py ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cfn_role(world: World) -> Any:
    arn = world.make_role("mp-deployer", [
        allow(["cloudformation:CreateStack", "cloudformation:DeleteStack",
               "cloudformation:DescribeStacks"], STACK_ARN_APP),
        allow(["s3:CreateBucket", "s3:DeleteBucket"], "*")])
    return world.client("cloudformation", world.role_creds(arn))


def test_stack_scoped_policy_allows_matching_stack(world: World, cfn_role: Any, undo: Cleanup) -> None:
    """AWS: Allow cloudformation:* on stack/app-*/* covers stack app-x (create, describe, delete)."""
    undo.add(remove_stack, world, "app-mp-x")
    cfn_role.create_stack(StackName="app-mp-x", TemplateBody=bucket_template("mp-app-x-bucket"))
    assert cfn_role.describe_stacks(StackName="app-mp-x")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    cfn_role.delete_stack(StackName="app-mp-x")
    names = [s["StackName"] for s in world.client("cloudformation").describe_stacks()["Stacks"]]
    assert "app-mp-x" not in names


def test_stack_scoped_policy_denies_other_stack(world: World, cfn_role: Any, undo: Cleanup) -> None:
    """AWS: the same policy does not cover stack infra, nor DescribeStacks of all stacks (*)."""
    undo.add(remove_stack, world, "mp-infra")
    undo.add(remove_stack, world, "mp-other")
    world.client("cloudformation").create_stack(StackName="mp-infra",
                                                TemplateBody=bucket_template("mp-infra-bucket"))
    assert outcome(lambda: cfn_role.delete_stack(StackName="mp-infra")) == "403:AccessDenied"
    assert outcome(lambda: cfn_role.create_stack(
        StackName="mp-other", TemplateBody=bucket_template("mp-other-b"))) == "403:AccessDenied"
    assert outcome(lambda: cfn_role.describe_stacks()) == "403:AccessDenied"
    assert world.client("cloudformation").describe_stacks(StackName="mp-infra")["Stacks"]


def test_eip_scoped_policy(world: World, undo: Cleanup) -> None:
    """AWS: AssociateAddress allowed on one elastic-ip ARN (+ instance/*) works for it alone."""
    ec2 = world.client("ec2")
    instance = ec2.run_instances(ImageId=world.image_id(), MinCount=1, MaxCount=1)["Instances"][0]
    undo.add(terminate, world, [instance["InstanceId"]])
    mine = ec2.allocate_address(Domain="vpc")["AllocationId"]
    undo.add(release, world, [mine])
    other = ec2.allocate_address(Domain="vpc")["AllocationId"]
    undo.add(release, world, [other])
    arn = world.make_role("mp-eip-mover", [allow("ec2:AssociateAddress", [
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:elastic-ip/{mine}",
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"])])
    role_ec2 = world.client("ec2", world.role_creds(arn))
    role_ec2.associate_address(AllocationId=mine, InstanceId=instance["InstanceId"])
    assert outcome(lambda: role_ec2.associate_address(
        AllocationId=other, InstanceId=instance["InstanceId"])) == "403:UnauthorizedOperation"
    addresses = {a["AllocationId"]: a for a in ec2.describe_addresses()["Addresses"]}
    assert addresses[mine].get("InstanceId") == instance["InstanceId"]
    assert not addresses[other].get("InstanceId")


def test_upstream_resource_arns_still_needed(upstream: dict[str, str]) -> None:
    fixed = upstream["cfn_scoped_create"] == "ok" and upstream["eip_scoped_associate"] == "ok"
    assert not fixed, "upstream moto fixed resource-scoped authorization: remove patches/resource_arns.py"


# --- ec2_denial.py ----------------------------------------------------------------------

def test_ec2_denial_is_unauthorized_operation(world: World) -> None:
    """AWS: EC2 denies with HTTP 403 UnauthorizedOperation, not AccessDenied."""
    arn = world.make_role("mp-no-ec2", [allow("s3:ListAllMyBuckets", "*")])
    role_ec2 = world.client("ec2", world.role_creds(arn))
    assert outcome(role_ec2.describe_instances) == "403:UnauthorizedOperation"


def test_upstream_ec2_denial_still_needed(upstream: dict[str, str]) -> None:
    assert upstream["ec2_denial_code"] != "403:UnauthorizedOperation", \
        "upstream moto fixed EC2 denial codes: remove patches/ec2_denial.py"


# --- passrole.py + cfn_rollback.py ---------------------------------------------------------

@pytest.fixture(scope="module")
def launcher(world: World) -> dict[str, Any]:
    world.make_role("mp-app-a", [allow("s3:GetObject", "*")], profile=True)
    world.make_role("mp-app-b", [allow("s3:*", "*")], profile=True)
    arn = world.make_role("mp-launcher", [
        allow(["ec2:RunInstances", "ec2:DescribeInstances", "ec2:AssociateIamInstanceProfile",
               "ec2:CreateSecurityGroup"], "*"),  # the stacks' security group is made as the caller
        allow(["cloudformation:CreateStack", "cloudformation:DeleteStack",
               "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents"], STACK_ARN_APP),
        allow("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/mp-app-a")])
    creds = world.role_creds(arn)
    return {"ec2": world.client("ec2", creds), "cfn": world.client("cloudformation", creds)}


def test_run_instances_checks_pass_role(world: World, launcher: dict[str, Any], undo: Cleanup) -> None:
    """AWS: RunInstances with a profile needs iam:PassRole on its role; denied = no instance."""
    ec2, image = launcher["ec2"], world.image_id()
    allowed = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                IamInstanceProfile={"Name": "mp-app-a-profile"})["Instances"][0]
    undo.add(terminate, world, [allowed["InstanceId"]])
    before = count_instances(world)
    assert outcome(lambda: ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1,
        IamInstanceProfile={"Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/mp-app-b-profile"},
    )) == PASS_ROLE_DENIED
    assert outcome(lambda: ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": "mp-app-b-profile"},
    )) == PASS_ROLE_DENIED
    assert count_instances(world) == before
    plain = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    undo.add(terminate, world, [plain])
    assert outcome(lambda: ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Name": "mp-app-b-profile"}, InstanceId=plain)) == PASS_ROLE_DENIED


def test_stack_instance_checks_pass_role_and_rolls_back(world: World, launcher: dict[str, Any],
                                                         undo: Cleanup) -> None:
    """AWS: a stack instance whose role may not be passed is CREATE_FAILED; stack ROLLBACK_COMPLETE."""
    cfn, image = launcher["cfn"], world.image_id()
    undo.add(remove_stack, world, "app-mp-good")
    undo.add(remove_stack, world, "app-mp-bad")
    cfn.create_stack(StackName="app-mp-good", TemplateBody=instance_template(image, "mp-app-a-profile"))
    assert cfn.describe_stacks(StackName="app-mp-good")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert count_instances(world, **{"tag:aws:cloudformation:stack-name": "app-mp-good"}) == 1

    groups_before = len(world.client("ec2").describe_security_groups()["SecurityGroups"])
    cfn.create_stack(StackName="app-mp-bad", TemplateBody=instance_template(image, "mp-app-b-profile"))
    stack = cfn.describe_stacks(StackName="app-mp-bad")["Stacks"][0]
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE"
    assert not stack.get("Outputs")
    events = cfn.describe_stack_events(StackName="app-mp-bad")["StackEvents"]
    failed = [e for e in events if e.get("ResourceStatus") == "CREATE_FAILED"]
    assert failed and failed[0]["LogicalResourceId"] == "Server"
    assert "iam:PassRole" in failed[0]["ResourceStatusReason"]
    assert "role/mp-app-b" in failed[0]["ResourceStatusReason"]
    assert count_instances(world, **{"tag:aws:cloudformation:stack-name": "app-mp-bad"}) == 0
    assert len(world.client("ec2").describe_security_groups()["SecurityGroups"]) == groups_before
    cfn.delete_stack(StackName="app-mp-bad")  # a rolled-back stack can be deleted, as in AWS
    assert outcome(lambda: cfn.describe_stacks(StackName="app-mp-bad")) == "400:ValidationError"
    cfn.delete_stack(StackName="app-mp-good")


def test_upstream_passrole_still_needed(upstream: dict[str, str]) -> None:
    assert upstream["passrole_run_instances"] == "ok", \
        "upstream moto fixed iam:PassRole checks: remove patches/passrole.py"


def test_upstream_cfn_rollback_still_needed(upstream: dict[str, str]) -> None:
    assert upstream["cfn_failed_resource_status"] == "CREATE_IN_PROGRESS", \
        "upstream moto fixed stack rollback on resource failure: remove patches/cfn_rollback.py"


# --- S3 (moto already right; kept as a regression check) -----------------------------------

def test_s3_object_scoped_policy(world: World, undo: Cleanup) -> None:
    """AWS: s3:GetObject on artifacts/app/* reads app/x and cannot write or delete."""
    s3 = world.client("s3")
    undo.add(remove_bucket, world, "mp-artifacts")
    s3.create_bucket(Bucket="mp-artifacts")
    s3.put_object(Bucket="mp-artifacts", Key="app/x", Body=b"jar")
    arn = world.make_role("mp-app-reader", [allow("s3:GetObject", "arn:aws:s3:::mp-artifacts/app/*")])
    reader = world.client("s3", world.role_creds(arn))
    assert reader.get_object(Bucket="mp-artifacts", Key="app/x")["Body"].read() == b"jar"
    assert outcome(lambda: reader.put_object(Bucket="mp-artifacts", Key="app/y", Body=b"x")) \
        == "403:AccessDenied"
    assert outcome(lambda: reader.delete_object(Bucket="mp-artifacts", Key="app/x")) == "403:AccessDenied"
    assert outcome(lambda: reader.get_object(Bucket="mp-artifacts", Key="other/x")) == "403:AccessDenied"


# --- trust.py --------------------------------------------------------------------------------

def _trust(principal: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]}


def test_assume_role_follows_trust_policy(world: World) -> None:
    """AWS: service-only trust -> 403 AccessDenied for a user; root/user trust + identity allow -> ok."""
    dev = world.make_user("mp-dev", [allow("sts:AssumeRole", "*")])
    nobody = world.make_user("mp-nobody", [allow("s3:ListAllMyBuckets", "*")])
    svc = world.make_role("mp-svc-only", [])
    root = world.make_role("mp-root-trusted", [allow("s3:ListAllMyBuckets", "*")],
                          trust=_trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
    named = world.make_role("mp-dev-trusted", [],
                            trust=_trust({"AWS": [f"arn:aws:iam::{ACCOUNT}:user/mp-dev"],
                                          "Service": "ec2.amazonaws.com"}))
    sts = world.client("sts", dev)
    assert outcome(lambda: sts.assume_role(RoleArn=svc, RoleSessionName="mp-dev")) == "403:AccessDenied"
    creds = sts.assume_role(RoleArn=root, RoleSessionName="mp-dev")["Credentials"]
    me = world.client("sts", creds).get_caller_identity()["Arn"]
    assert me == f"arn:aws:sts::{ACCOUNT}:assumed-role/mp-root-trusted/mp-dev"
    world.client("s3", creds).list_buckets()
    assert outcome(lambda: sts.assume_role(RoleArn=named, RoleSessionName="mp-dev")) == "ok"
    assert outcome(lambda: world.client("sts", nobody).assume_role(
        RoleArn=root, RoleSessionName="mp-nobody")) == "403:AccessDenied"


def test_mint_role_credentials_requires_ec2_trust(world: World) -> None:
    from phoenixci.localcloud.rolecreds import RoleTrustError, mint_role_credentials

    arn = world.make_role("mp-user-only", [], trust=_trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
    with pytest.raises(RoleTrustError, match="ec2.amazonaws.com"):
        mint_role_credentials(ACCOUNT, arn, "i-123")
    with pytest.raises(RoleTrustError, match="does not exist"):
        mint_role_credentials(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/ghost", "i-123")
    creds = mint_role_credentials(ACCOUNT, world.make_role("mp-minted", []), "i-123", duration=900)
    assert creds["Expiration"].tzinfo is not None and creds["SessionToken"]


def test_upstream_trust_still_needed(upstream: dict[str, str]) -> None:
    fixed = upstream["assume_service_only"] == "403:AccessDenied" and upstream["assume_root_trusted"] == "ok"
    assert not fixed, "upstream moto fixed trust-policy evaluation: remove patches/trust.py"


def test_upstream_console_output_still_needed(upstream: dict[str, str]) -> None:
    assert upstream["console_output"].startswith("Linux version 2.6.16-xenU"), \
        "upstream moto no longer answers GetConsoleOutput with its fixed sample: re-check patches/console_output.py"


def test_upstream_expired_credentials_still_needed(upstream: dict[str, str]) -> None:
    assert upstream["expired_role_credentials"] == "ok", \
        "upstream moto refuses expired role credentials: remove patches/expired_credentials.py"


def test_upstream_bucket_policy_deny_still_needed(upstream: dict[str, str]) -> None:
    fixed = upstream["bucket_policy_list"] == "403:AccessDenied" and upstream["bucket_policy_get"] == "403:AccessDenied"
    assert not fixed, "upstream moto applies bucket-policy Denies as AccessDenied: remove patches/bucket_policy_deny.py"
