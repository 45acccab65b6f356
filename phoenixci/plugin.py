"""pytest plugin: options and thin fixtures over the context managers in ``phoenixci.harness``.

Options (each with an environment fallback):
  --backend URL        PHOENIXCI_BACKEND   moto:// (default), aws://?region=…&profile=…
  --keep WHEN          PHOENIXCI_KEEP      never | on-failure | always (what to keep after the session)
  --admin-cidr CIDR    PHOENIXCI_ADMIN_CIDR
  --run-id ID          PHOENIXCI_RUN_ID    the run id every resource of the session is tagged with
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from phoenixci.backends import Backend
    from phoenixci.harness import Infrastructure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("phoenixci")
    group.addoption("--backend", default=os.environ.get("PHOENIXCI_BACKEND", "moto://"),
                    help="where the AWS API answers: moto:// (default), aws://?region=R&profile=P, "
                         "localstack://HOST:PORT [env PHOENIXCI_BACKEND]")
    group.addoption("--keep", default=os.environ.get("PHOENIXCI_KEEP", "never"),
                    choices=["never", "on-failure", "always"],
                    help="keep the session's stacks afterwards [env PHOENIXCI_KEEP]")
    group.addoption("--admin-cidr", default=os.environ.get("PHOENIXCI_ADMIN_CIDR", "127.0.0.1/32"),
                    help="CIDR allowed to reach the CI server's SSH and web UI [env PHOENIXCI_ADMIN_CIDR]")
    group.addoption("--run-id", default=os.environ.get("PHOENIXCI_RUN_ID"),
                    help="name the session's run (tag phoenixci:run-id); default a new phx-XXXXXXXX "
                         "[env PHOENIXCI_RUN_ID]")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = str(config.getoption("--backend"))
    if backend.startswith("aws://"):
        return
    skip = pytest.mark.skip(reason="needs real AWS: run with --backend aws://?region=…")
    for item in items:
        if "aws" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def phoenix_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The started backend of this test session (one embedded API per process on moto://)."""
    from phoenixci.backends import get_backend

    with get_backend(str(request.config.getoption("--backend"))) as backend:
        yield backend


@pytest.fixture(scope="session")
def phoenix_run_id(request: pytest.FixtureRequest) -> str:
    """The run id every resource of this session is tagged with (--run-id, or a new one)."""
    import re

    from phoenixci.errors import ConfigError
    from phoenixci.harness import new_run_id

    given = request.config.getoption("--run-id")
    # it names stacks and, through them, S3 buckets: lowercase, short enough for a bucket name
    if given and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,23}", str(given)):
        raise ConfigError(f"--run-id {given!r}: use 1-24 lowercase letters, digits or dashes")
    return str(given) if given else new_run_id()


@pytest.fixture(scope="session")
def phoenix_infra(request: pytest.FixtureRequest, phoenix_backend: Backend, phoenix_run_id: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infrastructure]:
    """The infrastructure stack (and its key pair) for the session; torn down and leak-checked after."""
    from phoenixci.harness import infrastructure

    with infrastructure(phoenix_backend, phoenix_run_id,
                        admin_cidr=str(request.config.getoption("--admin-cidr")),
                        keep=str(request.config.getoption("--keep")),
                        workdir=tmp_path_factory.mktemp("keys")) as infra:
        yield infra
