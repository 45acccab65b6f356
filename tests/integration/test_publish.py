"""publish() and fetch_and_verify() against a real moto S3 server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from phoenixci.errors import PublishError
from phoenixci.pipeline.package import PackageResult
from phoenixci.pipeline.publish import PublishResult, fetch_and_verify, find_published, publish
from phoenixci.stacks import empty_bucket
from phoenixci.util import free_port

pytestmark = pytest.mark.integration

REV = "0123456789abcdef0123456789abcdef01234567"

@pytest.fixture(scope="module")
def endpoint(phoenix_backend: Any) -> str:
    """The session's embedded AWS (IAM enforced); tests use its admin or scoped credentials."""
    if not phoenix_backend.endpoint_url:
        pytest.skip("these tests need an endpoint URL (moto:// or localstack://)")
    return str(phoenix_backend.endpoint_url)


@pytest.fixture
def s3(phoenix_backend: Any) -> Any:
    return phoenix_backend.client("s3")


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"phoenixci-test-{abs(hash(request.node.name)) % 10**8}"
    s3.create_bucket(Bucket=name)
    yield name
    empty_bucket(s3, name)
    s3.delete_bucket(Bucket=name)


def make_artifact(directory: Path, content: bytes, revision: str = REV) -> PackageResult:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"app-{revision}.tar.gz"
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    sha_path = path.with_name(path.name + ".sha256")
    sha_path.write_text(f"{digest}  {path.name}\n")
    return PackageResult(path=path, sha256_path=sha_path, sha256=digest, revision=revision,
                         build="1", manifest={})


def test_publish_uploads_artifact_checksum_and_metadata(s3: Any, bucket: str,
                                                        tmp_path: Path) -> None:
    art = make_artifact(tmp_path, b"artifact bytes")
    result = publish(s3, bucket, art)
    key = f"app/{REV}/app-{REV}.tar.gz"
    assert result == PublishResult(bucket=bucket, key=key, sha256_key=key + ".sha256",
                                   sha256=art.sha256, revision=REV, already_published=False,
                                   url=f"s3://{bucket}/{key}")
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == b"artifact bytes"
    assert obj["Metadata"]["sha256"] == art.sha256
    sha_text = s3.get_object(Bucket=bucket, Key=key + ".sha256")["Body"].read().decode()
    assert sha_text == f"{art.sha256}  app-{REV}.tar.gz\n"


def test_republishing_the_same_bytes_is_a_no_op(s3: Any, bucket: str, tmp_path: Path) -> None:
    art = make_artifact(tmp_path, b"same")
    first = publish(s3, bucket, art)
    etag = s3.head_object(Bucket=bucket, Key=first.key)["ETag"]
    again = publish(s3, bucket, art.path)  # a bare path: revision from the file name
    assert again.already_published and not first.already_published
    assert again.key == first.key and again.sha256 == first.sha256
    assert s3.head_object(Bucket=bucket, Key=first.key)["ETag"] == etag


def test_republishing_different_bytes_is_refused(s3: Any, bucket: str, tmp_path: Path) -> None:
    first = publish(s3, bucket, make_artifact(tmp_path / "a", b"original"))
    other = make_artifact(tmp_path / "b", b"rebuilt differently")
    with pytest.raises(PublishError, match=rf"revision {REV} is already published .*"
                                           rf"sha256 {first.sha256}; refusing to overwrite "
                                           rf"with {other.sha256}; publish a new revision"):
        publish(s3, bucket, other)
    assert s3.get_object(Bucket=bucket, Key=first.key)["Body"].read() == b"original"


def test_a_rebuild_can_reuse_what_was_published(s3: Any, bucket: str, tmp_path: Path) -> None:
    """The pipeline's publish step (--existing reuse): a rebuild of a revision keeps the artifact
    published first, and says which bytes the deploy must use."""
    first = publish(s3, bucket, make_artifact(tmp_path / "a", b"build 1"))
    again = publish(s3, bucket, make_artifact(tmp_path / "b", b"build 2"), existing="reuse")
    assert again.already_published and again.sha256 == first.sha256 and again.key == first.key
    assert s3.get_object(Bucket=bucket, Key=first.key)["Body"].read() == b"build 1"
    assert find_published(s3, bucket, REV).sha256 == first.sha256
    with pytest.raises(PublishError, match="existing='overwrite'"):
        publish(s3, bucket, make_artifact(tmp_path / "c", b"build 3"), existing="overwrite")


