"""infra/files/fetch_artifact.py: the stdlib SigV4 artifact fetcher the app server runs at boot.

Checks that infra/app-server.yaml embeds exactly this file, that its signatures match botocore's
and are accepted by moto with IAM enforcement on, that it installs a verified artifact and
refuses a tampered one (leaving nothing behind), and that it takes role credentials from an
IMDSv2 (a fake one on 127.0.0.1). All traffic stays on 127.0.0.1.

Run ``python tests/unit/test_fetch_artifact.py --sync`` after editing fetch_artifact.py to copy
it into the template.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.server
import importlib.util
import json
import re
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "files" / "fetch_artifact.py"
TEMPLATE = ROOT / "infra" / "app-server.yaml"
EMBED_PATH = "/usr/local/lib/phoenixapp/fetch_artifact.py"
EMBED_INDENT = " " * 16
REGION = "us-east-1"
PSEUDO = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::StackName", "AWS::StackId",
          "AWS::URLSuffix"}


# ------------------------------------------------------------------ template helpers
class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation short-form tags (!Sub, !Ref, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return dict(yaml.load(path.read_text(), Loader=_CfnLoader))  # noqa: S506 - SafeLoader


def user_data_sub(template: dict[str, Any]) -> str:
    """The Fn::Sub string of the app server's UserData."""
    user_data = template["Resources"]["AppServer"]["Properties"]["UserData"]
    return str(user_data["Fn::Base64"]["Fn::Sub"])


def cloud_config(template: dict[str, Any]) -> dict[str, Any]:
    text = user_data_sub(template)
    assert text.startswith("#cloud-config\n")
    return dict(yaml.safe_load(text))


def embedded_files(template: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in cloud_config(template)["write_files"]}


def sync_template() -> None:
    """Copy fetch_artifact.py into the template's write_files entry (keeps everything else)."""
    lines = TEMPLATE.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- path: {EMBED_PATH}")
    content = next(i for i in range(start, len(lines)) if lines[i].strip() == "content: |")
    end = content + 1
    while end < len(lines) and (lines[end].startswith(EMBED_INDENT) or not lines[end].strip()):
        end += 1
    block = [(EMBED_INDENT + line) if line.strip() else "\n"
             for line in SCRIPT.read_text().splitlines(keepends=True)]
    TEMPLATE.write_text("".join(lines[:content + 1] + block + lines[end:]))


# ------------------------------------------------------------------ the script as a module
def _load_module() -> Any:
    spec = importlib.util.spec_from_file_location("fetch_artifact", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_artifact = _load_module()


def run_fetch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


# ------------------------------------------------------------------ template checks
def test_template_embeds_the_script_verbatim() -> None:
    assert embedded_files(load_template())[EMBED_PATH] == SCRIPT.read_text(), (
        "infra/app-server.yaml is out of date: run "
        "python tests/unit/test_fetch_artifact.py --sync")


def test_script_is_safe_inside_fn_sub() -> None:
    text = SCRIPT.read_text()
    assert "${" not in text, "Fn::Sub would substitute or reject ${...} in the script"


def test_fn_sub_references_only_parameters() -> None:
    template = load_template()
    names = set(template["Parameters"]) | PSEUDO
    refs = set(re.findall(r"\$\{([^}!]+)\}", user_data_sub(template)))
    assert refs, "expected parameter references in the user data"
    assert refs <= names, f"not parameters: {sorted(refs - names)}"


def test_bootstrap_script_is_valid_bash() -> None:
    template = load_template()
    rendered = re.sub(r"\$\{[^}]+\}", "x", user_data_sub(template))
    boot = embedded_files({"Resources": {"AppServer": {"Properties": {"UserData": {
        "Fn::Base64": {"Fn::Sub": rendered}}}}}})["/usr/local/lib/phoenixapp/bootstrap.sh"]
    assert boot.startswith("#!/bin/bash\n")
    proc = subprocess.run(["bash", "-n"], input=boot, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_unit_is_hardened_and_starts_only_after_verification() -> None:
    template = load_template()
    files = embedded_files(template)
    unit = files["/usr/local/lib/phoenixapp/phoenixapp.service"]
    for line in ("ExecStart=/usr/bin/python3 -m phoenixapp", "User=phoenixapp",
                 "Environment=PORT=${AppPort}", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "WorkingDirectory=/opt/phoenixapp/${Revision}",
                 "Environment=PYTHONPATH=/opt/phoenixapp/${Revision}"):
        assert line in unit.splitlines(), line
    boot = files["/usr/local/lib/phoenixapp/bootstrap.sh"]
    fetch_at = boot.index("fetch_artifact.py")
    assert boot.index("systemctl enable --now phoenixapp.service") > fetch_at
    assert boot.index("/etc/systemd/system/phoenixapp.service") > fetch_at
    assert "set -euo pipefail" in boot


# ------------------------------------------------------------------ signing
@pytest.mark.parametrize("token", ["", "session-token-value"])
def test_signature_matches_botocore(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = fetch_artifact.object_url("my-bucket", "app/abc/app-abc.tar.gz", "eu-west-1", "")
    assert url == "https://my-bucket.s3.eu-west-1.amazonaws.com/app/abc/app-abc.tar.gz"
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    creds = {"AccessKeyId": "AKIDEXAMPLE", "SecretAccessKey": "secret/key+x", "Token": token}
    ours = fetch_artifact.sign_get(url, "eu-west-1", creds, now=now)

    request = AWSRequest(method="GET", url=url, headers={
        "x-amz-date": ours["x-amz-date"], "x-amz-content-sha256": ours["x-amz-content-sha256"]})
    signer = S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret/key+x", token or None), "s3",
                         "eu-west-1")
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: now.replace(tzinfo=None))
    signer.add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]


