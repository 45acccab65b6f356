"""The record of an environment, written after every step (Molecule-style) so that a later
command — or `phoenixci down` after a crash — knows what exists."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phoenixci.errors import ConfigError

DEFAULT_ENV_DIR = Path("/var/lib/phoenixci/env")
STATE_FILE = "env.json"
#: what an environment's directory holds besides env.json and logs/ (removed with the environment)
WORK_FILES = ("ssh", "secrets", "app", "repo", "dist", "ansible-tmp", "ansible-cp", "vars.json",
              "inventory.phoenixci_ec2.yml")


def env_dir(given: str | Path | None = None) -> Path:
    """The environment directory: ``given``, else $PHOENIXCI_ENV_DIR, else /var/lib/phoenixci/env."""
    return Path(given or os.environ.get("PHOENIXCI_ENV_DIR") or DEFAULT_ENV_DIR).resolve()


@dataclass
class Host:
    name: str
    instance_id: str
    private_ip: str
    public_ip: str = ""

    @property
    def address(self) -> str:
        return self.public_ip or self.private_ip


@dataclass
class EnvState:
    """phase: creating → up; failed (up did not finish); removing (down in progress)."""

    directory: str
    backend: str
    run_id: str
    phase: str = "creating"
    cloud_dir: str = ""          # the local cloud daemon's state dir (moto:// only)
    infra_stack: str = ""
    key_name: str = ""
    app_url: str = ""
    ci_url: str = ""
    git_remote: str = ""
    live_revision: str = ""
    instance_endpoint: str = ""  # the AWS API as instances reach it (local cloud only)
    health_timeout: float = 0    # seconds a release has to become healthy (0: the backend's default)
    hosts: dict[str, Host] = field(default_factory=dict)
    error: str = ""

    # -- files of the environment --------------------------------------------------------
    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def app_address(self) -> tuple[str, int]:
        """(host, port) of the app's stable address (its Elastic IP)."""
        host, _, port = self.app_url.split("//", 1)[1].rstrip("/").rpartition(":")
        return host, int(port)

    @property
    def ssh_key(self) -> Path:
        return self.path / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.path / "ssh" / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """``ssh -F`` this: ci-server, ci-agent, and app servers through the CI server."""
        return self.path / "ssh" / "config"

    @property
    def secrets_dir(self) -> Path:
        return self.path / "secrets"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def secret(self, name: str) -> str:
        try:
            return (self.secrets_dir / name).read_text().strip()
        except OSError:
            return ""

    def ssh_argv(self, host: Host, *command: str, user: str = "admin") -> list[str]:
        return ["ssh", "-i", str(self.ssh_key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{user}@{host.address}", *command]

    def ssh_command(self, host: Host, user: str = "admin") -> str:
        return (f"ssh -i {self.ssh_key} -o UserKnownHostsFile={self.known_hosts} "
                f"-o StrictHostKeyChecking=yes {user}@{host.address}")

    # -- persistence -----------------------------------------------------------------------
    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> EnvState | None:
        try:
            data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise ConfigError(f"cannot read {directory / STATE_FILE}: permission denied (run phoenixci as the "
                              "user who brought the environment up, or pass another --env-dir)") from e
        except ValueError as e:
            raise ConfigError(f"{directory / STATE_FILE} is not a phoenixci environment record ({e}): "
                              "remove it, or pass another --env-dir") from e
        hosts = {k: Host(**v) for k, v in data.pop("hosts", {}).items()}
        return cls(**data, hosts=hosts)

    def forget(self) -> None:
        (self.path / STATE_FILE).unlink(missing_ok=True)

    def discard(self) -> None:
        """Forget the environment and delete its keys, secrets and work files; its logs stay."""
        self.forget()
        for name in WORK_FILES:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
