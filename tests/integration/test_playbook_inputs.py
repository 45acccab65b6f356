"""The playbook's inputs: the inventory comes from the EC2 API (phoenixci_ec2), a run that does
not exist is one clear error, and the roles pass ansible-lint's production profile."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phoenixci.env import ansible
from phoenixci.harness import Infrastructure

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _env(backend: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(backend.env(), ANSIBLE_CONFIG=str(ansible.PLAYBOOKS / "ansible.cfg"),
               ANSIBLE_INVENTORY_UNPARSED_FAILED="true", AWS_EC2_METADATA_DISABLED="true")
    return env


def test_inventory_groups_the_runs_instances_by_role(phoenix_backend: Any, scratch_infra: Infrastructure,
                                                    tmp_path: Path) -> None:
    source = ansible.write_inventory(tmp_path, run_id=scratch_infra.run_id, region=phoenix_backend.region,
                                     endpoint_url=phoenix_backend.endpoint_url,
                                     ssh_key=tmp_path / "key", known_hosts=tmp_path / "known_hosts")
    done = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(source), "--list"], capture_output=True,
                          text=True, env=_env(phoenix_backend), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    inv = json.loads(done.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))  # values from the API are untrusted
    assert inv["ci_server"]["hosts"] == ["ci-server"] and inv["ci_agent"]["hosts"] == ["ci-agent"]
    out = scratch_infra.stack.outputs
    server = inv["_meta"]["hostvars"]["ci-server"]
    assert server["ec2_instance_id"] == out["CiServerInstanceId"]
    assert server["ansible_host"] == out["CiServerPublicIp"]  # the Elastic IP when there is one
    agent = inv["_meta"]["hostvars"]["ci-agent"]
    assert agent["ansible_host"] == out["CiAgentPrivateIp"]
    assert "StrictHostKeyChecking=yes" in agent["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in agent["ansible_ssh_common_args"]


def test_a_playbook_run_against_a_missing_stack_is_one_clear_error(phoenix_backend: Any, tmp_path: Path) -> None:
    source = ansible.write_inventory(tmp_path, run_id="phx-nothing", region=phoenix_backend.region,
                                     endpoint_url=phoenix_backend.endpoint_url,
                                     ssh_key=tmp_path / "key", known_hosts=tmp_path / "known_hosts")
    with pytest.raises(ansible.PlaybookError) as info:
        ansible.run_playbook(inventory=source, extra_vars={}, aws_env=phoenix_backend.env(),
                             log_dir=tmp_path / "logs", timeout=120)
    message = str(info.value)
    assert "no running instance is tagged phoenixci:run-id=phx-nothing" in message, message
    assert "phoenixci-phx-nothing" in message and str(tmp_path / "logs") in message
    assert not list((tmp_path / "ansible-cp").glob("*")), "an SSH multiplexer was left"


def test_ansible_lint_production_profile_is_clean() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ansible.PLAYBOOKS / "ansible.cfg"), NO_COLOR="1",
               PATH=f"{BIN}:{env.get('PATH', '')}")
    done = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "--profile", "production",
                           "--format", "pep8", "playbooks/"], cwd=ansible.PLAYBOOKS.parent, capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stderr + done.stdout
