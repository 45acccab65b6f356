"""Helpers of the pipeline acceptance tests: a developer's clone of the app, pushes, builds,
testinfra hosts over the environment's ssh_config. Only public interfaces: the git remote,
the `phoenixci` command, Buildbot's REST API, the app's address, the AWS API, SSH."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenixci.env import buildbot, hostkeys
from phoenixci.env.state import EnvState

GIT_ID = {"GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.invalid",
          "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.invalid"}


def cli(*args: str, env_dir: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(PHOENIXCI_ENV_DIR=str(env_dir), COLUMNS="200", AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, "-m", "phoenixci", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"phoenixci {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Pushed:
    revision: str
    pushed_at: float       # monotonic, when `git push` returned
    output: str            # what the remote said


class Clone:
    """A developer's clone of the CI server's remote."""

    def __init__(self, state: EnvState, path: Path) -> None:
        self.state, self.path = state, path
        self.ssh = (f"ssh -F {state.ssh_config} -i {state.ssh_key} -o UserKnownHostsFile={state.known_hosts} "
                    "-o StrictHostKeyChecking=yes -o BatchMode=yes")
        self.git("clone", "-q", state.git_remote, str(path), cwd=path.parent)

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **GIT_ID, "GIT_SSH_COMMAND": self.ssh}
        proc = subprocess.run(["git", *args], cwd=cwd or self.path, capture_output=True, text=True, env=env,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc

    def commit(self, message: str, files: dict[str, str | None]) -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, branch: str = "main") -> Pushed:
        proc = self.git("push", "origin", f"HEAD:{branch}")
        return Pushed(self.git("rev-parse", "HEAD").stdout.strip(), time.monotonic(), proc.stderr)

    def revert_to(self, revision: str, message: str) -> str:
        """Push a new commit whose tree is ``revision``'s and wait for its (green) build, as a
        developer repairs a red pipeline; returns the new revision, which then serves."""
        self.git("read-tree", "-u", "--reset", revision)
        self.git("commit", "-q", "--allow-empty", "-m", message)
        pushed = self.push()
        build = wait_build(self.state, pushed.revision)
        assert build.result == "success", f"the repair {pushed.revision[:12]} failed: {step_results(build)}"
        return pushed.revision


def wait_build(state: EnvState, revision: str, timeout: float = 300) -> buildbot.Build:
    return buildbot.wait_for_build(state.ci_url, revision, timeout=timeout)


def step_results(build: buildbot.Build) -> dict[str, str]:
    return {s.name: s.result for s in build.steps}


def app_holder(ec2: Any, state: EnvState) -> str | None:
    ip, _ = state.app_address
    addr = ec2.describe_addresses(PublicIps=[ip])["Addresses"][0]
    return addr.get("InstanceId")


def artifact_sha256(s3: Any, bucket: str, revision: str) -> tuple[str, str]:
    key = f"app/{revision}/app-{revision}.tar.gz"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    published = s3.get_object(Bucket=bucket, Key=key + ".sha256")["Body"].read().decode().split()[0]
    return hashlib.sha256(body).hexdigest(), published


def ssh_host(state: EnvState, name_or_ip: str, *, sudo: bool = False) -> Any:
    import testinfra

    return testinfra.get_host(f"ssh://{name_or_ip}", ssh_config=str(state.ssh_config), sudo=sudo)


def pin_app_server(ec2: Any, state: EnvState, instance_id: str) -> str:
    """Pin the app server's host key from its console; return its private address."""
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    ip = inst["PrivateIpAddress"]
    hostkeys.pin(ec2, state.known_hosts, instance_id, [ip])
    return str(ip)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=30000", "--run-all-compositor-stages-before-draw"]


def chromium(url: str, out_dir: Path, *, screenshot: Path | None = None) -> str:
    """Render ``url`` in Debian's headless Chromium (a fresh profile); return the page's text."""
    import html
    import re
    import shutil
    import tempfile

    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is not installed (make setup installs it)"
    with tempfile.TemporaryDirectory(dir=out_dir) as profile:
        args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
        if screenshot is not None:
            subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    text = re.sub(r"<(svg|style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))
