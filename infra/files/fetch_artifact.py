#!/usr/bin/env python3
"""Download one S3 object with SigV4 (stdlib only) and install it only if its sha256 matches.

Runs on a fresh app server at boot, before any AWS tooling exists: python3 is all there is.
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN when set,
else from the instance role through IMDSv2 (token, then iam/security-credentials/<role>).
With --endpoint (or AWS_ENDPOINT_URL) the object is read path-style from ENDPOINT/BUCKET/KEY,
otherwise virtual-hosted from https://BUCKET.s3.REGION.amazonaws.com/KEY. HTTPS is verified as
boto3 does it: against AWS_CA_BUNDLE when set, else against the system's CA store.

The object is streamed to a temporary file beside --dest while hashing. It is renamed to --dest
only when its sha256 equals --sha256 and equals the first word of KEY.sha256 (sha256sum format)
when that object exists. Exit codes: 0 installed, 2 usage, 3 download failed, 4 checksum mismatch.

This file is embedded verbatim in infra/app-server.yaml (inside Fn::Sub), so it must never
contain a dollar sign followed by an opening brace; tests/unit/test_fetch_artifact.py checks it.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

EXIT_OK, EXIT_USAGE, EXIT_DOWNLOAD, EXIT_MISMATCH = 0, 2, 3, 4
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
IMDS_DEFAULT = "http://169.254.169.254"
CHUNK = 1 << 20


class FetchError(Exception):
    """A download failed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class ChecksumMismatch(Exception):
    """The downloaded bytes are not the expected artifact."""


def log(message: str) -> None:
    print("fetch_artifact: " + message, file=sys.stderr, flush=True)


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _imds_get(base: str, path: str, token: str, timeout: float) -> str:
    req = urllib.request.Request(base + path, headers={"X-aws-ec2-metadata-token": token})
    with _no_proxy_opener().open(req, timeout=timeout) as resp:
        return resp.read().decode()


def _imds_token(base: str, timeout: float) -> str:
    req = urllib.request.Request(base + "/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    with _no_proxy_opener().open(req, timeout=timeout) as resp:
        return resp.read().decode()


def get_credentials(imds: str, timeout: float = 2.0) -> dict[str, str]:
    """Access key, secret and session token: from the environment, else from the IMDS."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return {"AccessKeyId": env["AWS_ACCESS_KEY_ID"],
                "SecretAccessKey": env["AWS_SECRET_ACCESS_KEY"],
                "Token": env.get("AWS_SESSION_TOKEN", "")}
    try:
        token = _imds_token(imds, timeout)
        roles = _imds_get(imds, "/latest/meta-data/iam/security-credentials/", token, timeout)
        role = roles.split()[0] if roles.split() else ""
        if not role:
            raise FetchError("the instance has no IAM role (no instance profile attached?)")
        doc = json.loads(_imds_get(
            imds, "/latest/meta-data/iam/security-credentials/" + role, token, timeout))
    except (OSError, ValueError) as e:
        raise FetchError("no credentials in the environment and none from the IMDS at "
                         + imds + ": " + str(e)) from e
    if doc.get("Code", "Success") != "Success" or not doc.get("AccessKeyId"):
        raise FetchError("the IMDS returned no usable role credentials: " + json.dumps(doc))
    return {"AccessKeyId": doc["AccessKeyId"], "SecretAccessKey": doc["SecretAccessKey"],
            "Token": doc.get("Token", "")}


def get_region(imds: str, timeout: float = 2.0) -> str:
    """AWS_REGION / AWS_DEFAULT_REGION, else the IMDS placement region, else us-east-1."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        token = _imds_token(imds, timeout)
        return _imds_get(imds, "/latest/meta-data/placement/region", token, timeout).strip()
    except OSError:
        return "us-east-1"


def object_url(bucket: str, key: str, region: str, endpoint: str) -> str:
    """Path-style URL under a custom endpoint, else the virtual-hosted regional S3 URL."""
    quoted_key = urllib.parse.quote(key, safe="/~")
    if endpoint:
        return endpoint.rstrip("/") + "/" + urllib.parse.quote(bucket, safe="") + "/" + quoted_key
    return "https://" + bucket + ".s3." + region + ".amazonaws.com/" + quoted_key


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign_get(url: str, region: str, creds: dict[str, str],
             now: datetime.datetime | None = None) -> dict[str, str]:
    """Headers for an AWS Signature Version 4 signed GET of ``url`` (service s3)."""
    now = now or datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if creds.get("Token"):
        headers["x-amz-security-token"] = creds["Token"]
    names = sorted(headers)
    canonical_headers = "".join(name + ":" + headers[name].strip() + "\n" for name in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        ["GET", parts.path or "/", parts.query, canonical_headers, signed_headers, EMPTY_SHA256])
    scope = day + "/" + region + "/s3/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(("AWS4" + creds["SecretAccessKey"]).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=" + creds["AccessKeyId"] + "/"
                                + scope + ", SignedHeaders=" + signed_headers
                                + ", Signature=" + signature)
    del headers["host"]  # urllib sets Host itself, from the same URL
    return headers


