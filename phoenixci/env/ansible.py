"""Running the playbook against a run's CI hosts: inventory from the EC2 API, pinned host keys,
variables in one file, output kept in the environment's logs, the recap parsed."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                    r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)
_FAILED = re.compile(r"^(?:fatal|failed): \[([^\]]+)\].*$", re.M)


class PlaybookError(PhoenixError):
    """The playbook failed; the message names the failed tasks and the full log."""

    def __init__(self, message: str, *, log_path: Path, recap: dict[str, dict[str, int]]) -> None:
        super().__init__(message)
        self.log_path = log_path
        self.recap = recap


@dataclass
class PlaybookResult:
    log_path: Path
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    return {m.group(1): dict(zip(keys, map(int, m.groups()[1:]), strict=True)) for m in _RECAP.finditer(output)}


def _last_task(output: str, upto: int) -> str:
    tasks = [m for m in re.finditer(r"^TASK \[(.+?)\]", output[:upto], re.M)]
    return tasks[-1].group(1) if tasks else "?"


def write_inventory(directory: Path, *, run_id: str, region: str, endpoint_url: str | None,
                    ssh_key: Path, known_hosts: Path) -> Path:
    """The phoenixci_ec2 inventory source of the run (JSON is YAML)."""
    path = directory / "inventory.phoenixci_ec2.yml"
    config = {"plugin": "phoenixci_ec2", "run_id": run_id, "region": region,
              "endpoint_url": endpoint_url or "", "ssh_private_key_file": str(ssh_key),
              "known_hosts_file": str(known_hosts)}
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def run_playbook(*, inventory: Path, extra_vars: dict[str, Any], aws_env: dict[str, str], log_dir: Path,
                 name: str = "site", playbook: Path | None = None, timeout: float = 1800.0) -> PlaybookResult:
    """``ansible-playbook playbooks/site.yml`` with the run's inventory and variables."""
    log_dir.mkdir(parents=True, exist_ok=True)
    vars_file = log_dir.parent / "vars.json"
    vars_file.touch(mode=0o600)
    vars_file.write_text(json.dumps(extra_vars, indent=2) + "\n")
    number = len(list(log_dir.glob(f"{name}-*.log"))) + 1
    log_path = log_dir / f"{name}-{number}.log"
    binary = Path(sys.executable).with_name("ansible-playbook")
    if not binary.exists():
        raise PhoenixError(f"ansible-playbook is not installed next to {sys.executable}: "
                           "pip install 'phoenixci[host]' (make setup)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(aws_env)
    # a socket path has at most 107 bytes, and ansible adds ~28 to the directory: keep it short
    control_dir = Path(tempfile.mkdtemp(prefix="phx-cp-"))
    env.update(ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir), ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
               ANSIBLE_LOCAL_TEMP=str(log_dir.parent / "ansible-tmp"), AWS_EC2_METADATA_DISABLED="true")
    argv = [str(binary), "-i", str(inventory), "-e", f"@{vars_file}", str(playbook or PLAYBOOKS / f"{name}.yml")]
    log.info("running %s (log %s)", " ".join(argv), log_path)
    with open(log_path, "w") as out:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PLAYBOOKS,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise PlaybookError(f"the playbook did not finish within {timeout:g}s; see {log_path}",
                                log_path=log_path, recap={}) from e
        finally:
            close_connections(control_dir)
            shutil.rmtree(control_dir, ignore_errors=True)
    output = log_path.read_text(errors="replace")
    recap = parse_recap(output)
    if proc.returncode != 0:
        raise PlaybookError(_failure_message(output, proc.returncode, log_path), log_path=log_path, recap=recap)
    return PlaybookResult(log_path=log_path, recap=recap)


def close_connections(control_dir: Path) -> None:
    """End the SSH multiplexers the run left (ControlPersist): no process outlives a command."""
    for sock in control_dir.glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "phoenixci"], capture_output=True,
                       timeout=10, check=False)
        sock.unlink(missing_ok=True)


def _failure_message(output: str, rc: int, log_path: Path) -> str:
    failures = []
    for m in _FAILED.finditer(output):
        detail = m.group(0)
        after = output[m.end():m.end() + 2000].split("\nPLAY RECAP", 1)[0]
        msg = re.search(r'"msg": "((?:[^"\\]|\\.)*)"', detail) or re.search(r"^    msg: (.+)$", after, re.M)
        stderr = re.search(r"^    stderr: (.+)$", after, re.M)
        said = "; ".join(x.group(1).strip("'\"")[:300] for x in (msg, stderr) if x and x.group(1).strip("'\""))
        stdout = re.search(r"^    stdout: \|-?\n((?:        .*\n)+)", after, re.M)
        if stdout and not (stderr and stderr.group(1).strip("'\"")):
            said += " | " + " ".join(stdout.group(1).split())[-300:]
        failures.append(f"{m.group(1)}: task '{_last_task(output, m.start())}'" + (f": {said}" if said else ""))
    inventory = re.search(r"^phoenixci_ec2: (.+)$", output, re.M)
    if not failures and inventory:
        failures = [f"inventory: {inventory.group(1)}"]
    if not failures:
        errors = [ln for ln in output.splitlines() if ln.startswith("[ERROR]")]
        origin = re.search(r"^Origin: (.+)$", output, re.M)
        if errors:
            failures = [errors[0] + (f" ({origin.group(1)})" if origin else "")]
    if not failures:
        tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
        failures = [" | ".join(tail)[:500] or f"exit {rc}"]
    return f"the playbook failed ({'; '.join(failures)}); full output: {log_path}"
