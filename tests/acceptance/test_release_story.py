"""The release story on the embedded AWS, as far as it exists before the local cloud runs
instances: commit → test → package → publish (agent role) → deploy (agent role) with the
health gate probing the *real* app, started from the artifact that the *app role* downloaded
and verified — then a broken commit that must not take the site down.

The "server" of each release is a local process standing in for the instance until the local
cloud (issue 3) boots real ones; everything else — git, tarball, S3, IAM, stacks, Elastic IP,
HTTP — is real.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phoenixci import stacks
from phoenixci.errors import DeployError, HealthCheckError
from phoenixci.harness import Infrastructure
from phoenixci.pipeline.deploy import Environment, deploy, eip_holder
from phoenixci.pipeline.health import Target, http_health_check
from phoenixci.pipeline.package import package
from phoenixci.pipeline.publish import fetch_and_verify, publish
from phoenixci.pipeline.retire import APP_STACK_PREFIX
from phoenixci.util import free_port

pytestmark = pytest.mark.acceptance

APP = Path(__file__).resolve().parents[2] / "app"


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@example.invalid",
               GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@example.invalid")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    """A developer's clone of the application repository."""
    repo = tmp_path / "repo"
    shutil.copytree(APP, repo / "app", ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the app")
    return repo


class LocalServers:
    """Stand-in for the instances: for each new server the deploy health-gates, download the
    artifact with the app role, verify it, unpack it and start it, then probe it for real."""

    def __init__(self, s3_as_app_role: Any, bucket: str, workdir: Path) -> None:
        self.s3, self.bucket, self.workdir = s3_as_app_role, bucket, workdir
        self.keys: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self, target: Target, timeout: float) -> None:
        home = self.workdir / target.instance_id
        archive = fetch_and_verify(self.s3, self.bucket, self.keys[target.revision], home / "download")
        with tarfile.open(archive) as tar:
            tar.extractall(home / "app", filter="data")
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(home / "app"), HOST="127.0.0.1", PORT=str(port))
        env.pop("PHOENIXAPP_MANIFEST", None)
        self.procs.append(subprocess.Popen([sys.executable, "-m", "phoenixapp"], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        http_health_check(Target(target.instance_id, "127.0.0.1", port, target.revision), timeout)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def servers(phoenix_backend: Any, phoenix_infra: Infrastructure, tmp_path: Path) -> Iterator[LocalServers]:
    app_role = phoenix_backend.instance_role_session(phoenix_infra.stack.outputs["AppRoleArn"], "app-server")
    local = LocalServers(phoenix_backend.client("s3", app_role), phoenix_infra.stack.outputs["ArtifactBucket"],
                         tmp_path / "servers")
    yield local
    local.stop()
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    for stack in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=phoenix_infra.run_id):
        stacks.delete(cfn, s3, stack.name)


def release(phoenix_backend: Any, phoenix_infra: Infrastructure, repo: Path, build: str,
            servers: LocalServers, out: Path, health_timeout: float = 10) -> Any:
    """One pipeline run for HEAD of ``repo``: test → package → publish → deploy, as the agent."""
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:phoenixci"],
                           cwd=repo / "app", capture_output=True, text=True)
    if tests.returncode != 0:
        raise AssertionError(f"test stage failed:\n{tests.stdout[-2000:]}")
    artifact = package(repo, "HEAD", build=build, out_dir=out)
    agent = phoenix_backend.instance_role_session(phoenix_infra.stack.outputs["AgentRoleArn"], f"build-{build}")
    published = publish(phoenix_backend.client("s3", agent), phoenix_infra.stack.outputs["ArtifactBucket"], artifact)
    servers.keys[artifact.revision] = published.key
    env = Environment.from_infra_stack(phoenix_infra.stack)
    return deploy(phoenix_backend.client("cloudformation", agent), phoenix_backend.client("ec2", agent),
                  phoenix_backend.client("s3", agent), env, revision=artifact.revision,
                  artifact_key=published.key, artifact_sha256=published.sha256, health_check=servers,
                  health_timeout=health_timeout, stack_timeout=120)


def test_commit_to_serving_and_a_broken_release_keeps_the_site_up(
        phoenix_backend: Any, phoenix_infra: Infrastructure, app_repo: Path, servers: LocalServers,
        tmp_path: Path) -> None:
    ec2 = phoenix_backend.client("ec2")
    first = release(phoenix_backend, phoenix_infra, app_repo, "1", servers, tmp_path / "dist1")
    assert eip_holder(ec2, phoenix_infra.stack.outputs["AppEipAllocationId"]) == \
        (first.instance_id, phoenix_infra.stack.outputs["AppPublicIp"])

    (app_repo / "app" / "VERSION").write_text("1.1.0\n")
    git(app_repo, "commit", "-q", "-am", "release 1.1.0")
    second = release(phoenix_backend, phoenix_infra, app_repo, "2", servers, tmp_path / "dist2")
    assert second.instance_id != first.instance_id
    assert second.retired == [first.stack]

    # a commit whose app cannot start: tests pass, the artifact is fine, the server never gets healthy
    main = app_repo / "app" / "phoenixapp" / "__main__.py"
    main.write_text("raise SystemExit('boom: broken release')\n")
    git(app_repo, "commit", "-q", "-am", "broken release")
    with pytest.raises(DeployError) as info:
        release(phoenix_backend, phoenix_infra, app_repo, "3", servers, tmp_path / "dist3", health_timeout=3)
    assert isinstance(info.value.__cause__, HealthCheckError)
    holder, _ = eip_holder(ec2, phoenix_infra.stack.outputs["AppEipAllocationId"])
    assert holder == second.instance_id, "the broken release must not take the site down"

    # and a commit that breaks a unit test stops the pipeline before anything is published
    main.write_text("from phoenixapp.web import main\n\nraise SystemExit(main())\n")
    greeting = app_repo / "app" / "phoenixapp" / "greeting.py"
    greeting.write_text(greeting.read_text().replace("Hello", "Goodbye"))
    git(app_repo, "commit", "-q", "-am", "break the greeting")
    objects_before = phoenix_backend.client("s3").list_objects_v2(
        Bucket=phoenix_infra.stack.outputs["ArtifactBucket"]).get("KeyCount")
    with pytest.raises(AssertionError, match="test stage failed"):
        release(phoenix_backend, phoenix_infra, app_repo, "4", servers, tmp_path / "dist4")
    assert phoenix_backend.client("s3").list_objects_v2(
        Bucket=phoenix_infra.stack.outputs["ArtifactBucket"]).get("KeyCount") == objects_before
