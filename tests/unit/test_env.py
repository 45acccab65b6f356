"""The environment's pieces that need no cloud: state records, the playbook recap and its error
message, ssh_config, the inventory file, CLI errors for `up`/`down`/`status` with bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phoenixci.env import ansible, hostkeys
from phoenixci.env.lifecycle import _host_pattern, check_backend
from phoenixci.env.state import EnvState, Host
from phoenixci.errors import ConfigError

pytestmark = pytest.mark.unit

RECAP = """PLAY RECAP *********************************************************************
ci-agent                   : ok=25   changed=0    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
ci-server                  : ok=22   changed=13   unreachable=0    failed=1    skipped=1    rescued=0    ignored=0
"""

FAILED_TASK = """TASK [ci_server : Create or upgrade the master's database] **********************
fatal: [ci-server]: FAILED! =>
    changed: true
    msg: non-zero return code
    rc: 1
    stderr: ''
    stdout: |-
        checking basedir
        invalid buildmaster directory '/var/lib/buildbot/master'

PLAY RECAP *********************************************************************
"""


def test_state_round_trips(tmp_path: Path) -> None:
    state = EnvState(directory=str(tmp_path), backend="moto://?state-dir=x", run_id="phx-1", phase="up",
                     hosts={"ci-server": Host("ci-server", "i-1", "10.0.1.4", "127.1.2.3")})
    state.save()
    loaded = EnvState.load(tmp_path)
    assert loaded == state
    assert loaded.hosts["ci-server"].address == "127.1.2.3"
    assert EnvState.load(tmp_path / "none") is None
    loaded.forget()
    assert EnvState.load(tmp_path) is None


def test_recap_is_parsed() -> None:
    recap = ansible.parse_recap(RECAP)
    assert recap["ci-server"] == {"ok": 22, "changed": 13, "unreachable": 0, "failed": 1, "skipped": 1,
                                  "rescued": 0, "ignored": 0}
    assert ansible.PlaybookResult(Path("x"), recap).changed == 13


def test_failure_message_names_host_task_and_output() -> None:
    msg = ansible._failure_message(FAILED_TASK, 2, Path("/log"))
    assert "ci-server: task 'ci_server : Create or upgrade the master's database'" in msg
    assert "invalid buildmaster directory" in msg and msg.endswith("full output: /log")


def test_failure_message_for_a_broken_playbook() -> None:
    out = "[ERROR]: YAML parsing failed: Colons in unquoted values\nOrigin: /p/tasks/main.yml:95:51\n"
    msg = ansible._failure_message(out, 4, Path("/log"))
    assert "YAML parsing failed" in msg and "/p/tasks/main.yml:95:51" in msg


def test_inventory_source_names_the_run(tmp_path: Path) -> None:
    path = ansible.write_inventory(tmp_path, run_id="phx-1", region="eu-west-1", endpoint_url=None,
                                   ssh_key=tmp_path / "k", known_hosts=tmp_path / "kh")
    assert path.name.endswith("phoenixci_ec2.yml")
    assert json.loads(path.read_text()) == {"plugin": "phoenixci_ec2", "run_id": "phx-1", "region": "eu-west-1",
                                            "endpoint_url": "", "ssh_private_key_file": str(tmp_path / "k"),
                                            "known_hosts_file": str(tmp_path / "kh")}


def test_ssh_config_jumps_to_app_servers_through_the_ci_server(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    hostkeys.ssh_config(cfg, key=tmp_path / "k", known_hosts=tmp_path / "kh",
                        hosts={"ci-server": "127.9.9.9", "ci-agent": "10.64.1.5"}, jump_pattern="10.64.1.*")
    text = cfg.read_text()
    assert "Host ci-server 127.9.9.9\n" in text and "Host ci-agent 10.64.1.5\n" in text
    assert "Host 10.64.1.* !127.9.9.9 !10.64.1.5\n  ProxyJump ci-server" in text
    assert text.count("StrictHostKeyChecking yes") == 3
    assert _host_pattern("10.64.1.0/24") == "10.64.1.*" and _host_pattern("10.64.0.0/16") == "10.64.*"


def test_known_hosts_pins_every_address(tmp_path: Path) -> None:
    path = tmp_path / "kh"
    hostkeys.write_known_hosts(path, hostkeys.known_hosts_lines(["10.0.1.4", "", "127.1.1.1"], ["ssh-ed25519 AAAA"]))
    assert path.read_text() == "10.0.1.4,127.1.1.1 ssh-ed25519 AAAA\n"


@pytest.mark.parametrize(("url", "fragment"), [
    ("gcp://project", "unknown backend 'gcp://'"),
    ("localstack://127.0.0.1:4566", "localstack:// runs no instances"),
    ("moto://?instances=off", "starts its own local cloud"),
])
def test_up_refuses_backends_it_cannot_use(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=".*") as info:
        check_backend(url)
    assert fragment in str(info.value)


def run_cli(*args: str, env_dir: Path, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(PHOENIXCI_ENV_DIR=str(env_dir), AWS_EC2_METADATA_DISABLED="true", COLUMNS="200")
    argv = [sys.executable, "-m", "phoenixci", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    __tracebackhide__ = True
    assert proc.returncode == 1, proc
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr


def test_down_with_nothing_up_is_one_line(tmp_path: Path) -> None:
    one_line_error(run_cli("down", env_dir=tmp_path), "no environment is up")
    one_line_error(run_cli("status", env_dir=tmp_path), "no environment is up")


def test_up_with_an_unknown_backend_makes_nothing(tmp_path: Path) -> None:
    one_line_error(run_cli("up", "--backend", "gcp://x", env_dir=tmp_path / "env"), "unknown backend 'gcp://'")
    assert not (tmp_path / "env").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_up_on_the_local_cloud_without_root_is_one_line(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # a place an unprivileged user can reach
        Path(top).chmod(0o777)
        env_dir = Path(top) / "env"
        one_line_error(run_cli("up", "--backend", "moto://", env_dir=env_dir, user=65534), "needs root")
        assert not env_dir.exists()


def test_up_on_aws_needs_the_admin_cidr(tmp_path: Path) -> None:
    proc = run_cli("up", "--backend", "aws://?region=eu-west-1", "--accept-aws-cost", env_dir=tmp_path / "env")
    one_line_error(proc, "--admin-cidr")
    assert not (tmp_path / "env").exists()


def test_commands_default_to_the_environment_up_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `phoenixci up`, status/deploy/leaks/clean... find it without --backend; up and demo
    always start a new environment of their own."""
    from phoenixci.cli import build_parser

    monkeypatch.delenv("PHOENIXCI_BACKEND", raising=False)
    monkeypatch.setenv("PHOENIXCI_ENV_DIR", str(tmp_path))
    EnvState(directory=str(tmp_path), backend="moto://?state-dir=/x/cloud", run_id="phx-1", phase="up").save()
    parser = build_parser()
    for argv in (["deploy", "--revision", "a" * 40], ["leaks"], ["clean"], ["publish", "f"], ["retire",
                                                                                           "--keep-revision", "x"]):
        assert parser.parse_args(argv).backend == "moto://?state-dir=/x/cloud", argv
    for argv in (["up"], ["demo"]):
        assert parser.parse_args(argv).backend == "moto://", argv
