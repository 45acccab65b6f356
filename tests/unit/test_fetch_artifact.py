"""infra/files/fetch_artifact.py: the stdlib SigV4 artifact fetcher the app server runs at boot.

Checks that infra/app-server.yaml embeds exactly this file, that its signatures match botocore's,
and how it fails without credentials (a fake IMDSv2 on 127.0.0.1) or with bad arguments. What
needs an AWS API (moto accepting the signatures under IAM enforcement, verified installs,
tampered objects, IMDS role credentials) is in tests/integration/test_fetch_artifact_moto.py.

Run ``python tests/unit/test_fetch_artifact.py --sync`` after editing fetch_artifact.py to copy
it into the template.
"""
from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_kit import REGION, ROOT, SCRIPT, fake_imds, load_fetch_artifact, run_fetch  # noqa: E402

pytestmark = pytest.mark.unit

TEMPLATE = ROOT / "infra" / "app-server.yaml"
EMBED_PATH = "/usr/local/lib/phoenixapp/fetch_artifact.py"
EMBED_INDENT = " " * 16
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


fetch_artifact = load_fetch_artifact()


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
    assert boot.index("systemctl enable --now --no-reload phoenixapp.service") > fetch_at
    assert "daemon-reload" not in boot.replace("No daemon-reload", "")  # one reload fewer per deploy
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


# ------------------------------------------------------------------ failing early
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
