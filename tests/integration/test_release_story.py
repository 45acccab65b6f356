"""The release story through the library, on the local cloud: commit → test → package →
publish (agent role) → deploy (agent role) with the health gate probing the real app — then a
broken commit that must not take the site down. (tests/acceptance/test_pipeline.py tells the
same story through Buildbot, the git remote and the CLI.)

Every release runs on a real instance of the local cloud: its user data downloads the artifact
with the app role, verifies it and starts the app's unit; the health gate probes it over HTTP.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phoenixci.errors import DeployError, HealthCheckError
from phoenixci.harness import Infrastructure
from phoenixci.pipeline.deploy import Environment, deploy, eip_holder
from phoenixci.pipeline.package import package
from phoenixci.pipeline.publish import publish

pytestmark = pytest.mark.integration



def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@example.invalid",
               GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@example.invalid")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def release(phoenix_backend: Any, scratch_infra: Infrastructure, repo: Path, build: str, env: Environment,
            out: Path, health_timeout: float = 60) -> Any:
    """One pipeline run for HEAD of ``repo``: test → package → publish → deploy, as the agent role,
    onto a real instance whose user data fetches the artifact with the app role."""
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:phoenixci"],
                           cwd=repo / "app", capture_output=True, text=True)
    if tests.returncode != 0:
        raise AssertionError(f"test stage failed:\n{tests.stdout[-2000:]}")
    artifact = package(repo, "HEAD", build=build, out_dir=out)
    agent = phoenix_backend.instance_role_session(scratch_infra.stack.outputs["AgentRoleArn"], f"build-{build}")
    published = publish(phoenix_backend.client("s3", agent), scratch_infra.stack.outputs["ArtifactBucket"], artifact)
    return deploy(phoenix_backend.client("cloudformation", agent), phoenix_backend.client("ec2", agent),
                  phoenix_backend.client("s3", agent), env, revision=artifact.revision,
                  artifact_key=published.key, artifact_sha256=published.sha256,
                  health_timeout=health_timeout, stack_timeout=120, drain=0.5)


def test_commit_to_serving_and_a_broken_release_keeps_the_site_up(
        phoenix_backend: Any, scratch_infra: Infrastructure, app_repo: Path, release_environment: Environment,
        tmp_path: Path) -> None:
    ec2 = phoenix_backend.client("ec2")
    first = release(phoenix_backend, scratch_infra, app_repo, "1", release_environment, tmp_path / "dist1")
    assert eip_holder(ec2, scratch_infra.stack.outputs["AppEipAllocationId"]) == \
        (first.instance_id, scratch_infra.stack.outputs["AppPublicIp"])

    (app_repo / "app" / "VERSION").write_text("1.1.0\n")
    git(app_repo, "commit", "-q", "-am", "release 1.1.0")
    second = release(phoenix_backend, scratch_infra, app_repo, "2", release_environment, tmp_path / "dist2")
    assert second.instance_id != first.instance_id
    assert second.retired == [first.stack]

    # a commit whose app cannot start: tests pass, the artifact is fine, the server never gets healthy
    main = app_repo / "app" / "phoenixapp" / "__main__.py"
    main.write_text("raise SystemExit('boom: broken release')\n")
    git(app_repo, "commit", "-q", "-am", "broken release")
    with pytest.raises(DeployError) as info:
        release(phoenix_backend, scratch_infra, app_repo, "3", release_environment, tmp_path / "dist3", health_timeout=20)
    assert isinstance(info.value.__cause__, HealthCheckError)
    holder, _ = eip_holder(ec2, scratch_infra.stack.outputs["AppEipAllocationId"])
    assert holder == second.instance_id, "the broken release must not take the site down"

    # and a commit that breaks a unit test stops the pipeline before anything is published
    main.write_text("from phoenixapp.web import main\n\nraise SystemExit(main())\n")
    greeting = app_repo / "app" / "phoenixapp" / "greeting.py"
    greeting.write_text(greeting.read_text().replace("Hello", "Goodbye"))
    git(app_repo, "commit", "-q", "-am", "break the greeting")
    objects_before = phoenix_backend.client("s3").list_objects_v2(
        Bucket=scratch_infra.stack.outputs["ArtifactBucket"]).get("KeyCount")
    with pytest.raises(AssertionError, match="test stage failed"):
        release(phoenix_backend, scratch_infra, app_repo, "4", release_environment, tmp_path / "dist4")
    assert phoenix_backend.client("s3").list_objects_v2(
        Bucket=scratch_infra.stack.outputs["ArtifactBucket"]).get("KeyCount") == objects_before
