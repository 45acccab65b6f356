"""Root conftest: the phoenixci plugin is loaded through its pytest11 entry point.

When the package is not installed (a bare checkout), load the plugin explicitly so the
fixtures and options exist either way.
"""
from __future__ import annotations

import importlib.metadata

try:
    _eps = importlib.metadata.entry_points(group="pytest11")
    _installed = any(ep.value == "phoenixci.plugin" for ep in _eps)
except Exception:  # noqa: BLE001 - metadata lookup is best effort
    _installed = False

if not _installed:
    pytest_plugins = ["phoenixci.plugin"]


# --- fixtures shared by the library-level release tests (integration and acceptance) -------------
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

APP = Path(__file__).resolve().parent / "app"


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    """A developer's repository holding the app in app/, one commit."""
    repo = tmp_path / "repo"
    shutil.copytree(APP, repo / "app", ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = dict(os.environ, GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@example.invalid",
               GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@example.invalid")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "the app"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
    return repo


@pytest.fixture(scope="session")
def scratch_infra(request: pytest.FixtureRequest, phoenix_backend: Any, phoenix_run_id: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An infrastructure stack of its own (run id ``<run>-s``, never kept) for the project's
    library-level tests, which deploy and retire app servers and move the app's address
    themselves: on the pipeline's stack (``phoenix_infra``) they would fight its CI agent."""
    from phoenixci import runctl
    from phoenixci.harness import infrastructure

    run_id = f"{phoenix_run_id}-s"
    runctl.session_run(request.config).extra_run_ids.add(run_id)
    with infrastructure(phoenix_backend, run_id, admin_cidr=str(request.config.getoption("--admin-cidr")),
                        keep="never", workdir=tmp_path_factory.mktemp("keys")) as infra:
        yield infra


@pytest.fixture
def release_environment(phoenix_backend: Any, scratch_infra: Any) -> Iterator[Any]:
    """Where library-level releases go: the infrastructure stack with the API endpoint instances
    reach (the subnet gateway of the in-process local cloud); the test's app stacks go after it."""
    from phoenixci import stacks
    from phoenixci.pipeline.deploy import Environment
    from phoenixci.pipeline.retire import APP_STACK_PREFIX
    from phoenixci.util import wait_until

    if not getattr(phoenix_backend, "runs_instances", False):
        pytest.skip("acts as the agent and app roles from outside an instance: needs the in-process local "
                    "cloud (moto://); on AWS the pipeline tests run the same story through the CI agent")
    env = Environment.from_infra_stack(scratch_infra.stack)
    cidr = phoenix_backend.client("ec2").describe_subnets(SubnetIds=[env.subnet_id])["Subnets"][0]["CidrBlock"]
    subnet = wait_until(lambda: phoenix_backend.local_subnet(cidr), timeout=60, interval=0.2,
                        what=f"the local cloud to serve subnet {cidr}")
    yield Environment(**{**env.__dict__, "endpoint_url": subnet["api_url"]})
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    for stack in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=scratch_infra.run_id):
        stacks.delete(cfn, s3, stack.name)
