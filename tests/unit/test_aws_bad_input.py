"""Bad input on the real-AWS path: one clear line on stderr, exit 1, no traceback, nothing made.

Each command runs in a subprocess with no AWS credentials anywhere (an empty HOME, no AWS_*
variables, the instance metadata lookup disabled), so the credential chain fails inside
botocore before any request. As root, where ``unshare`` exists, the command also runs in a
network namespace of its own with nothing but loopback: proof it needs no network to fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

AWS = "aws://?region=eu-west-1"
ACK_HINT = "acknowledge the cost with --accept-aws-cost or PHOENIXCI_ACCEPT_AWS_COST=1"
NO_CREDENTIALS = "no AWS credentials found for backend aws://?region=eu-west-1"


def _isolated() -> list[str]:
    if os.geteuid() == 0 and shutil.which("unshare"):
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", "--net"]
    return []


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "empty-home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    base.update({"HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true", "COLUMNS": "200",
                 "AWS_CONFIG_FILE": str(home / "no-config"),
                 "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials")})
    base.update(env or {})
    return subprocess.run([*_isolated(), sys.executable, "-m", "phoenixci.cli", *args], capture_output=True,
                          text=True, env=base, timeout=60)


def one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> str:
    __tracebackhide__ = True
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["up", "demo"])
def test_aws_without_cost_acknowledgement(tmp_path: Path, command: str) -> None:
    env_dir = tmp_path / "env"
    extra = ["--env-dir", str(env_dir)] if command == "up" else []
    proc = run_cli(tmp_path, command, "--backend", AWS, "--admin-cidr", "203.0.113.7/32", *extra)
    line = one_line_error(proc, "aws:// creates billable resources")
    assert line.endswith(ACK_HINT)
    assert f"`phoenixci {command}`" in line and "t3.small" in line and "$" in line
    assert proc.stdout == ""
    assert not env_dir.exists()  # refused before anything, even local state


@pytest.mark.parametrize("command", ["up", "demo"])
def test_aws_without_credentials(tmp_path: Path, command: str) -> None:
    env_dir = tmp_path / "env"
    extra = ["--env-dir", str(env_dir)] if command == "up" else []
    proc = run_cli(tmp_path, command, "--backend", AWS, "--accept-aws-cost", "--admin-cidr", "203.0.113.7/32",
                   *extra)
    one_line_error(proc, NO_CREDENTIALS)
    assert "AWS cost estimate" in proc.stdout  # the estimate is shown first
    assert not env_dir.exists()


def test_acknowledgement_from_the_environment(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    proc = run_cli(tmp_path, "up", "--backend", AWS, "--admin-cidr", "203.0.113.7/32", "--env-dir", str(env_dir),
                   env={"PHOENIXCI_ACCEPT_AWS_COST": "1"})
    one_line_error(proc, NO_CREDENTIALS)


def test_removing_needs_no_acknowledgement(tmp_path: Path) -> None:
    for command in ("leaks", "clean"):
        one_line_error(run_cli(tmp_path, command, "--backend", AWS), NO_CREDENTIALS)
