"""The health gate: a new app server must answer /health and report the expected revision."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from phoenixci.errors import HealthCheckError
from phoenixci.util import WaitTimeout, wait_until

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What the health gate probes: the new instance and where it listens."""

    instance_id: str
    address: str
    port: int
    revision: str


class HealthCheck(Protocol):
    """Returns when ``target`` is healthy; raises HealthCheckError otherwise."""

    def __call__(self, target: Target, timeout: float) -> None: ...


@dataclass
class Observation:
    """One probe of the app: what /health and /version said."""

    health_status: int | None = None
    version: dict | None = None
    error: str | None = None

    def healthy_for(self, revision: str) -> bool:
        return self.health_status == 200 and bool(self.version) and \
            (self.version or {}).get("revision") == revision


def probe(address: str, port: int, *, timeout: float = 3.0) -> Observation:
    """GET /health and /version once."""
    obs = Observation()
    base = f"http://{address}:{port}"
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as resp:  # noqa: S310
            obs.health_status = resp.status
        with urllib.request.urlopen(f"{base}/version", timeout=timeout) as resp:  # noqa: S310
            obs.version = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        obs.health_status = obs.health_status or e.code
        obs.error = f"HTTP {e.code} from {e.url}"
    except (OSError, ValueError) as e:
        obs.error = f"{type(e).__name__}: {e}"
    return obs


def http_health_check(target: Target, timeout: float) -> None:
    """Wait until /health is 200 and /version names ``target.revision``."""
    last = Observation()

    def check() -> bool:
        nonlocal last
        last = probe(target.address, target.port)
        return last.healthy_for(target.revision)

    try:
        wait_until(check, timeout=timeout, interval=0.5,
                   what=f"{target.instance_id} at {target.address}:{target.port} to serve {target.revision}")
    except WaitTimeout as e:
        raise HealthCheckError(
            f"new server {target.instance_id} ({target.address}:{target.port}) did not become healthy "
            f"within {timeout:g}s: /health={last.health_status}, /version={last.version}, "
            f"error={last.error}", last_state=last) from e
    log.info("health gate passed: %s serves %s", target.instance_id, target.revision)
