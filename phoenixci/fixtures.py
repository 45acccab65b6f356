"""The pytest fixtures of phoenixci (registered by ``phoenixci.plugin``), thin wrappers over
``phoenixci.chain``. The chain, each step a session fixture whose teardown is registered
before the next step starts:

``phoenix_backend`` → ``phoenix_env`` (the run's record and directory) → ``phoenix_key_pair``
→ ``phoenix_infra`` → ``phoenix_ci`` (the playbook) → ``phoenix_repo`` → ``push_commit`` →
``phoenix_release`` (the first deployed version); testinfra hosts ``ci_server_host``,
``ci_agent_host`` and ``app_server_host``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from phoenixci import runctl

if TYPE_CHECKING:
    from phoenixci.backends import Backend
    from phoenixci.chain import AppRepo, Release
    from phoenixci.env.state import EnvState
    from phoenixci.harness import Infrastructure, KeyPair


def _say(message: str) -> None:
    if os.environ.get("PHOENIXCI_VERBOSE"):
        print(f"phoenixci: {message}", flush=True)


@pytest.fixture(scope="session")
def phoenix_run_id(request: pytest.FixtureRequest) -> str:
    """The run id every resource of this session is tagged with (--run-id, or a new one)."""
    return runctl.session_run(request.config).run_id


@pytest.fixture(scope="session")
def phoenix_run_dir(request: pytest.FixtureRequest) -> Path:
    """The session's run directory: env.json, ssh config and keys, logs (named in failures)."""
    return runctl.session_run(request.config).directory


@pytest.fixture(scope="session")
def phoenix_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The started backend of the session. On moto:// a local cloud in this process; with
    --keep it is a daemon whose state directory is in the run directory (it outlives pytest).
    At the end: nothing tagged with the session's run ids may be left, and on the local cloud
    no namespace, bridge, mount, cgroup or process of it (the session fails otherwise)."""
    with runctl.session_backend(runctl.session_run(request.config)) as backend:
        yield backend


@pytest.fixture(scope="session")
def phoenix_env(request: pytest.FixtureRequest, phoenix_backend: Backend) -> Iterator[EnvState]:
    """The run's record (``env.json``): what the chain made so far, for teardown and the CLI."""
    run = runctl.session_run(request.config)
    with runctl.session_env(run, phoenix_backend) as state:
        yield state


@pytest.fixture(scope="session")
def phoenix_key_pair(request: pytest.FixtureRequest, phoenix_backend: Backend, phoenix_env: EnvState) -> Iterator[KeyPair]:
    """The run's EC2 key pair (a fresh ed25519 key; the private key in the run directory)."""
    from phoenixci import chain

    with chain.key_pair(phoenix_backend, phoenix_env, keeping=runctl.session_run(request.config).keeping) as key:
        yield key


@pytest.fixture(scope="session")
def phoenix_infra(request: pytest.FixtureRequest, phoenix_backend: Backend, phoenix_env: EnvState,
                  phoenix_key_pair: KeyPair) -> Iterator[Infrastructure]:
    """The infrastructure stack: network, CI server and agent, artifact bucket, roles, app address."""
    from phoenixci import chain
    from phoenixci.harness import Infrastructure

    run = runctl.session_run(request.config)
    with chain.infrastructure_stack(phoenix_backend, phoenix_env, admin_cidr=run.admin_cidr, keeping=run.keeping,
                                    say=_say) as stack:
        yield Infrastructure(run_id=phoenix_env.run_id, stack=stack, key=phoenix_key_pair)


@pytest.fixture(scope="session")
def phoenix_ci(request: pytest.FixtureRequest, phoenix_backend: Backend, phoenix_env: EnvState,
               phoenix_infra: Infrastructure) -> Iterator[EnvState]:
    """The CI server and agent configured by the playbook: the environment, ready for pushes
    (``.ci_url``, ``.git_remote``, ``.app_url``, ``.ssh_config``, ``.secret(name)``)."""
    from phoenixci import chain

    run = runctl.session_run(request.config)
    with chain.ci_hosts(phoenix_backend, phoenix_env, phoenix_infra.stack, keeping=run.keeping, say=_say) as state:
        yield state
        runctl.collect_if_failed(run, state, phoenix_backend)


@pytest.fixture(scope="session")
def phoenix_repo(phoenix_backend: Backend, phoenix_ci: EnvState, request: pytest.FixtureRequest) -> AppRepo:
    """A developer's clone of the CI server's remote (an empty remote is seeded with the app of
    --app-source, committed but not pushed: ``phoenix_release`` pushes it)."""
    from phoenixci.chain import AppRepo

    run = runctl.session_run(request.config)
    return AppRepo(phoenix_backend, phoenix_ci, phoenix_ci.path / "repo", app_source=run.app_source)


@pytest.fixture(scope="session")
def push_commit(phoenix_repo: AppRepo) -> Callable[..., Release]:
    """``push_commit(files, message)``: commit the files (path → text, None deletes), push,
    wait for the build; returns a ``Release`` (build, steps, artifact, what serves and where)."""
    return phoenix_repo.push_commit


@pytest.fixture(scope="session")
def phoenix_release(push_commit: Callable[..., Release], phoenix_repo: AppRepo) -> Release:
    """The first deployed version: the app pushed as it is, built, released on a new server."""
    release = push_commit(None)
    assert release.succeeded, f"the first release failed at {release.failed_step}: {release.steps}"
    return release


@pytest.fixture(scope="session")
def phoenix_cli(phoenix_env: EnvState) -> Callable[..., Any]:
    """``phoenix_cli("status", "--json")``: run the ``phoenixci`` command on the session's
    environment (as a user would, in a subprocess); returns the CompletedProcess. ``check=False``
    to look at a failure."""
    import subprocess
    import sys

    def run(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
        env.update(PHOENIXCI_ENV_DIR=str(phoenix_env.path), COLUMNS="200", AWS_EC2_METADATA_DISABLED="true")
        proc = subprocess.run([sys.executable, "-m", "phoenixci", *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"phoenixci {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def ci_server_host(phoenix_ci: EnvState) -> Any:
    """testinfra host of the CI server (sudo)."""
    from phoenixci.chain import testinfra_host

    return testinfra_host(phoenix_ci, "ci-server", sudo=True)


@pytest.fixture(scope="session")
def ci_agent_host(phoenix_ci: EnvState) -> Any:
    """testinfra host of the CI agent (sudo)."""
    from phoenixci.chain import testinfra_host

    return testinfra_host(phoenix_ci, "ci-agent", sudo=True)


@pytest.fixture
def app_server_host(phoenix_backend: Backend, phoenix_release: Release, phoenix_ci: EnvState) -> Any:
    """testinfra host of the app server serving now (through the CI server as jump host; its
    host key pinned from its console output). Not sudo: ``.sudo()`` where a check needs it."""
    from phoenixci import chain

    holder = chain.app_holder(phoenix_backend, phoenix_ci)
    assert holder is not None, f"nothing holds the app's address {phoenix_ci.app_url}"
    return chain.testinfra_host(phoenix_ci, chain.pin_app_server(phoenix_backend, phoenix_ci, holder))
