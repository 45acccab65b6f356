"""An AWS API with IAM enforcement on, and helpers to act as roles and users.

In-process (test_moto_patches.py) a World wraps the session's embedded AWS
(``World.on_backend(phoenix_backend)``: patched, enforcing, administrator's credentials)
and never stops it. Run as a script, in a subprocess WITHOUT the patches, it starts its
own plain moto server there to probe whether upstream moto still gets each case wrong
(``python tests/integration/moto_world.py`` prints a JSON dict of outcomes).

``Cleanup`` and the ``remove_*`` helpers undo what a test made, on any object with a
``client(service)`` method.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

REGION = "us-east-1"
ACCOUNT = "123456789012"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions: str | list[str], resources: str | list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def outcome(call: Any) -> str:
    """'ok', or 'HTTPSTATUS:ErrorCode' for an error response."""
    try:
        call()
    except ClientError as err:
        meta = err.response.get("ResponseMetadata", {})
        return f"{meta.get('HTTPStatusCode')}:{err.response.get('Error', {}).get('Code')}"
    except ResponseParserError as err:  # moto's HTML 500 page
        return "500:InternalServerError" if "500 Internal Server Error" in str(err) else "unparseable"
    return "ok"


class Cleanup:
    """Undo steps registered by a test, run last-first after it, whether it passed or not."""

    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def add(self, step: Callable[..., Any], *args: Any) -> None:
        self._steps.append((step, args))

    def run(self) -> None:
        errors = []
        while self._steps:
            step, args = self._steps.pop()
            try:
                step(*args)
            except Exception as err:  # noqa: BLE001 - every step runs; failures reported below
                errors.append(f"{getattr(step, '__name__', step)}{args}: {err}")
        assert not errors, "cleanup failed: " + "; ".join(errors)


def remove_bucket(aws: Any, bucket: str) -> None:
    """Empty (every version) and delete the bucket, unless it is gone already."""
    s3 = aws.client("s3")
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        return
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    s3.delete_bucket(Bucket=bucket)


def remove_stack(aws: Any, name: str) -> None:
    """Delete the stack (emptying its buckets first) unless it is gone already."""
    cfn = aws.client("cloudformation")
    try:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as err:
        if "does not exist" in str(err):
            return
        raise
    if stack["StackStatus"] == "DELETE_COMPLETE":
        return
    for res in cfn.describe_stack_resources(StackName=stack["StackId"])["StackResources"]:
        if res["ResourceType"] == "AWS::S3::Bucket" and res.get("PhysicalResourceId"):
            remove_bucket(aws, res["PhysicalResourceId"])
    cfn.delete_stack(StackName=stack["StackId"])
    final = cfn.describe_stacks(StackName=stack["StackId"])["Stacks"][0]
    assert final["StackStatus"] == "DELETE_COMPLETE", final


def terminate(aws: Any, instance_ids: list[str]) -> None:
    aws.client("ec2").terminate_instances(InstanceIds=instance_ids)


def release(aws: Any, allocation_ids: list[str]) -> None:
    """Release the addresses (disassociating them first) that are still allocated."""
    ec2 = aws.client("ec2")
    for a in ec2.describe_addresses()["Addresses"]:
        if a.get("AllocationId") in allocation_ids:
            if a.get("AssociationId"):
                ec2.disassociate_address(AssociationId=a["AssociationId"])
            ec2.release_address(AllocationId=a["AllocationId"])


@dataclass
class World:
    endpoint: str
    admin: dict[str, str]
    account: str = ACCOUNT
    #: a server this World started itself (only the subprocess probe does); None on the shared one
    server: Any = None
    #: the CA bundle the endpoint's TLS is verified with (the local cloud's; None: botocore's default)
    verify: str | None = None
    #: IAM users and roles made through this World, oldest first: ("user" | "role", name)
    made: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def on_backend(cls, backend: Any) -> World:
        """The session's embedded AWS (``phoenix_backend``), acting as its administrator."""
        creds = backend.session.get_credentials().get_frozen_credentials()
        return cls(endpoint=str(backend.endpoint_url), account=backend.account_id, verify=backend.ca_bundle,
                   admin={"AccessKeyId": creds.access_key, "SecretAccessKey": creds.secret_key})

    def client(self, service: str, creds: dict[str, str] | None = None) -> Any:
        creds = creds or self.admin
        return boto3.client(
            service, region_name=REGION, endpoint_url=self.endpoint, config=NO_RETRY, verify=self.verify,
            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds.get("SessionToken"))

    def make_role(self, name: str, statements: list[dict[str, Any]],
                  trust: dict[str, Any] | None = None, profile: bool = False) -> str:
        iam = self.client("iam")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or EC2_TRUST)
                              )["Role"]["Arn"]
        self.made.append(("role", name))
        if statements:
            iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy(*statements))
        if profile:
            iam.create_instance_profile(InstanceProfileName=f"{name}-profile")
            iam.add_role_to_instance_profile(InstanceProfileName=f"{name}-profile", RoleName=name)
        return str(arn)

    def make_user(self, name: str, statements: list[dict[str, Any]]) -> dict[str, str]:
        iam = self.client("iam")
        iam.create_user(UserName=name)
        self.made.append(("user", name))
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(*statements))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def role_creds(self, role_arn: str, session: str = "test") -> dict[str, str]:
        """Credentials of the role, minted in-process as the IMDS hands them to an instance."""
        from phoenixci.localcloud.rolecreds import mint_role_credentials

        return mint_role_credentials(self.account, role_arn, session, region=REGION)

    def image_id(self) -> str:
        return str(self.client("ec2").describe_images()["Images"][0]["ImageId"])

    def forget(self, keep: int = 0) -> None:
        """Delete the users and roles made after the first ``keep`` (newest first)."""
        iam = self.client("iam")
        while len(self.made) > keep:
            kind, name = self.made.pop()
            if kind == "user":
                for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
                    iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
                for pol in iam.list_user_policies(UserName=name)["PolicyNames"]:
                    iam.delete_user_policy(UserName=name, PolicyName=pol)
                iam.delete_user(UserName=name)
                continue
            for prof in iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
                iam.remove_role_from_instance_profile(
                    InstanceProfileName=prof["InstanceProfileName"], RoleName=name)
                iam.delete_instance_profile(InstanceProfileName=prof["InstanceProfileName"])
            for pol in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=pol)
            iam.delete_role(RoleName=name)

    def stop(self) -> None:
        """Delete every user and role this World made; stop the server only if it started one.

        On the shared session server (``on_backend``) the server keeps running for the
        other tests; only the probe subprocess's own server is stopped.
        """
        if self.server is None:
            self.forget()
            return
        self.server.stop()
        inner = getattr(self.server, "_server", None)
        if inner is not None:
            inner.server_close()  # ThreadedMotoServer.stop leaves the socket open


