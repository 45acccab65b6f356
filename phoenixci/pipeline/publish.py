"""Publish an artifact to S3 under its revision, never overwriting different bytes.

Layout: ``s3://<bucket>/<prefix>/<revision>/<artifact>`` and ``…/<artifact>.sha256``
(``sha256sum`` format); the object also carries its sha256 as metadata ``sha256``. A revision
is immutable: publishing the same bytes again is a no-op, different bytes are refused. The
upload is conditional (``If-None-Match: *``) so two concurrent publishers cannot overwrite
each other, and the stored object is read back and checked after the upload.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from phoenixci.errors import PublishError
from phoenixci.pipeline.package import PackageResult, sha256_file

log = logging.getLogger(__name__)

_ARTIFACT_RE = re.compile(r"^app-([0-9a-f]{40})\.tar\.gz$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishResult:
    """Where an artifact lives in S3, and whether this call uploaded it."""

    bucket: str
    key: str
    sha256_key: str
    sha256: str
    revision: str
    already_published: bool
    url: str


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _translate(e: Exception, bucket: str, key: str, action: str) -> PublishError:
    """One clear line, naming the object and how to fix it, for any AWS failure."""
    where = f"s3://{bucket}/{key}"
    if isinstance(e, NoCredentialsError):
        return PublishError(f"no AWS credentials to {action} {where}; set AWS_PROFILE or "
                            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance role")
    if isinstance(e, EndpointConnectionError):
        return PublishError(f"cannot reach the S3 endpoint to {action} {where} ({e}); is the "
                            "local cloud running, and is AWS_ENDPOINT_URL right?")
    if isinstance(e, ClientError):
        code = _code(e)
        if code in ("NoSuchBucket",):
            return PublishError(f"bucket {bucket!r} does not exist (while trying to {action} "
                                f"{where}); create the infrastructure stack first or pass the "
                                "right bucket")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "ExpiredToken"):
            return PublishError(f"access denied ({code}) to {action} {where}; grant the caller "
                                f"s3:PutObject and s3:GetObject on arn:aws:s3:::{bucket}/{key}, "
                                "or use the CI agent's credentials")
        message = e.response.get("Error", {}).get("Message", "")
        return PublishError(f"S3 error {code} to {action} {where}: {message}")
    return PublishError(f"S3 failure to {action} {where}: {e}")


def _call(what: str, bucket: str, key: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(Bucket=bucket, Key=key, **kwargs)
    except (ClientError, BotoCoreError) as e:
        raise _translate(e, bucket, key, what) from e


def _read_sha256_file(text: str, expected_name: str | None = None) -> str:
    parts = text.split()
    if not parts or not _HEX64.match(parts[0].lower()):
        raise PublishError(f"malformed sha256 file: {text[:80]!r}; expected '<hex>  <filename>'")
    if expected_name and len(parts) > 1 and parts[1].lstrip("*") != expected_name:
        raise PublishError(f"sha256 file names {parts[1]!r}, expected {expected_name!r}")
    return parts[0].lower()


def _existing_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The sha256 of ``key`` if it exists, else ``None`` (403 without ListBucket = unknown)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if _code(e) in ("404", "NoSuchKey", "NotFound"):
            return None
        if _code(e) in ("403", "AccessDenied"):
            log.debug("HeadObject %s denied (no s3:ListBucket?); relying on conditional put", key)
            return None
        raise _translate(e, bucket, key, "inspect") from e
    except BotoCoreError as e:
        raise _translate(e, bucket, key, "inspect") from e
    meta = head.get("Metadata", {}).get("sha256")
    if meta:
        return str(meta).lower()
    body = _call("read", bucket, key, s3.get_object)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _verify_remote(s3: Any, bucket: str, key: str, sha256: str) -> None:
    obj = _call("verify", bucket, key, s3.get_object)
    digest = hashlib.sha256()
    for chunk in iter(lambda: obj["Body"].read(_CHUNK), b""):
        digest.update(chunk)
    meta = obj.get("Metadata", {}).get("sha256", "")
    if digest.hexdigest() != sha256 or meta.lower() != sha256:
        raise PublishError(f"s3://{bucket}/{key} does not match after upload (content "
                           f"{digest.hexdigest()}, metadata {meta or '-'}, expected {sha256}); "
                           "delete it and publish again")


def _local_artifact(artifact: PackageResult | Path, revision: str | None) -> tuple[Path, str, str]:
    if isinstance(artifact, PackageResult):
        path, sha256, rev = artifact.path, artifact.sha256, revision or artifact.revision
    else:
        path = Path(artifact)
        match = _ARTIFACT_RE.match(path.name)
        rev = revision or (match.group(1) if match else "")
        if not rev:
            raise PublishError(f"cannot tell the revision of {path.name}; pass revision=")
        sha256 = ""
    if not path.is_file():
        raise PublishError(f"artifact {path} does not exist; run the package step first")
    actual = sha256_file(path)
    if sha256 and actual != sha256:
        raise PublishError(f"{path} changed since it was packaged (sha256 {actual}, "
                           f"expected {sha256}); package it again")
    side = path.with_name(path.name + ".sha256")
    if side.is_file() and _read_sha256_file(side.read_text(), path.name) != actual:
        raise PublishError(f"{path} does not match {side.name}; package it again")
    return path, actual, rev


def publish(s3_client: Any, bucket: str, artifact: PackageResult | Path, *,
            revision: str | None = None, prefix: str = "app", existing: str = "refuse") -> PublishResult:
    """Upload ``artifact`` to ``<prefix>/<revision>/<name>`` (+ ``.sha256``) and verify it.

    A revision is published once: when other bytes are already there, ``existing="refuse"``
    raises PublishError, ``existing="reuse"`` keeps the published artifact (a rebuild of the same
    revision differs only in its build number) and returns it, so the deploy uses those bytes.
    """
    if existing not in ("refuse", "reuse"):
        raise PublishError(f"existing={existing!r}: use refuse or reuse")
    path, sha256, rev = _local_artifact(artifact, revision)
    key = f"{prefix.strip('/')}/{rev}/{path.name}" if prefix.strip("/") else f"{rev}/{path.name}"
    sha_key = key + ".sha256"
    url = f"s3://{bucket}/{key}"
    sha_body = f"{sha256}  {path.name}\n".encode()

    def result(already: bool) -> PublishResult:
        return PublishResult(bucket=bucket, key=key, sha256_key=sha_key, sha256=sha256,
                             revision=rev, already_published=already, url=url)

    def refuse(existing: str) -> PublishError:
        return PublishError(f"revision {rev} is already published at {url} with sha256 "
                            f"{existing}; refusing to overwrite with {sha256}; "
                            "publish a new revision")

    existing_sha = _existing_sha256(s3_client, bucket, key)
    already = existing_sha is not None
    if existing_sha is None:
        try:
            with open(path, "rb") as body:
                s3_client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*",
                                     ContentType="application/gzip", Metadata={"sha256": sha256})
        except ClientError as e:
            if _code(e) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise _translate(e, bucket, key, "upload") from e
            log.info("%s appeared while publishing; comparing checksums", url)
            existing_sha, already = _existing_sha256(s3_client, bucket, key), True
        except BotoCoreError as e:
            raise _translate(e, bucket, key, "upload") from e
    if already and existing_sha != sha256:
        if existing == "reuse" and existing_sha:
            log.info("%s was published before with sha256 %s: keeping it", url, existing_sha)
            _verify_remote(s3_client, bucket, key, existing_sha)
            return PublishResult(bucket=bucket, key=key, sha256_key=sha_key, sha256=existing_sha,
                                 revision=rev, already_published=True, url=url)
        raise refuse(existing_sha or "unknown")
    _verify_remote(s3_client, bucket, key, sha256)
    _call("upload", bucket, sha_key, s3_client.put_object, Body=sha_body,
          ContentType="text/plain", Metadata={"sha256": sha256})
    log.info("%s %s (sha256 %s)", "already published" if already else "published", url, sha256)
    return result(already)


def fetch_and_verify(s3_client: Any, bucket: str, key: str, dest: Path) -> Path:
    """Download ``key`` to ``dest`` (a file, or a directory to put it in) and check its sha256.

    The expected checksum is the ``<key>.sha256`` object; the object's ``sha256`` metadata must
    agree when present. On mismatch nothing is left at ``dest`` and ``PublishError`` is raised.
    """
    name = key.rsplit("/", 1)[-1]
    dest = Path(dest)
    target = dest / name if dest.is_dir() else dest
    sha_obj = _call("read", bucket, key + ".sha256", s3_client.get_object)
    expected = _read_sha256_file(sha_obj["Body"].read().decode(errors="replace"), name)
    obj = _call("download", bucket, key, s3_client.get_object)
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in iter(lambda: obj["Body"].read(_CHUNK), b""):
                digest.update(chunk)
                f.write(chunk)
        actual = digest.hexdigest()
        meta = obj.get("Metadata", {}).get("sha256", "").lower()
        if actual != expected or (meta and meta != expected):
            raise PublishError(f"s3://{bucket}/{key} has sha256 {actual} but {name}.sha256 says "
                               f"{expected} (metadata {meta or '-'}); the object is corrupt or "
                               "tampered with: do not deploy it; delete it and publish again")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("fetched s3://%s/%s to %s (sha256 %s verified)", bucket, key, target, actual)
    return target


@dataclass(frozen=True)
class Published:
    """A revision's artifact already in the bucket (what a rollback redeploys)."""

    bucket: str
    key: str
    sha256: str
    revision: str


def find_published(s3_client: Any, bucket: str, revision: str, *, prefix: str = "app") -> Published:
    """The artifact published for ``revision``, with the sha256 it was published with."""
    from phoenixci.pipeline.package import artifact_name

    key = f"{prefix.strip('/')}/{revision}/{artifact_name(revision)}"
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key + ".sha256")["Body"].read()
    except ClientError as e:
        if _code(e) in ("NoSuchKey", "404"):
            raise PublishError(f"revision {revision} was never published to s3://{bucket}/{key}: "
                               "push it through the pipeline first (or check the sha)") from e
        raise _translate(e, bucket, key + ".sha256", "read") from e
    except BotoCoreError as e:
        raise _translate(e, bucket, key + ".sha256", "read") from e
    sha256 = _read_sha256_file(body.decode(errors="replace"), artifact_name(revision))
    return Published(bucket=bucket, key=key, sha256=sha256, revision=revision)
