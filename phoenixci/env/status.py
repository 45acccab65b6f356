"""What `phoenixci status` shows: addresses, logins, the live revision, the last builds."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from phoenixci.env import buildbot
from phoenixci.env.state import EnvState
from phoenixci.errors import ConfigError
from phoenixci.pipeline.health import probe


def load_up(directory: Path) -> EnvState:
    state = EnvState.load(directory)
    if state is None:
        raise ConfigError(f"no environment is up in {directory}: run `phoenixci up` first "
                          "(or pass --env-dir / set PHOENIXCI_ENV_DIR)")
    return state


def status(directory: Path, *, builds: int = 10) -> dict[str, Any]:
    state = load_up(directory)
    info: dict[str, Any] = {
        "env_dir": str(directory), "phase": state.phase, "run_id": state.run_id, "backend": state.backend,
        "infra_stack": state.infra_stack, "app_url": state.app_url, "ci_url": state.ci_url,
        "git_remote": state.git_remote, "ssh_key": str(state.ssh_key),
        "ci_admin": {"user": "admin", "password": state.secret("admin_password")},
        "hosts": {name: {"instance_id": h.instance_id, "private_ip": h.private_ip, "public_ip": h.public_ip,
                         "ssh": f"ssh -F {state.ssh_config} {name}"} for name, h in state.hosts.items()},
        "ssh_config": str(state.ssh_config),
        "live_revision": None, "builds": [], "error": state.error or None,
    }
    if state.app_url:
        obs = probe(*state.app_address, timeout=3.0)
        info["live_revision"] = (obs.version or {}).get("revision")
        if obs.error:
            info["app_error"] = obs.error
    if state.ci_url:
        try:
            info["builds"] = [{"number": b.number, "revision": b.revision, "result": b.result, "state": b.state}
                              for b in buildbot.builds(state.ci_url, limit=builds)]
        except buildbot.BuildbotError as e:
            info["ci_error"] = str(e)
    return info
