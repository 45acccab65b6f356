"""What the CI agent installs of phoenixci: the wheel built from this checkout plus boto3, from
the local cloud's wheelhouse with no index — no moto, no PyYAML, no rich — and the pipeline
commands work with it."""
from __future__ import annotations

import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest

from phoenixci.env.lifecycle import build_wheel
from phoenixci.localcloud.mirror import CI_REQUIREMENTS, DEFAULT_REQUIREMENTS, DEFAULT_WHEELHOUSE

pytestmark = pytest.mark.integration


def test_the_agents_install_has_only_boto3_and_the_standard_library(phoenix_backend: Any, tmp_path: Path) -> None:
    # phoenix_backend: the local cloud has filled the wheelhouse the instances install from
    wheel = build_wheel(tmp_path / "dist")
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    py = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(DEFAULT_WHEELHOUSE),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True,
                            text=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert {"phoenixci", "boto3", "botocore"} <= names
    assert not names & {"moto", "pyyaml", "rich", "cryptography", "ansible-core", "pytest", "werkzeug"}, names
    cli = tmp_path / "venv" / "bin" / "phoenixci"
    assert subprocess.run([str(cli), "deploy", "--help"], capture_output=True, timeout=60).returncode == 0
    probe = subprocess.run([str(py), "-c", "import phoenixci.pipeline.deploy, phoenixci.pipeline.publish, "
                            "phoenixci.pipeline.package; from phoenixci.templates import load_template; "
                            "print(load_template('app-server').path.name)"], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0 and probe.stdout.strip() == "app-server.yaml", probe.stderr
    host_only = subprocess.run([str(cli), "demo"], capture_output=True, text=True, timeout=60)
    assert host_only.returncode == 1 and "needs the host-side extras" in host_only.stderr
    assert "Traceback" not in host_only.stderr


@pytest.mark.unit
def test_the_wheelhouse_pins_what_the_roles_install() -> None:
    import yaml

    group_vars = yaml.safe_load((Path(__file__).resolve().parents[2] / "playbooks/group_vars/all.yml").read_text())
    wanted = (group_vars["buildbot_requirements"] + group_vars["buildbot_worker_requirements"]
              + group_vars["phoenixci_requirements"])
    assert set(wanted) <= set(CI_REQUIREMENTS) <= set(DEFAULT_REQUIREMENTS)
