"""The plugin's --run-id (env PHOENIXCI_RUN_ID) names the session's run, and a bad one is refused."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROBE = '''
def test_probe(phoenix_run_id):
    print("RUN-ID", phoenix_run_id)
'''


def run_probe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIXCI_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-c", "/dev/null",
                           "--rootdir", str(tmp_path), *args, str(tmp_path / "test_probe.py")],
                          capture_output=True, text=True, env={**base, **(env or {})}, timeout=60)


def test_run_id_from_the_option_or_the_environment(tmp_path: Path) -> None:
    assert "RUN-ID nightly-42" in run_probe(tmp_path, "--run-id", "nightly-42").stdout
    assert "RUN-ID from-env" in run_probe(tmp_path, env={"PHOENIXCI_RUN_ID": "from-env"}).stdout
    assert "RUN-ID phx-" in run_probe(tmp_path).stdout


def one_line_usage_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 4 and len(lines) == 1 and "Traceback" not in proc.stdout, (proc.stdout, proc.stderr)
    return lines[0]


def test_a_run_id_that_cannot_name_a_bucket_is_refused(tmp_path: Path) -> None:
    line = one_line_usage_error(run_probe(tmp_path, "--run-id", "Bad_ID!"))
    assert "--run-id 'Bad_ID!': use 1-22 lowercase letters, digits or dashes" in line


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--keep", "sometimes"], {}, "--keep 'sometimes': use one of never, on-failure, always"),
    ([], {"PHOENIXCI_KEEP": "yes"}, "--keep 'yes': use one of never, on-failure, always"),
    (["--backend", "gcp://"], {}, "unknown backend 'gcp://'"),
    (["--backend", "moto://?instances=maybe"], {}, "instances='maybe': use on or off"),
    (["--backend", "aws://?region=eu-west-1"], {}, "--accept-aws-cost"),
])
def test_bad_options_are_one_clear_line_and_create_nothing(tmp_path: Path, args: list[str], env: dict[str, str],
                                                           expected: str) -> None:
    line = one_line_usage_error(run_probe(tmp_path, *args, env=env))
    assert expected in line, line
    assert not (tmp_path / "artifacts").exists(), "a refused session made a run directory"


NEEDS_BACKEND = '''
def test_probe(phoenix_backend):
    pass
'''


def test_aws_without_credentials_stops_the_session_with_one_line(tmp_path: Path) -> None:
    """Acknowledged, but no credentials anywhere: the session stops at once with one line that
    names the problem (no test runs, nothing is created). No network: a fresh network namespace."""
    (tmp_path / "test_needs_backend.py").write_text(NEEDS_BACKEND)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIXCI_", "AWS_"))}
    env = {**base, "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.run(["unshare", "--net", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-c", "/dev/null", "--rootdir", str(tmp_path), "--backend", "aws://?region=eu-west-1",
                           "--accept-aws-cost", str(tmp_path / "test_needs_backend.py")],
                          capture_output=True, text=True, env=env, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    lines = [ln for ln in out.splitlines() if "phoenixci:" in ln and "credentials" in ln.lower()]
    assert len(lines) == 1 and "Traceback" not in out, out
    assert not (tmp_path / "artifacts").exists()
