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


def test_a_run_id_that_cannot_name_a_bucket_is_refused(tmp_path: Path) -> None:
    proc = run_probe(tmp_path, "--run-id", "Bad_ID!")
    assert proc.returncode != 0 and "use 1-24 lowercase letters, digits or dashes" in proc.stdout
