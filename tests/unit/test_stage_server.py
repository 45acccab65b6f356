"""stage_server.py / stage_client.py on the host, with a toy entry point in place of cloud-init's
(the real one runs in every local instance: tests/integration/localcloud/test_localcloud_story.py).

The client is started as a stage unit starts it (``python3 -I -S stage_client.py SOCKET REAL
ARGS``); what the forked stage sees and does must be what a fresh process would: its argv, env,
cwd, umask and standard streams, its exit status or the signal that killed it, and the
interpreter's exit work (atexit)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phoenixci.localcloud import stage_client, stage_server
from phoenixci.util import wait_until

TOY = textwrap.dedent("""\
    import atexit, json, os, signal, sys

    def main():
        cmd = sys.argv[1]
        marker = os.environ.get("TOY_MARKER")
        if marker:
            atexit.register(lambda: open(marker, "w").write("atexit ran"))
        print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "umask": os.umask(0),
                          "env": os.environ.get("TOY_VAR"), "pid": os.getpid(), "sid": os.getsid(0)}))
        sys.stderr.write("to stderr\\n")
        if cmd == "exit":
            return int(sys.argv[2])
        if cmd == "raise":
            raise RuntimeError("boom")
        if cmd == "kill":
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return 0
""")


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    (tmp_path / "toystage.py").write_text(TOY)
    real = tmp_path / "real-script"
    real.write_text("#!/bin/sh\necho \"real script: $*\"\nexit 7\n")
    real.chmod(0o755)
    return tmp_path


def start_server(toy: Path, *extra: str) -> subprocess.Popen[str]:
    sock = toy / "run" / "stages.sock"
    proc = subprocess.Popen([sys.executable, "-I", stage_server.__file__, "--socket", str(sock),
                             "--entry", "toystage:main", "--argv0", "/usr/bin/toy", "--path", str(toy),
                             "--preload", "json", *extra], stderr=subprocess.PIPE, text=True)
    wait_until(sock.exists, timeout=10, interval=0.02, what="the stage server's socket")
    return proc


@pytest.fixture
def server(toy: Path) -> Iterator[subprocess.Popen[str]]:
    proc = start_server(toy, "--exit-after", "last")
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)
    assert not (toy / "run" / "stages.sock").exists()


def client(toy: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-S", stage_client.__file__, str(toy / "run" / "stages.sock"),
                           str(toy / "real-script"), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, cwd=cwd or toy, preexec_fn=lambda: os.umask(0o027))


def test_a_stage_runs_forked_as_its_own_process_would(toy: Path, server: subprocess.Popen[str]) -> None:
    import json

    marker = toy / "marker"
    done = client(toy, "exit", "3", env={"TOY_VAR": "from-the-unit", "TOY_MARKER": str(marker)}, cwd=Path("/"))
    assert done.returncode == 3, done
    seen = json.loads(done.stdout)
    assert seen["argv"] == ["/usr/bin/toy", "exit", "3"]
    assert (seen["cwd"], seen["umask"], seen["env"]) == ("/", 0o027, "from-the-unit")
    assert seen["pid"] != server.pid and seen["sid"] == seen["pid"]  # forked, in a session of its own
    assert done.stderr == "to stderr\n"
    assert marker.read_text() == "atexit ran"
    assert server.poll() is None  # still serving


def test_failures_end_the_stage_as_they_would_end_a_process(toy: Path, server: subprocess.Popen[str]) -> None:
    raised = client(toy, "raise")
    assert raised.returncode == 1 and "RuntimeError: boom" in raised.stderr
    killed = client(toy, "kill")
    assert killed.returncode == -signal.SIGKILL
    assert client(toy, "exit", "0").returncode == 0  # and the server serves on


def test_the_server_ends_after_the_last_stage_and_the_client_then_runs_the_real_script(
        toy: Path, server: subprocess.Popen[str]) -> None:
    assert client(toy, "last").returncode == 0
    assert server.wait(timeout=10) == 0
    after = client(toy, "exit", "0")
    assert (after.returncode, after.stdout) == (7, "real script: exit 0\n")


def test_an_idle_server_ends_by_itself(toy: Path) -> None:
    proc = start_server(toy, "--idle", "0.5")
    t0 = time.monotonic()
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert not (toy / "run" / "stages.sock").exists()


def test_what_cannot_be_preloaded_is_named_and_the_server_serves_anyway(toy: Path) -> None:
    proc = start_server(toy, "--preload", "no_such_module_here", "--exit-after", "last")
    assert client(toy, "last").returncode == 0
    proc.wait(timeout=10)
    assert proc.stderr is not None and "no_such_module_here" in proc.stderr.read()


def test_the_socket_is_root_only(toy: Path, server: subprocess.Popen[str]) -> None:
    sock_dir = toy / "run"
    assert sock_dir.stat().st_mode & 0o777 == 0o700
    assert (sock_dir / "stages.sock").stat().st_mode & 0o077 == 0


def test_the_layer_files_replace_each_stage_s_execstart_and_preload_the_image_s_modules(tmp_path: Path) -> None:
    from phoenixci.localcloud import stages

    assert stages.layer_files(tmp_path) == {}  # an image without cloud-init gets nothing
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/cloud-init").write_text("#!/usr/bin/python3\n")
    (tmp_path / "etc/cloud").mkdir(parents=True)
    (tmp_path / "etc/cloud/cloud.cfg").write_text(
        "cloud_init_modules:\n - write-files\n - [ssh, always]\n"
        "cloud_config_modules:\n - {name: runcmd, frequency: always}\ncloud_final_modules:\n - scripts-user\n")
    files = stages.layer_files(tmp_path)
    unit = files[f"etc/systemd/system/{stages.SERVER_UNIT}"]
    for module in ("config.cc_write_files", "config.cc_ssh", "config.cc_runcmd", "config.cc_scripts_user",
                   "sources.DataSourceEc2"):
        assert f"--preload cloudinit.{module}" in " ".join(unit.split()), module
    assert '--exit-after "modules --mode=final"' in unit and "Type=notify" in unit
    for name, args in stages.STAGES.items():
        drop_in = files[f"etc/systemd/system/{name}.d/50-phoenixci-stages.conf"]
        assert f"ExecStart=\nExecStart=/usr/bin/python3 -I -S /usr/lib/phoenixci/stage_client.py " \
               f"{stages.SOCKET} /usr/bin/cloud-init {args}\n" in drop_in
        assert "SyslogIdentifier=cloud-init" in drop_in
        assert ("Wants=" in drop_in) is (name == "cloud-init-local.service")
    assert files["usr/lib/phoenixci/stage_server.py"] == Path(stage_server.__file__).read_text()
