"""A moto server with IAM enforcement on, and helpers to act as roles and users.

Used in-process by test_moto_patches.py (patched) and, run as a script, in a
subprocess WITHOUT the patches to probe whether upstream moto still gets each case
wrong (``python tests/integration/moto_world.py`` prints a JSON dict of outcomes).
"""
from __future__ import annotations

import json
import socket
import sys
import time
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


@dataclass
class World:
    server: Any
    endpoint: str
    admin: dict[str, str]
    previous_auth: str = "inf"
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, creds: dict[str, str] | None = None) -> Any:
        creds = creds or self.admin
        return boto3.client(
            service, region_name=REGION, endpoint_url=self.endpoint, config=NO_RETRY,
            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds.get("SessionToken"))

    def make_role(self, name: str, statements: list[dict[str, Any]],
                  trust: dict[str, Any] | None = None, profile: bool = False) -> str:
        iam = self.client("iam")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or EC2_TRUST)
                              )["Role"]["Arn"]
        if statements:
            iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy(*statements))
        if profile:
            iam.create_instance_profile(InstanceProfileName=f"{name}-profile")
            iam.add_role_to_instance_profile(InstanceProfileName=f"{name}-profile", RoleName=name)
        return str(arn)

    def make_user(self, name: str, statements: list[dict[str, Any]]) -> dict[str, str]:
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(*statements))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def role_creds(self, role_arn: str, session: str = "test") -> dict[str, str]:
        """Credentials of the role, minted in-process as the IMDS hands them to an instance."""
        from phoenixci.localcloud.rolecreds import mint_role_credentials

        return mint_role_credentials(ACCOUNT, role_arn, session, region=REGION)

    def image_id(self) -> str:
        return str(self.client("ec2").describe_images()["Images"][0]["ImageId"])

    def stop(self) -> None:
        """Stop the server and restore the process-wide enforcement setting.

        moto's state is process-global (shared with any other server in this process),
        so it is not wiped here; every name this module creates is prefixed ``mp-``.
        """
        try:
            _reset_auth(self.endpoint, self.previous_auth)
        finally:
            self.server.stop()
            inner = getattr(self.server, "_server", None)
            if inner is not None:
                inner.server_close()  # ThreadedMotoServer.stop leaves the socket open


def _reset_auth(endpoint: str, value: str) -> str:
    """Set moto's INITIAL_NO_AUTH_ACTION_COUNT; return the previous value."""
    response = requests.post(f"{endpoint}/moto-api/reset-auth", data=value.encode(),
                             headers={"Content-Type": "text/plain"}, timeout=10)
    response.raise_for_status()
    return str(response.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


def start_world() -> World:
    """Start moto on 127.0.0.1, bootstrap an admin user, then switch IAM enforcement on."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boot = {"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"}
    world = World(server=server, endpoint=endpoint, admin=boot)
    try:
        # bootstrap phase: unauthenticated calls (even if another server enforces already)
        world.previous_auth = _reset_auth(endpoint, "inf")
        world.admin = world.make_user(f"mp-admin-{time.time_ns()}", [allow("*", "*")])
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


def probe() -> dict[str, str]:
    """Run each scenario a patch fixes, against THIS process's (unpatched) moto."""
    world = start_world()
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
        return results
    finally:
        world.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    print(json.dumps(probe()))
