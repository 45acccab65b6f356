"""Ctrl-C or SIGTERM at any phase of `phoenixci up` tears everything down; a second signal
during teardown does not stop it. The signal is made to land in the named phase for sure by
the test-only hook PHOENIXCI_TEST_SIGNAL_AT (phoenixci/signals.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phoenixci.env.state import EnvState
from phoenixci.localcloud.runtime import Runtime

pytestmark = [pytest.mark.integration, pytest.mark.interruption]


def up_interrupted(env_dir: Path, at: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(PHOENIXCI_ENV_DIR=str(env_dir), PHOENIXCI_TEST_SIGNAL_AT=at, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phoenixci", "up"], capture_output=True, text=True, env=env,
                          timeout=600)


def assert_nothing_left(env_dir: Path) -> None:
    __tracebackhide__ = True
    cloud = env_dir / "cloud"
    assert EnvState.load(env_dir) is None, "the environment record is left"
    tag = Runtime(cloud / "runtime").tag
    daemons = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).find(str(cloud)) >= 0]
    assert not daemons, f"processes of the run are left: {[_cmdline(p) for p in daemons]}"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    left = [w for w in (netns + links + tables).replace(":", " ").split() if w.startswith(tag)]
    assert not left, f"left on the machine: {left}"
    assert not Path(f"/run/phoenixci/tags/{tag}").exists()
    mounts = [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(env_dir) in ln]
    assert not mounts, mounts


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("phase", ["cloud", "stack", "playbook:+8", "push"])
def test_a_signal_in_any_phase_of_up_leaves_nothing(phase: str, tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    proc = up_interrupted(env_dir, phase)
    assert proc.returncode == 130, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "interrupted (signal SIGTERM)" in proc.stderr
    assert "removing what it made" in proc.stdout
    assert "teardown incomplete" not in proc.stdout
    assert_nothing_left(env_dir)
    if phase == "push":  # everything was up: the run directory holds each kind of log, after teardown
        logs = env_dir / "logs"
        assert f"run directory (logs, consoles, journals, stack events): {logs}" in proc.stdout
        assert list(logs.glob("site-*.log")), "the playbook's output"
        for host in ("ci-server", "ci-agent"):
            assert "Cloud-init" in (logs / "instances" / f"{host}-cloud-init-output.log").read_text()
            assert "systemd" in (logs / "instances" / f"{host}-journal.log").read_text()
        assert any("SSH HOST KEY KEYS" in f.read_text() for f in (logs / "instances").glob("i-*-console.log"))
        events = list((logs / "stack-events").glob("phoenixci-*.log"))
        assert events and "CREATE_COMPLETE" in events[0].read_text()
        assert (logs / "builds").is_dir()


def test_a_second_signal_during_teardown_does_not_stop_it(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    proc = up_interrupted(env_dir, "stack,teardown")
    assert proc.returncode == 130, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "teardown of the environment is running and finishes by itself" in proc.stderr
    assert "stopping the local cloud" in proc.stdout
    assert_nothing_left(env_dir)
