"""The pipeline's environment for the acceptance tests: `phoenixci up` once per session (as a
user runs it, in a subprocess), `phoenixci down` at the end, which must leave nothing."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_kit import Clone, cli

from phoenixci.env.state import EnvState


@pytest.fixture(scope="session")
def pipeline_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvState]:
    """A whole environment on the local cloud. PHOENIXCI_TEST_ENV_DIR reuses one already up
    (for working on the tests); otherwise the session brings one up and takes it down."""
    reuse = os.environ.get("PHOENIXCI_TEST_ENV_DIR")
    if reuse:
        state = EnvState.load(Path(reuse))
        assert state is not None and state.phase == "up", f"no environment is up in {reuse}"
        yield state
        return
    env_dir = tmp_path_factory.mktemp("env")
    proc = cli("up", "--backend", str(request.config.getoption("--backend")),
               "--admin-cidr", str(request.config.getoption("--admin-cidr")), env_dir=env_dir, check=False)
    state = EnvState.load(env_dir)
    try:
        assert proc.returncode == 0, f"phoenixci up failed:\n{proc.stdout}\n{proc.stderr}"
        assert state is not None
        yield state
    finally:
        if EnvState.load(env_dir) is not None:
            failed = request.session.testsfailed > 0  # keep what a debugging person needs
            down = cli("down", *(["--collect"] if failed else []), env_dir=env_dir, check=False)
            if failed:
                print(f"\nrun directory of the failed session: {env_dir / 'logs'}")
            assert down.returncode == 0, f"phoenixci down failed:\n{down.stdout}\n{down.stderr}"
            assert "nothing of the environment is left" in down.stdout


@pytest.fixture(scope="session")
def env_backend(pipeline_env: EnvState) -> Iterator[Any]:
    """Admin access to the environment's AWS API (to check what the pipeline did)."""
    from phoenixci.backends import get_backend

    with get_backend(pipeline_env.backend) as backend:
        yield backend


@pytest.fixture(scope="session")
def clone(pipeline_env: EnvState, tmp_path_factory: pytest.TempPathFactory) -> Clone:
    """A developer's clone of the CI server's git remote."""
    return Clone(pipeline_env, tmp_path_factory.mktemp("dev") / "app")


@pytest.fixture(scope="session")
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """Files a run keeps for people to look at (screenshots): $PHOENIXCI_ARTIFACTS or artifacts/."""
    path = Path(os.environ.get("PHOENIXCI_ARTIFACTS") or request.config.rootpath / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
