"""The session's embedded API over HTTPS: phoenixci's own clients verify the cloud's CA,
``aws:SecureTransport`` is true only over TLS (bucket and identity policies), and temporary
credentials are refused once expired, in each service's own error shape.

Everything is named ``tls-…`` and removed by the test that made it.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError

from phoenixci import stacks
from phoenixci.localcloud.rolecreds import mint_role_credentials

pytestmark = pytest.mark.integration

NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


@pytest.fixture
def backend(phoenix_backend: Any) -> Any:
    if phoenix_backend.scheme != "moto" or phoenix_backend.http_endpoint_url is None:
        pytest.skip("needs the in-process local cloud (moto://)")
    return phoenix_backend


def code_and_status(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as failed:
        call()
    return failed.value.response["Error"]["Code"], failed.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_phoenixci_clients_verify_the_cloud_ca(backend: Any) -> None:
    assert backend.endpoint_url.startswith("https://127.0.0.1:")
    assert backend.client("sts").get_caller_identity()["Arn"].endswith(":user/phoenixci-admin")
    assert backend.env()["AWS_CA_BUNDLE"] == backend.ca_bundle
    unverified = backend.session.client("sts", endpoint_url=backend.endpoint_url, config=NO_RETRY)
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.get_caller_identity()  # botocore's own bundle does not know the cloud's CA


def test_the_tls_port_answers_plain_http_with_a_400(backend: Any) -> None:
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(backend.endpoint_url.replace("https:", "http:") + "/", timeout=5)  # noqa: S310
    assert answer.value.code == 400 and b"HTTPS only" in answer.value.read()


def test_a_tls_only_bucket_policy_refuses_plain_http_and_allows_https(backend: Any) -> None:
    bucket = f"tls-only-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:s3:::{bucket}"
    s3 = backend.client("s3")
    plain = backend.session.client("s3", endpoint_url=backend.http_endpoint_url, region_name=backend.region,
                                   config=NO_RETRY)
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
        s3.put_object(Bucket=bucket, Key="k", Body=b"over TLS")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"over TLS"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
        for call in (lambda: plain.get_object(Bucket=bucket, Key="k"),
                     lambda: plain.put_object(Bucket=bucket, Key="k2", Body=b"x"),
                     lambda: plain.list_objects_v2(Bucket=bucket)):
            assert code_and_status(call) == ("AccessDenied", 403)
    finally:
        s3.delete_bucket_policy(Bucket=bucket)
        stacks.empty_bucket(s3, bucket)
        s3.delete_bucket(Bucket=bucket)


def test_secure_transport_in_an_identity_policy(backend: Any) -> None:
    iam, user = backend.client("iam"), f"tls-user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    try:
        iam.put_user_policy(UserName=user, PolicyName="tls", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeRegions",
                                                    "Resource": "*",
                                                    "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        session = backend.session_for(key)
        assert backend.client("ec2", session).describe_regions()["Regions"]
        plain = session.client("ec2", endpoint_url=backend.http_endpoint_url, region_name=backend.region,
                               config=NO_RETRY)
        assert code_and_status(plain.describe_regions) == ("UnauthorizedOperation", 403)
    finally:
        for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
        iam.delete_user_policy(UserName=user, PolicyName="tls")
        iam.delete_user(UserName=user)


def test_expired_role_credentials_are_refused_by_every_service(backend: Any) -> None:
    iam, role = backend.client("iam"), f"tls-expiring-{uuid.uuid4().hex[:8]}"
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
    try:
        iam.put_role_policy(RoleName=role, PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        creds = mint_role_credentials(backend.account_id, arn, "expiring", duration=2, region=backend.region)
        session = backend.session_for(creds)

        def client(service: str) -> Any:
            return backend.session_for(creds).client(service, region_name=backend.region, config=NO_RETRY,
                                                     endpoint_url=backend.endpoint_url, verify=backend.ca_bundle)

        assert backend.client("sts", session).get_caller_identity()["Arn"].endswith(f"/{role}/expiring")
        time.sleep(max(0.0, (creds["Expiration"].timestamp() - time.time())) + 0.5)
        assert code_and_status(client("sts").get_caller_identity) == ("ExpiredToken", 403)
        assert code_and_status(client("cloudformation").list_stacks) == ("ExpiredToken", 403)
        assert code_and_status(client("ec2").describe_regions) == ("RequestExpired", 400)
        assert code_and_status(client("s3").list_buckets) == ("ExpiredToken", 400)
        assert code_and_status(lambda: client("ssm").describe_parameters()) == ("ExpiredTokenException", 403)
        fresh = mint_role_credentials(backend.account_id, arn, "renewed", region=backend.region)
        assert backend.client("sts", backend.session_for(fresh)).get_caller_identity()["Arn"].endswith("/renewed")
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName="all")
        iam.delete_role(RoleName=role)

