"""A user's pytest session with phoenixci's fixtures, run as a user runs it (pytest in a
subprocess): the end-of-session leak check fails a session that leaks, ``--keep=on-failure``
keeps a failed run that ``phoenixci clean --run-id`` then removes, and a signal in any phase of
the fixture chain leaves nothing behind."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from phoenixci import leaks
from phoenixci.backends import get_backend
from phoenixci.localcloud import daemon
from phoenixci.localcloud.hostcheck import cloud_tag, host_leftovers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# every session writes where its cloud lives, so the test can look for its leftovers afterwards
CONFTEST = '''
import json, os, pytest

@pytest.fixture(scope="session", autouse=True)
def _record_cloud(request):
    if "phoenix_backend" not in request.fixturenames:
        return
    backend = request.getfixturevalue("phoenix_backend")
    cloud = getattr(backend, "cloud", None)
    state_dir = str(cloud.state_dir) if cloud is not None else backend.options.get("state-dir", "")
    with open(os.environ["SESSION_RECORD"], "w") as f:
        json.dump({"state_dir": state_dir, "run_id": request.getfixturevalue("phoenix_run_id")}, f)
'''


def session(tmp_path: Path, test_source: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_user.py").write_text(test_source)
    record = tmp_path / "record.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIXCI_", "AWS_"))}
    base.update(SESSION_RECORD=str(record), AWS_EC2_METADATA_DISABLED="true", COLUMNS="200", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "/dev/null",
                           "--rootdir", str(tmp_path), "--run-dir", str(tmp_path / "runs"),
                           "--app-source", str(ROOT / "app"), *args, str(tmp_path / "test_user.py")],
                          capture_output=True, text=True, env=base, timeout=timeout, cwd=tmp_path)
    return proc, (json.loads(record.read_text()) if record.exists() else {})


def nothing_left_on_the_host(record: dict[str, str]) -> None:
    assert record.get("state_dir"), "the session never started its cloud"
    left = host_leftovers(cloud_tag(record["state_dir"]), record["state_dir"])
    assert left == [], f"the session's cloud left {left}"


LEAKS_A_KEY_PAIR = '''
def test_forgets_to_delete(phoenix_backend, phoenix_run_id):
    phoenix_backend.client("ec2").create_key_pair(KeyName="forgotten-" + phoenix_run_id, TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": "phoenixci:run-id", "Value": phoenix_run_id}]}])
'''

LEAKS_A_NAMESPACE = '''
import subprocess

def test_leaves_a_namespace(phoenix_backend):
    subprocess.run(["ip", "netns", "add", phoenix_backend.cloud.runtime.tag + "-leak0"], check=True)
'''


def test_the_leak_check_fails_a_session_that_leaks_a_tagged_resource(tmp_path: Path) -> None:
    proc, record = session(tmp_path, LEAKS_A_KEY_PAIR, "--run-id", f"leak-{secrets.token_hex(3)}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 passed, 1 error" in out and "the session left 1 resource(s) of its runs" in out, out
    assert f"key-pair forgotten-{record['run_id']}" in out, out
    nothing_left_on_the_host(record)


def test_the_leak_check_fails_a_session_that_leaks_a_namespace_of_its_cloud(tmp_path: Path) -> None:
    proc, record = session(tmp_path, LEAKS_A_NAMESPACE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 passed, 1 error" in out, out
    assert "leak0" in out and "LeakError" in out, out
    nothing_left_on_the_host(record)  # the cloud's stop swept it, and said so


FAILS_WITH_INFRASTRUCTURE = '''
def test_something_is_wrong(phoenix_infra):
    assert phoenix_infra.stack.outputs["ArtifactBucket"]
    assert False, "on purpose"
'''


def test_keep_on_failure_keeps_a_reachable_run_that_clean_removes(tmp_path: Path) -> None:
    run_id = f"kept-{secrets.token_hex(3)}"
    proc, record = session(tmp_path, FAILS_WITH_INFRASTRUCTURE, "--keep=on-failure", "--run-id", run_id)
    out = proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / run_id
    try:
        assert proc.returncode == 1 and "1 failed in" in out, out
        assert f"kept run {run_id} (--keep=on-failure)" in out, out
        assert f"PHOENIXCI_ENV_DIR={run_dir} phoenixci clean --run-id {run_id}" in out, out
        assert f"run directory of this session: {run_dir}" in out, out
        # the cloud outlived pytest, and the run's resources are reachable through it
        cloud_dir = Path(record["state_dir"])
        assert cloud_dir == run_dir / "cloud" and daemon.running_pid(cloud_dir) is not None
        with get_backend(f"moto://?state-dir={cloud_dir}") as backend:
            kept = leaks.leftovers(backend, run_id)
        assert any(item.startswith(f"stack phoenixci-{run_id}") for item in kept), kept
    finally:
        clean = subprocess.run([sys.executable, "-m", "phoenixci", "clean", "--run-id", run_id], capture_output=True,
                               text=True, timeout=300, env={**os.environ, "PHOENIXCI_ENV_DIR": str(run_dir)})
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"clean: run {run_id} removed" in clean.stdout
    assert daemon.running_pid(run_dir / "cloud") is None
    nothing_left_on_the_host(record)


PASSES = '''
def test_fine(phoenix_infra):
    assert phoenix_infra.stack.outputs["ArtifactBucket"]
'''


def test_a_passed_session_leaves_nothing_even_with_keep_on_failure(tmp_path: Path) -> None:
    proc, record = session(tmp_path, PASSES, "--keep=on-failure")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kept run" not in proc.stdout
    assert not (tmp_path / "runs" / record["run_id"]).exists(), "a passed session's run directory stayed"
    assert daemon.running_pid(Path(record["state_dir"])) is None
    nothing_left_on_the_host(record)


RELEASES = '''
def test_release(phoenix_release, push_commit):
    assert push_commit({"NOTES": "a change"}, "a change").succeeded
'''


@pytest.mark.interruption
@pytest.mark.parametrize("phase", ["stack", "playbook", "build", "teardown"])
def test_a_signal_in_any_phase_of_the_chain_leaves_nothing(tmp_path: Path, phase: str) -> None:
    """SIGTERM lands in the named phase for sure (the test-only hook): pytest tears down every
    fixture that was set up; the leak checks of the session find nothing; nothing is on the host."""
    proc, record = session(tmp_path, RELEASES, env={"PHOENIXCI_TEST_SIGNAL_AT": phase})
    out = proc.stdout + proc.stderr
    if phase == "teardown":  # the signal lands in a shielded teardown: it finishes, the session passes
        assert proc.returncode == 0 and "1 passed in" in out, out[-3000:]
    else:
        assert proc.returncode == 2 and "KeyboardInterrupt" in out and "signal SIGTERM" in out, out[-3000:]
    assert "LeakError" not in out, out[-3000:]
    nothing_left_on_the_host(record)


FAILS_AFTER_A_RELEASE = '''
def test_something_is_wrong(phoenix_release):
    assert False, "on purpose"
'''


def test_a_failed_session_keeps_every_kind_of_log_in_its_run_directory(tmp_path: Path) -> None:
    proc, record = session(tmp_path, FAILS_AFTER_A_RELEASE)
    out = proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / record["run_id"]
    assert proc.returncode == 1 and "1 failed in" in out and "LeakError" not in out, out[-3000:]
    assert f"run directory of this session: {run_dir}" in out, out[-3000:]
    logs = run_dir / "logs"
    names = {str(p.relative_to(logs)) for p in logs.rglob("*") if p.is_file() and p.stat().st_size}
    assert any(n.startswith("site-") for n in names), names                          # the playbook
    for step in ("checkout", "test", "package", "publish", "deploy"):                  # every build step
        assert any(n.startswith("builds/0001-") and n.endswith(f"-{step}.log") for n in names), (step, names)
    for host in ("ci-server", "ci-agent"):                                              # cloud-init, journal
        assert {f"instances/{host}-cloud-init-output.log", f"instances/{host}-journal.log"} <= names, names
    assert sum(n.startswith("instances/i-") and n.endswith("-console.log") for n in names) >= 3, names
    assert any(n.startswith("stack-events/") for n in names), names                   # stack events
    assert (logs / "missing.txt").read_text() == "", (logs / "missing.txt").read_text()
    assert not (run_dir / "ssh").exists() and not (run_dir / "secrets").exists(), "keys outlived the run"
    nothing_left_on_the_host(record)
