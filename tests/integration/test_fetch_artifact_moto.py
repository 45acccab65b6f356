"""infra/files/fetch_artifact.py against the session's embedded AWS (IAM enforced).

The fetcher runs as the app server runs it: in its own process, with only the credentials
of a role that may read ``app/*`` of the artifact bucket (from the environment, or from a fake
IMDSv2 on 127.0.0.1), ``--endpoint phoenix_backend.endpoint_url`` (HTTPS) and ``AWS_CA_BUNDLE``
(the local cloud's CA, as instances have it). moto checks both the
SigV4 signature and the role's policy. The bucket, the role and the publishing user are made by
the administrator, named ``fetch-…``, and removed after the module.
"""
from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phoenixci import stacks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fetch_kit import fake_imds, load_fetch_artifact, run_fetch  # noqa: E402

pytestmark = pytest.mark.integration

PREFIX = "fetch-"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}

fetch_artifact = load_fetch_artifact()


def _policy(action: str, resource: str) -> str:
    return json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]})


@pytest.fixture(scope="module")
def artifacts(phoenix_backend: Any) -> Iterator[dict[str, Any]]:
    """A bucket, an app role that may only read ``app/*`` of it (its credentials as an instance
    gets them) and a publisher that may only put objects; all removed afterwards."""
    if phoenix_backend.scheme != "moto":
        pytest.skip("acts as an instance role from outside an instance, which only the local cloud can (moto://)")
    suffix = uuid.uuid4().hex[:8]
    bucket, role, publisher = (f"{PREFIX}artifacts-{suffix}", f"{PREFIX}app-reader-{suffix}",
                               f"{PREFIX}publisher-{suffix}")
    s3, iam = phoenix_backend.client("s3"), phoenix_backend.client("iam")
    s3.create_bucket(Bucket=bucket)
    try:
        role_arn = iam.create_role(RoleName=role,
                                   AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
        iam.put_role_policy(RoleName=role, PolicyName="read-app",
                            PolicyDocument=_policy("s3:GetObject", f"arn:aws:s3:::{bucket}/app/*"))
        iam.create_user(UserName=publisher)
        iam.put_user_policy(UserName=publisher, PolicyName="publish",
                            PolicyDocument=_policy("s3:PutObject", f"arn:aws:s3:::{bucket}/*"))
        key = iam.create_access_key(UserName=publisher)["AccessKey"]
        creds = phoenix_backend.instance_role_session(role_arn, "fetch-test").get_credentials()
        frozen = creds.get_frozen_credentials()
        assert frozen.token, "instance role credentials carry a session token"
        yield {"endpoint": str(phoenix_backend.endpoint_url), "bucket": bucket,
               "region": phoenix_backend.region,
               "publisher": phoenix_backend.client("s3", phoenix_backend.session_for(key)),
               "imds_creds": {"AccessKeyId": frozen.access_key, "SecretAccessKey": frozen.secret_key,
                              "Token": frozen.token},
               "env": {"AWS_ACCESS_KEY_ID": frozen.access_key,
                       "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
                       "AWS_SESSION_TOKEN": frozen.token,
                       "AWS_CA_BUNDLE": str(phoenix_backend.ca_bundle)}}
    finally:
        stacks.empty_bucket(s3, bucket)
        s3.delete_bucket(Bucket=bucket)
        for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role, PolicyName=policy)
        iam.delete_role(RoleName=role)
        for access_key in iam.list_access_keys(UserName=publisher)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=publisher, AccessKeyId=access_key["AccessKeyId"])
        for policy in iam.list_user_policies(UserName=publisher)["PolicyNames"]:
            iam.delete_user_policy(UserName=publisher, PolicyName=policy)
        iam.delete_user(UserName=publisher)


def _publish(aws: dict[str, Any], key: str, body: bytes, sha_text: str | None = None) -> str:
    """Upload an artifact and its .sha256 (sha256sum format) as the publisher."""
    digest = hashlib.sha256(body).hexdigest()
    aws["publisher"].put_object(Bucket=aws["bucket"], Key=key, Body=body)
    text = sha_text if sha_text is not None else f"{digest}  {key.rsplit('/', 1)[-1]}\n"
    aws["publisher"].put_object(Bucket=aws["bucket"], Key=key + ".sha256", Body=text.encode())
    return digest


