"""The CLI turns bad input into one clear line and exit status 1, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    # never let botocore look for credentials on an instance metadata service
    base.update({"AWS_EC2_METADATA_DISABLED": "true", "COLUMNS": "200"})
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "phoenixci.cli", *args], capture_output=True, text=True,
                          env=base, cwd=cwd, timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    __tracebackhide__ = True
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), lines
    assert fragment in lines[0], lines[0]


def test_unknown_backend_url() -> None:
    proc = run_cli("leaks", "--backend", "gcp://project")
    assert_one_line_error(proc, "unknown backend 'gcp://'")


def test_missing_aws_credentials(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    proc = run_cli("leaks", "--backend", "aws://?region=eu-west-1", env=env)
    assert_one_line_error(proc, "no AWS credentials found")


def test_unknown_aws_profile(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    proc = run_cli("leaks", "--backend", "aws://?region=eu-west-1&profile=ghost", env=env)
    assert_one_line_error(proc, "AWS profile 'ghost' is not configured")


def test_package_outside_a_git_repository(tmp_path: Path) -> None:
    proc = run_cli("package", "--repo", str(tmp_path), "--out", str(tmp_path / "dist"))
    assert_one_line_error(proc, str(tmp_path))


def test_debug_shows_the_traceback() -> None:
    proc = run_cli("--debug", "leaks", "--backend", "gcp://")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
