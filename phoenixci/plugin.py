"""pytest plugin: options and thin fixtures over the context managers in ``phoenixci.harness``.

Options (each with an environment fallback):
  --backend URL        PHOENIXCI_BACKEND   moto:// (default), aws://?region=…&profile=…
  --keep WHEN          PHOENIXCI_KEEP      never | on-failure | always (what to keep after the session)
  --admin-cidr CIDR    PHOENIXCI_ADMIN_CIDR
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
def phoenix_run_id() -> str:
    """The run id every resource of this session is tagged with."""
    from phoenixci.harness import new_run_id

    return new_run_id()


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