def _args(aws: dict[str, Any], key: str, sha: str, dest: Path) -> list[str]:
    return ["--bucket", aws["bucket"], "--key", key, "--sha256", sha, "--dest", str(dest),
            "--endpoint", aws["endpoint"], "--region", aws["region"], "--retry-seconds", "0",
            "--timeout", "10"]


def test_downloads_and_verifies(artifacts: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev1/app-rev1.tar.gz"
    body = b"artifact bytes " * 1000
    digest = _publish(artifacts, key, body)
    dest = tmp_path / "out" / "app.tar.gz"
    proc = run_fetch(*_args(artifacts, key, digest, dest), env=artifacts["env"])
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == body
    assert "verified sha256 " + digest in proc.stderr
    assert [p.name for p in dest.parent.iterdir()] == ["app.tar.gz"]


def test_refuses_tampered_object(artifacts: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev2/app-rev2.tar.gz"
    digest = _publish(artifacts, key, b"the real artifact")
    _publish(artifacts, key, b"tampered artifact", sha_text=f"{digest}  x\n")
    dest = tmp_path / "app.tar.gz"
    proc = run_fetch(*_args(artifacts, key, digest, dest), env=artifacts["env"])
    assert proc.returncode == fetch_artifact.EXIT_MISMATCH, proc.stderr
    assert "CHECKSUM MISMATCH" in proc.stderr
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file may be left behind"


def test_refuses_disagreeing_checksum_object(artifacts: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev3/app-rev3.tar.gz"
    digest = _publish(artifacts, key, b"artifact", sha_text="0" * 64 + "  x\n")
    proc = run_fetch(*_args(artifacts, key, digest, tmp_path / "a"), env=artifacts["env"])
    assert proc.returncode == fetch_artifact.EXIT_MISMATCH, proc.stderr
    assert ".sha256 says" in proc.stderr
    assert not (tmp_path / "a").exists()


def test_missing_object_fails_fast(artifacts: dict[str, Any], tmp_path: Path) -> None:
    proc = run_fetch(*_args(artifacts, "app/none/app-none.tar.gz", "0" * 64, tmp_path / "a"),
                     env=artifacts["env"])
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD, proc.stderr
    assert "HTTP 404" in proc.stderr


def test_denied_outside_app_prefix(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """moto checks the signature and the policy: the app role may only read app/*."""
    digest = _publish(artifacts, "other/x.tar.gz", b"secret")
    proc = run_fetch(*_args(artifacts, "other/x.tar.gz", digest, tmp_path / "a"),
                     env=artifacts["env"])
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD, proc.stderr
    assert "HTTP 403" in proc.stderr


def test_bad_secret_is_rejected(artifacts: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev4/app-rev4.tar.gz"
    digest = _publish(artifacts, key, b"artifact")
    env = {**artifacts["env"], "AWS_SECRET_ACCESS_KEY": "wrong"}
    proc = run_fetch(*_args(artifacts, key, digest, tmp_path / "a"), env=env)
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD
    assert "HTTP 403" in proc.stderr and "SignatureDoesNotMatch" in proc.stderr


def test_credentials_from_imdsv2(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """No credentials in the environment: the role's (with session token) come from the IMDS."""
    key = "app/rev5/app-rev5.tar.gz"
    digest = _publish(artifacts, key, b"artifact from the role")
    dest = tmp_path / "a"
    with fake_imds(artifacts["imds_creds"]) as imds:
        args = _args(artifacts, key, digest, dest)
        region_at = args.index("--region")
        del args[region_at:region_at + 2]  # region from the IMDS too
        proc = run_fetch(*args, "--imds-endpoint", imds, env={"AWS_CA_BUNDLE": artifacts["env"]["AWS_CA_BUNDLE"]})
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == b"artifact from the role"


def test_the_api_certificate_is_verified(artifacts: dict[str, Any], tmp_path: Path) -> None:
    """HTTPS is verified like boto3 does it: without the cloud's CA (AWS_CA_BUNDLE, or the system
    store where cloud-init puts it on an instance) the download fails and nothing is installed."""
    key = "app/rev6/app-rev6.tar.gz"
    digest = _publish(artifacts, key, b"artifact")
    env = {k: v for k, v in artifacts["env"].items() if k != "AWS_CA_BUNDLE"}
    proc = run_fetch(*_args(artifacts, key, digest, tmp_path / "a"), env=env)
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD, proc.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr
    assert not (tmp_path / "a").exists()
