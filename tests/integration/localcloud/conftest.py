"""Fixtures for the local cloud tests (helpers in cloudkit.py): one cloud daemon per module."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudkit import Cloud, require_root, running_cloud


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_root()
    with running_cloud(tmp_path_factory.mktemp("cloud") / "state") as c:
        yield c

@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "phoenixci-test", "-f", str(key)],
                   check=True, timeout=30)
    return key
