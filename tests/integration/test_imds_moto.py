"""The IMDS serves a real moto instance, and its role credentials are enforced by real IAM.

The administrator makes a role trusted by ec2.amazonaws.com that may only read one bucket's
objects, an instance profile, a key pair, and runs an instance with them (user data,
HttpTokens=required). ``MotoInstanceDirectory`` reads the instance from moto in-process;
requests come from 127.0.0.1, so the directory is told that 127.0.0.1 is that instance.
Everything is named ``imds-…`` and removed after the module.
"""
from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from phoenixci import stacks
from phoenixci.localcloud.imds import ImdsServer, MotoInstanceDirectory

pytestmark = pytest.mark.integration

EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
USER_DATA = "#cloud-config\nruncmd:\n  - echo hello from imds\n"


@dataclass
class World:
    backend: Any
    instance_id: str
    private_ip: str
    bucket: str
    role: str
    key_name: str
    public_key: str
    server: ImdsServer
    directory: MotoInstanceDirectory

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        headers = {"X-aws-ec2-metadata-token": token} if token else {}
        req = urllib.request.Request(self.server.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def token(self) -> str:
        req = urllib.request.Request(self.server.url + "/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "600"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())


@pytest.fixture(scope="module")
def world(phoenix_backend: Any) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:8]
    bucket, role, key_name = f"imds-bucket-{suffix}", f"imds-role-{suffix}", f"imds-key-{suffix}"
    ec2, iam, s3 = phoenix_backend.client("ec2"), phoenix_backend.client("iam"), phoenix_backend.client("s3")
    undo: list[Any] = []
    try:
        s3.create_bucket(Bucket=bucket)
        undo.append(lambda: (stacks.empty_bucket(s3, bucket), s3.delete_bucket(Bucket=bucket)))
        s3.put_object(Bucket=bucket, Key="data/readme.txt", Body=b"for the instance")
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
        undo.append(lambda: iam.delete_role(RoleName=role))
        iam.put_role_policy(RoleName=role, PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                    "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
        undo.append(lambda: iam.delete_role_policy(RoleName=role, PolicyName="read"))
        iam.create_instance_profile(InstanceProfileName=role)
        undo.append(lambda: iam.delete_instance_profile(InstanceProfileName=role))
        iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
        undo.append(lambda: iam.remove_role_from_instance_profile(InstanceProfileName=role, RoleName=role))
        public_key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        ec2.import_key_pair(KeyName=key_name, PublicKeyMaterial=public_key.encode())
        undo.append(lambda: ec2.delete_key_pair(KeyName=key_name))
        image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
        instance = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", KeyName=key_name,
            UserData=USER_DATA, IamInstanceProfile={"Name": role},
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"})["Instances"][0]
        instance_id = instance["InstanceId"]
        undo.append(lambda: ec2.terminate_instances(InstanceIds=[instance_id]))
        directory = MotoInstanceDirectory(phoenix_backend.account_id, phoenix_backend.region,
                                          overrides={"127.0.0.1": instance_id})
        with ImdsServer(directory, host="127.0.0.1") as server:
            yield World(phoenix_backend, instance_id, instance["PrivateIpAddress"], bucket, role,
                        key_name, public_key, server, directory)
    finally:
        for step in reversed(undo):
            with contextlib.suppress(ClientError):
                step()


def test_directory_finds_instance_by_private_ip(world: World) -> None:
    info = MotoInstanceDirectory(world.backend.account_id, world.backend.region).by_private_ip(
        world.private_ip)
    assert info is not None and info.instance_id == world.instance_id
    assert info.http_tokens == "required" and info.instance_type == "t3.micro"
    assert info.role_arn is not None and info.role_arn.endswith(f":role/{world.role}")
    assert info.instance_profile_arn is not None and info.instance_profile_arn.endswith(
        f":instance-profile/{world.role}")
    assert info.local_hostname == "ip-" + world.private_ip.replace(".", "-") + ".ec2.internal"
    assert info.public_keys == [(world.key_name, world.public_key)]
    assert info.security_groups  # the VPC default group
    assert world.directory.by_private_ip("10.255.255.254") is None


def test_tokens_are_required(world: World) -> None:
    assert world.get("/latest/meta-data/instance-id")[0] == 401


def test_serves_the_instance(world: World) -> None:
    token = world.token()
    assert world.get("/latest/meta-data/instance-id", token) == (200, world.instance_id.encode())
    assert world.get("/2021-03-23/meta-data/local-ipv4", token) == (200, world.private_ip.encode())
    assert world.get("/latest/meta-data/public-keys/", token) == (200, f"0={world.key_name}".encode())
    status, key = world.get("/latest/meta-data/public-keys/0/openssh-key", token)
    assert status == 200 and key.decode().strip() == world.public_key
    assert world.get("/latest/user-data", token) == (200, USER_DATA.encode())
    doc = json.loads(world.get("/latest/dynamic/instance-identity/document", token)[1])
    assert doc["instanceId"] == world.instance_id and doc["accountId"] == world.backend.account_id
    assert doc["privateIp"] == world.private_ip and doc["region"] == world.backend.region


def test_role_credentials_are_enforced_by_iam(world: World) -> None:
    token = world.token()
    assert world.get("/latest/meta-data/iam/security-credentials/", token) == (200, world.role.encode())
    status, body = world.get(f"/latest/meta-data/iam/security-credentials/{world.role}", token)
    assert status == 200
    creds = json.loads(body)
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    session = boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["Token"], region_name=world.backend.region)
    s3 = session.client("s3", endpoint_url=world.backend.endpoint_url, verify=world.backend.ca_bundle)
    assert s3.get_object(Bucket=world.bucket, Key="data/readme.txt")["Body"].read() == b"for the instance"
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=world.bucket, Key="data/evil.txt", Body=b"x")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    arn = session.client("sts", endpoint_url=world.backend.endpoint_url,
                         verify=world.backend.ca_bundle).get_caller_identity()["Arn"]
    assert arn.endswith(f":assumed-role/{world.role}/{world.instance_id}")


def test_botocore_fetcher_against_moto_instance(world: World) -> None:
    from botocore.utils import InstanceMetadataFetcher

    creds = InstanceMetadataFetcher(timeout=5, num_attempts=1,
                                    base_url=world.server.url).retrieve_iam_role_credentials()
    assert creds["role_name"] == world.role and creds["access_key"].startswith("ASIA")


def test_stopped_instance_is_unknown(world: World) -> None:
    ec2 = world.backend.client("ec2")
    ec2.stop_instances(InstanceIds=[world.instance_id])
    try:
        assert world.directory.by_private_ip("127.0.0.1") is None
        assert world.get("/latest/meta-data/instance-id")[0] == 403
    finally:
        ec2.start_instances(InstanceIds=[world.instance_id])
    assert world.directory.by_private_ip("127.0.0.1") is not None