def _tls_context() -> ssl.SSLContext:
    """Certificates verified against AWS_CA_BUNDLE when set (as boto3), else the system store."""
    return ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)


def _open(url: str, region: str, creds: dict[str, str], timeout: float):  # noqa: ANN202
    req = urllib.request.Request(url, headers=sign_get(url, region, creds))
    try:
        return urllib.request.urlopen(req, timeout=timeout, context=_tls_context())  # noqa: S310
    except urllib.error.HTTPError as e:
        body = e.read(2000).decode(errors="replace")
        code = re.search(r"<Code>([^<]+)</Code>", body)
        reason = code.group(1) if code else e.reason
        # 403 can be IAM propagation right after boot, 5xx and throttling are transient.
        retry = e.code in (403, 408, 429) or e.code >= 500
        raise FetchError("GET " + url + " -> HTTP " + str(e.code) + " " + str(reason),
                         retry=retry) from e
    except OSError as e:
        raise FetchError("GET " + url + " failed: " + str(e)) from e


def download(url: str, region: str, creds: dict[str, str], dest_dir: str,
             timeout: float) -> tuple[str, str]:
    """Stream ``url`` into a temporary file in ``dest_dir``; return (path, sha256 hex)."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, _open(url, region, creds, timeout) as resp:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, digest.hexdigest()


def read_small(url: str, region: str, creds: dict[str, str], timeout: float) -> str | None:
    """The text of a small object, or None when it does not exist."""
    try:
        with _open(url, region, creds, timeout) as resp:
            return resp.read(4096).decode(errors="replace")
    except FetchError as e:
        if "HTTP 404" in str(e):
            return None
        raise


def fetch(args: argparse.Namespace) -> str:
    """Download, verify and install the artifact; return its sha256."""
    expected = args.sha256.lower()
    dest = os.path.abspath(args.dest)
    dest_dir = os.path.dirname(dest)
    os.makedirs(dest_dir, exist_ok=True)
    creds = get_credentials(args.imds_endpoint)
    region = args.region or get_region(args.imds_endpoint)
    url = object_url(args.bucket, args.key, region, args.endpoint)
    log("downloading " + url)
    tmp, actual = download(url, region, creds, dest_dir, args.timeout)
    try:
        if actual != expected:
            raise ChecksumMismatch("s3://" + args.bucket + "/" + args.key + " has sha256 "
                                   + actual + ", expected " + expected)
        if not args.no_checksum_object:
            text = read_small(url + ".sha256", region, creds, args.timeout)
            if text is None:
                raise FetchError("checksum object " + args.key + ".sha256 does not exist")
            published = (text.split() or [""])[0].lower()
            if published != expected:
                raise ChecksumMismatch(args.key + ".sha256 says " + published
                                       + ", expected " + expected)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return actual


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--sha256", required=True, help="expected hex sha256 of the object")
    p.add_argument("--dest", required=True, help="file to create when the checksum matches")
    p.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", ""),
                   help="S3 endpoint URL (path-style); default AWS_ENDPOINT_URL or AWS S3")
    p.add_argument("--region", default="", help="default AWS_REGION, IMDS or us-east-1")
    p.add_argument("--imds-endpoint", default=os.environ.get(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", IMDS_DEFAULT).rstrip("/"))
    p.add_argument("--retry-seconds", type=float, default=180.0,
                   help="keep retrying transient failures for this long")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout")
    p.add_argument("--no-checksum-object", action="store_true",
                   help="do not require KEY.sha256 to exist and agree")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        p.error("--sha256 must be 64 hex digits")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.retry_seconds
    pause = 1.0
    while True:
        try:
            digest = fetch(args)
        except ChecksumMismatch as e:
            log("CHECKSUM MISMATCH, refusing to install the artifact: " + str(e))
            return EXIT_MISMATCH
        except FetchError as e:
            if not e.retry or time.monotonic() + pause > deadline:
                log("download FAILED: " + str(e))
                return EXIT_DOWNLOAD
            log("retrying in " + str(pause) + " s: " + str(e))
            time.sleep(pause)
            pause = min(pause * 2, 15.0)
            continue
        log("verified sha256 " + digest + ", installed " + os.path.abspath(args.dest))
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