def test_missing_bucket_is_a_clear_publish_error(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"bucket 'no-such-bucket' does not exist.*create") as e:
        publish(s3, "no-such-bucket", make_artifact(tmp_path, b"x"))
    assert "\n" not in str(e.value)
    assert "Traceback" not in str(e.value)


def test_local_artifact_changed_after_packaging_is_refused(s3: Any, bucket: str,
                                                          tmp_path: Path) -> None:
    art = make_artifact(tmp_path, b"packaged")
    art.path.write_bytes(b"edited afterwards")
    with pytest.raises(PublishError, match="changed since it was packaged"):
        publish(s3, bucket, art)


def test_fetch_and_verify_round_trip(s3: Any, bucket: str, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "build", b"good bytes")
    result = publish(s3, bucket, art)
    dest = tmp_path / "dl"
    dest.mkdir()
    got = fetch_and_verify(s3, bucket, result.key, dest)
    assert got == dest / art.path.name
    assert got.read_bytes() == b"good bytes"


def test_fetch_and_verify_detects_a_tampered_object(s3: Any, bucket: str, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "build", b"good bytes")
    result = publish(s3, bucket, art)
    s3.put_object(Bucket=bucket, Key=result.key, Body=b"evil bytes",
                  Metadata={"sha256": art.sha256})
    target = tmp_path / "dl" / "app.tar.gz"
    with pytest.raises(PublishError, match="corrupt or tampered"):
        fetch_and_verify(s3, bucket, result.key, target)
    assert not target.exists()
    assert not list(target.parent.iterdir())
    with pytest.raises(PublishError, match="does not match after upload"):
        publish(s3, bucket, art)


def test_fetch_missing_key_is_a_clear_publish_error(s3: Any, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=rf"s3://{bucket}/app/nope.tar.gz.sha256"):
        fetch_and_verify(s3, bucket, "app/nope.tar.gz", tmp_path)


def test_unreachable_endpoint_is_a_clear_publish_error(tmp_path: Path,
                                                       endpoint: str) -> None:
    dead = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}",
                        region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(PublishError, match="cannot reach the S3 endpoint"):
        publish(dead, "bucket", make_artifact(tmp_path, b"x"))


def test_no_credentials_is_a_clear_publish_error(tmp_path: Path, endpoint: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
    with pytest.raises(PublishError, match="no AWS credentials"):
        publish(client, "bucket", make_artifact(tmp_path, b"x"))


def test_access_denied_names_the_key_and_the_permission(phoenix_backend: Any, bucket: str,
                                                        tmp_path: Path) -> None:
    """A caller that may only read gets a real AccessDenied from the enforcing API."""
    if phoenix_backend.scheme == "localstack":
        pytest.skip("needs IAM enforced, which LocalStack does only with ENFORCE_IAM=1 (Pro): moto:// or aws://")
    iam = phoenix_backend.client("iam")
    user = f"reader-{abs(hash(tmp_path)) % 10**8}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    try:
        reader = phoenix_backend.client("s3", phoenix_backend.session_for(key))
        target = f"app/{REV}/app-{REV}.tar.gz"
        with pytest.raises(PublishError, match=rf"access denied .*s3://{bucket}/{target}; grant "
                                               r"the caller s3:PutObject"):
            publish(reader, bucket, make_artifact(tmp_path, b"x"))
        assert "Contents" not in phoenix_backend.client("s3").list_objects_v2(Bucket=bucket)
    finally:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=user, PolicyName="read")
        iam.delete_user(UserName=user)


class _BlindHead:
    """An S3 client whose first HeadObject says 404, as if another publisher raced us."""

    def __init__(self, client: Any) -> None:
        self._client, self._blind = client, True

    def head_object(self, **kwargs: Any) -> Any:
        if self._blind:
            self._blind = False
            raise self._client.exceptions.ClientError(
                {"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return self._client.head_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_concurrent_publish_cannot_overwrite(s3: Any, bucket: str, tmp_path: Path) -> None:
    first = publish(s3, bucket, make_artifact(tmp_path / "a", b"winner"))
    with pytest.raises(PublishError, match="refusing to overwrite"):
        publish(_BlindHead(s3), bucket, make_artifact(tmp_path / "b", b"loser"))
    assert s3.get_object(Bucket=bucket, Key=first.key)["Body"].read() == b"winner"
    same = publish(_BlindHead(s3), bucket, make_artifact(tmp_path / "c", b"winner"))
    assert same.already_published