def test_path_style_url_with_endpoint() -> None:
    url = fetch_artifact.object_url("b", "app/x y.tar.gz", REGION, "http://10.42.1.1:5000/")
    assert url == "http://10.42.1.1:5000/b/app/x%20y.tar.gz"


# ------------------------------------------------------------------ against moto
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: bytes) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - 127.0.0.1 only
        return bytes(resp.read())


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[dict[str, Any]]:
    """A moto server with IAM enforcement on, a bucket, and a reader limited to app/*.

    moto's state is process-wide, so names are unique and everything is removed afterwards;
    only the auth switch is global, and it is restored.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # Enforcement is process-wide and other tests may have left it on: off for the set-up.
    original = json.loads(_post(endpoint + "/moto-api/reset-auth", b"inf"))
    suffix = uuid.uuid4().hex[:8]
    bucket, reader, publisher = f"artifacts-{suffix}", f"reader-{suffix}", f"pub-{suffix}"
    admin = boto3.Session(aws_access_key_id="admin", aws_secret_access_key="admin",
                          region_name=REGION)
    s3 = admin.client("s3", endpoint_url=endpoint)  # before auth is switched on
    iam = admin.client("iam", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    keys = {}
    for user, action, resource in ((reader, "s3:GetObject", f"arn:aws:s3:::{bucket}/app/*"),
                                   (publisher, "s3:PutObject", f"arn:aws:s3:::{bucket}/*")):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}))
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    _post(endpoint + "/moto-api/reset-auth", b"0")
    try:
        yield {"endpoint": endpoint, "bucket": bucket,
               "publisher": boto3.client(
                   "s3", aws_access_key_id=keys[publisher]["AccessKeyId"],
                   aws_secret_access_key=keys[publisher]["SecretAccessKey"],
                   region_name=REGION, endpoint_url=endpoint),
               "env": {"AWS_ACCESS_KEY_ID": keys[reader]["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": keys[reader]["SecretAccessKey"]}}
    finally:
        _post(endpoint + "/moto-api/reset-auth", b"inf")
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
        for user in (reader, publisher):
            iam.delete_user_policy(UserName=user, PolicyName="p")
            iam.delete_access_key(UserName=user, AccessKeyId=keys[user]["AccessKeyId"])
            iam.delete_user(UserName=user)
        restore = str(original.get("PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT", "inf")).encode()
        _post(endpoint + "/moto-api/reset-auth", restore)
        server.stop()


def _publish(moto: dict[str, Any], key: str, body: bytes, sha_text: str | None = None) -> str:
    """Upload an artifact and its .sha256 (sha256sum format) as the publisher."""
    digest = hashlib.sha256(body).hexdigest()
    moto["publisher"].put_object(Bucket=moto["bucket"], Key=key, Body=body)
    text = sha_text if sha_text is not None else f"{digest}  {key.rsplit('/', 1)[-1]}\n"
    moto["publisher"].put_object(Bucket=moto["bucket"], Key=key + ".sha256",
                                 Body=text.encode())
    return digest


def _args(moto: dict[str, Any], key: str, sha: str, dest: Path) -> list[str]:
    return ["--bucket", moto["bucket"], "--key", key, "--sha256", sha, "--dest", str(dest),
            "--endpoint", moto["endpoint"], "--region", REGION, "--retry-seconds", "0",
            "--timeout", "10"]


def test_downloads_and_verifies(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev1/app-rev1.tar.gz"
    body = b"artifact bytes " * 1000
    digest = _publish(moto_s3, key, body)
    dest = tmp_path / "out" / "app.tar.gz"
    proc = run_fetch(*_args(moto_s3, key, digest, dest), env=moto_s3["env"])
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == body
    assert "verified sha256 " + digest in proc.stderr
    assert [p.name for p in dest.parent.iterdir()] == ["app.tar.gz"]


def test_refuses_tampered_object(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev2/app-rev2.tar.gz"
    digest = _publish(moto_s3, key, b"the real artifact")
    _publish(moto_s3, key, b"tampered artifact", sha_text=f"{digest}  x\n")
    dest = tmp_path / "app.tar.gz"
    proc = run_fetch(*_args(moto_s3, key, digest, dest), env=moto_s3["env"])
    assert proc.returncode == fetch_artifact.EXIT_MISMATCH, proc.stderr
    assert "CHECKSUM MISMATCH" in proc.stderr
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file may be left behind"


def test_refuses_disagreeing_checksum_object(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev3/app-rev3.tar.gz"
    digest = _publish(moto_s3, key, b"artifact", sha_text="0" * 64 + "  x\n")
    proc = run_fetch(*_args(moto_s3, key, digest, tmp_path / "a"), env=moto_s3["env"])
    assert proc.returncode == fetch_artifact.EXIT_MISMATCH, proc.stderr
    assert ".sha256 says" in proc.stderr
    assert not (tmp_path / "a").exists()


def test_missing_object_fails_fast(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    proc = run_fetch(*_args(moto_s3, "app/none/app-none.tar.gz", "0" * 64, tmp_path / "a"),
                     env=moto_s3["env"])
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD, proc.stderr
    assert "HTTP 404" in proc.stderr


def test_denied_outside_app_prefix(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    """moto checks the signature and the policy: the reader may only read app/*."""
    digest = _publish(moto_s3, "other/x.tar.gz", b"secret")
    proc = run_fetch(*_args(moto_s3, "other/x.tar.gz", digest, tmp_path / "a"),
                     env=moto_s3["env"])
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD, proc.stderr
    assert "HTTP 403" in proc.stderr


def test_bad_secret_is_rejected(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev4/app-rev4.tar.gz"
    digest = _publish(moto_s3, key, b"artifact")
    env = {**moto_s3["env"], "AWS_SECRET_ACCESS_KEY": "wrong"}
    proc = run_fetch(*_args(moto_s3, key, digest, tmp_path / "a"), env=env)
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD
    assert "HTTP 403" in proc.stderr and "SignatureDoesNotMatch" in proc.stderr


# ------------------------------------------------------------------ IMDSv2 credentials
class _FakeImds(http.server.BaseHTTPRequestHandler):
    token = "imds-token-123"
    creds: dict[str, str] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802
        ok = self.path == "/latest/api/token" and \
            self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._reply(200 if ok else 400, self.token if ok else "")

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self._reply(401, "")
        elif self.path == "/latest/meta-data/iam/security-credentials/":
            self._reply(200, "app-role")
        elif self.path == "/latest/meta-data/iam/security-credentials/app-role":
            self._reply(200, json.dumps({"Code": "Success", "Token": "", **self.creds}))
        elif self.path == "/latest/meta-data/placement/region":
            self._reply(200, REGION)
        else:
            self._reply(404, "")

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def fake_imds(creds: dict[str, str]) -> Iterator[str]:
    handler = type("Imds", (_FakeImds,), {"creds": creds})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_from_imdsv2(moto_s3: dict[str, Any], tmp_path: Path) -> None:
    key = "app/rev5/app-rev5.tar.gz"
    digest = _publish(moto_s3, key, b"artifact from the role")
    creds = {"AccessKeyId": moto_s3["env"]["AWS_ACCESS_KEY_ID"],
             "SecretAccessKey": moto_s3["env"]["AWS_SECRET_ACCESS_KEY"]}
    dest = tmp_path / "a"
    with fake_imds(creds) as imds:
        args = [a for a in _args(moto_s3, key, digest, dest)]
        region_at = args.index("--region")
        del args[region_at:region_at + 2]  # region from the IMDS too
        proc = run_fetch(*args, "--imds-endpoint", imds, env={})
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == b"artifact from the role"


def test_no_credentials_anywhere(tmp_path: Path) -> None:
    with fake_imds({}) as imds:
        proc = run_fetch("--bucket", "b", "--key", "app/k", "--sha256", "0" * 64,
                         "--dest", str(tmp_path / "a"), "--endpoint", "http://127.0.0.1:9",
                         "--region", REGION, "--imds-endpoint", imds + "/nothing-here",
                         "--retry-seconds", "0", env={})
    assert proc.returncode == fetch_artifact.EXIT_DOWNLOAD
    assert "no credentials" in proc.stderr


def test_rejects_malformed_sha256(tmp_path: Path) -> None:
    proc = run_fetch("--bucket", "b", "--key", "k", "--sha256", "abc", "--dest",
                     str(tmp_path / "a"), env={})
    assert proc.returncode == fetch_artifact.EXIT_USAGE


if __name__ == "__main__":
    if sys.argv[1:] == ["--sync"]:
        sync_template()
        print(f"copied {SCRIPT.relative_to(ROOT)} into {TEMPLATE.relative_to(ROOT)}")
    else:
        sys.exit("usage: python tests/unit/test_fetch_artifact.py --sync")