# --- the upstream probe: runs only as a script, in its own subprocess, with moto NOT patched ---

def _reset_auth(endpoint: str, value: str) -> str:
    """Set moto's INITIAL_NO_AUTH_ACTION_COUNT (probe subprocess only); return the previous value."""
    response = requests.post(f"{endpoint}/moto-api/reset-auth", data=value.encode(),
                             headers={"Content-Type": "text/plain"}, timeout=10)
    response.raise_for_status()
    return str(response.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


def _start_upstream_world() -> World:
    """Probe subprocess only: start plain moto on 127.0.0.1, bootstrap an admin, enforce IAM."""
    assert "phoenixci.localcloud.patches" not in sys.modules, "the probe must run unpatched moto"
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    world = World(server=server, endpoint=endpoint,
                  admin={"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"})
    try:
        _reset_auth(endpoint, "inf")  # bootstrap phase: unauthenticated calls
        world.admin = world.make_user(f"probe-admin-{time.time_ns()}", [allow("*", "*")])
        _reset_auth(endpoint, "0")
    except BaseException:
        world.stop()
        raise
    return world


STACK_ARN_APP = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/app-*/*"


def bucket_template(name: str) -> str:
    return json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket",
                                           "Properties": {"BucketName": name}}}})


def instance_template(image_id: str, profile: str | None, subnet: str | None = None) -> str:
    props: dict[str, Any] = {"ImageId": image_id, "InstanceType": "t3.micro"}
    if profile:
        props["IamInstanceProfile"] = profile
    if subnet:
        props["SubnetId"] = subnet
    return json.dumps({"Resources": {
        "Sg": {"Type": "AWS::EC2::SecurityGroup",
               "Properties": {"GroupDescription": "probe", "GroupName": f"sg-{time.time_ns()}"}},
        "Server": {"Type": "AWS::EC2::Instance", "DependsOn": "Sg", "Properties": props}}})


def _probe_expiry_and_bucket_policy(world: World) -> dict[str, str]:
    """Expired role credentials (patches/expired_credentials) and a bucket policy's Deny on bucket
    and object requests (patches/bucket_policy_deny), in unpatched moto."""
    import datetime

    from moto.sts.models import sts_backends

    creds = world.role_creds(world.make_role("probe-expiring", [allow("*", "*")]))
    for role in sts_backends[ACCOUNT]["aws"].assumed_roles:
        if role.access_key_id == creds["AccessKeyId"]:
            role.expiration = datetime.datetime(2000, 1, 1)
    s3 = world.client("s3")
    s3.create_bucket(Bucket="probe-denied")
    s3.put_object(Bucket="probe-denied", Key="k", Body=b"x")
    s3.put_bucket_policy(Bucket="probe-denied", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": ["s3:ListBucket", "s3:GetObject"],
         "Resource": ["arn:aws:s3:::probe-denied", "arn:aws:s3:::probe-denied/*"]}]}))
    return {"expired_role_credentials": outcome(lambda: world.client("sts", creds).get_caller_identity()),
            "bucket_policy_list": outcome(lambda: s3.list_objects_v2(Bucket="probe-denied")),
            "bucket_policy_get": outcome(lambda: s3.get_object(Bucket="probe-denied", Key="k"))}


def probe() -> dict[str, str]:
    """Run each scenario a patch fixes, against THIS process's (unpatched) moto."""
    world = _start_upstream_world()
    try:
        results: dict[str, str] = {}
        cfn_role = world.role_creds(world.make_role("probe-cfn", [
            allow(["cloudformation:CreateStack", "cloudformation:DescribeStacks"], STACK_ARN_APP)]))
        results["cfn_scoped_create"] = outcome(lambda: world.client("cloudformation", cfn_role)
                                               .create_stack(StackName="app-probe",
                                                             TemplateBody=bucket_template("probe-b")))
        ec2 = world.client("ec2")
        alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
        inst = ec2.run_instances(ImageId=world.image_id(), MinCount=1, MaxCount=1)["Instances"][0]
        eip_role = world.role_creds(world.make_role("probe-eip", [allow(
            "ec2:AssociateAddress", [f"arn:aws:ec2:{REGION}:{ACCOUNT}:elastic-ip/{alloc}",
                                     f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"])]))
        results["eip_scoped_associate"] = outcome(lambda: world.client("ec2", eip_role).associate_address(
            AllocationId=alloc, InstanceId=inst["InstanceId"]))
        results["ec2_denial_code"] = outcome(lambda: world.client("ec2", eip_role).describe_instances())
        results["console_output"] = (ec2.get_console_output(InstanceId=inst["InstanceId"]).get("Output") or "")[:40]
        world.make_role("probe-b", [], profile=True)
        runner = world.role_creds(world.make_role("probe-runner", [
            allow("ec2:RunInstances", "*"),
            allow("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/probe-a")]))
        results["passrole_run_instances"] = outcome(lambda: world.client("ec2", runner).run_instances(
            ImageId=world.image_id(), MinCount=1, MaxCount=1,
            IamInstanceProfile={"Name": "probe-b-profile"}))
        cfn = world.client("cloudformation")
        results["cfn_failed_resource_call"] = outcome(lambda: cfn.create_stack(
            StackName="app-broken", TemplateBody=instance_template(world.image_id(), None, "subnet-nope")))
        stacks = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackName"] == "app-broken"]
        results["cfn_failed_resource_status"] = stacks[0]["StackStatus"] if stacks else "absent"
        dev = world.make_user("probe-dev", [allow("sts:AssumeRole", "*")])
        svc = world.make_role("probe-svc", [])
        root = world.make_role("probe-root", [], trust={"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
             "Action": "sts:AssumeRole"}]})
        sts = world.client("sts", dev)
        results["assume_service_only"] = outcome(lambda: sts.assume_role(RoleArn=svc, RoleSessionName="probe"))
        results["assume_root_trusted"] = outcome(lambda: sts.assume_role(RoleArn=root, RoleSessionName="probe"))
        results.update(_probe_expiry_and_bucket_policy(world))
        return results
    finally:
        world.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    print(json.dumps(probe()))
