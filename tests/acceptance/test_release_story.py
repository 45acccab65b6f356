"""The release story through the library, on the local cloud: commit → test → package →
publish (agent role) → deploy (agent role) with the health gate probing the real app — then a
broken commit that must not take the site down. (tests/acceptance/test_pipeline.py tells the
same story through Buildbot, the git remote and the CLI.)

Every release runs on a real instance of the local cloud: its user data downloads the artifact
with the app role, verifies it and starts the app's unit; the health gate probes it over HTTP.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phoenixci import stacks
from phoenixci.errors import DeployError, HealthCheckError
from phoenixci.harness import Infrastructure
from phoenixci.pipeline.deploy import Environment, deploy, eip_holder
from phoenixci.pipeline.package import package
from phoenixci.pipeline.publish import publish
from phoenixci.pipeline.retire import APP_STACK_PREFIX
from phoenixci.util import wait_until

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


@pytest.fixture
def environment(phoenix_backend: Any, phoenix_infra: Infrastructure) -> Iterator[Environment]:
    """Where releases go: the infrastructure stack, with the API endpoint instances reach (the
    subnet gateway of the local cloud); app stacks of the test are removed after it."""
    if getattr(phoenix_backend, "cloud", None) is None:
        pytest.skip("acts as the agent and app roles from outside an instance: only the local cloud can "
                    "(on AWS the pipeline tests run the same story through the CI agent)")
    env = Environment.from_infra_stack(phoenix_infra.stack)
    cidr = phoenix_backend.client("ec2").describe_subnets(SubnetIds=[env.subnet_id])["Subnets"][0]["CidrBlock"]
    subnet = wait_until(lambda: phoenix_backend.cloud.status()["subnets"].get(cidr), timeout=60, interval=0.2,
                        what=f"the local cloud to serve subnet {cidr}")
    yield Environment(**{**env.__dict__, "endpoint_url": subnet["api_url"]})
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    for stack in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=phoenix_infra.run_id):
        stacks.delete(cfn, s3, stack.name)


def release(phoenix_backend: Any, phoenix_infra: Infrastructure, repo: Path, build: str, env: Environment,
            out: Path, health_timeout: float = 60) -> Any:
    """One pipeline run for HEAD of ``repo``: test → package → publish → deploy, as the agent role,
    onto a real instance whose user data fetches the artifact with the app role."""
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:phoenixci"],
                           cwd=repo / "app", capture_output=True, text=True)
    if tests.returncode != 0:
        raise AssertionError(f"test stage failed:\n{tests.stdout[-2000:]}")
    artifact = package(repo, "HEAD", build=build, out_dir=out)
    agent = phoenix_backend.instance_role_session(phoenix_infra.stack.outputs["AgentRoleArn"], f"build-{build}")
    published = publish(phoenix_backend.client("s3", agent), phoenix_infra.stack.outputs["ArtifactBucket"], artifact)
    return deploy(phoenix_backend.client("cloudformation", agent), phoenix_backend.client("ec2", agent),
                  phoenix_backend.client("s3", agent), env, revision=artifact.revision,
                  artifact_key=published.key, artifact_sha256=published.sha256,
                  health_timeout=health_timeout, stack_timeout=120, drain=0.5)


def test_commit_to_serving_and_a_broken_release_keeps_the_site_up(
        phoenix_backend: Any, phoenix_infra: Infrastructure, app_repo: Path, environment: Environment,
        tmp_path: Path) -> None:
    ec2 = phoenix_backend.client("ec2")
    first = release(phoenix_backend, phoenix_infra, app_repo, "1", environment, tmp_path / "dist1")
    assert eip_holder(ec2, phoenix_infra.stack.outputs["AppEipAllocationId"]) == \
        (first.instance_id, phoenix_infra.stack.outputs["AppPublicIp"])

    (app_repo / "app" / "VERSION").write_text("1.1.0\n")
    git(app_repo, "commit", "-q", "-am", "release 1.1.0")
    second = release(phoenix_backend, phoenix_infra, app_repo, "2", environment, tmp_path / "dist2")
    assert second.instance_id != first.instance_id
    assert second.retired == [first.stack]

    # a commit whose app cannot start: tests pass, the artifact is fine, the server never gets healthy
    main = app_repo / "app" / "phoenixapp" / "__main__.py"
    main.write_text("raise SystemExit('boom: broken release')\n")
    git(app_repo, "commit", "-q", "-am", "broken release")
    with pytest.raises(DeployError) as info:
        release(phoenix_backend, phoenix_infra, app_repo, "3", environment, tmp_path / "dist3", health_timeout=20)
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
        release(phoenix_backend, phoenix_infra, app_repo, "4", environment, tmp_path / "dist4")
    assert phoenix_backend.client("s3").list_objects_v2(
        Bucket=phoenix_infra.stack.outputs["ArtifactBucket"]).get("KeyCount") == objects_before
