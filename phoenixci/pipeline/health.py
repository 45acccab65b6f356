"""The health gate: a new app server must answer /health and report the expected revision.

Also the address check after the app Elastic IP moved: the address itself must serve the new
revision before the old server is retired (``address_check_mode``, ``wait_for_address``).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from phoenixci.errors import ConfigError, HealthCheckError
from phoenixci.util import WaitTimeout, wait_until

log = logging.getLogger(__name__)

#: between two probes of a new server: a refused connection costs next to nothing, and probing
#: every 0.5 s cost each deploy ~0.25 s on average between the server answering and the gate passing
POLL_S = 0.1


@dataclass(frozen=True)
class Target:
    """What the health gate probes: the new instance and where it listens."""

    instance_id: str
    address: str
    port: int
    revision: str
    #: why the server will never serve ("" while that is not known): read between probes, so a
    #: release whose app keeps exiting fails at once instead of waiting out the health timeout
    gave_up: Callable[[], str] = field(default=lambda: "", compare=False, repr=False)


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
    """Wait until /health is 200 and /version names ``target.revision``; stop early (failing)
    once ``target.gave_up()`` names a reason."""
    last, reason = Observation(), ""

    def check() -> bool:
        nonlocal last, reason
        last = probe(target.address, target.port)
        if last.healthy_for(target.revision):
            return True
        reason = target.gave_up()
        return bool(reason)

    try:
        wait_until(check, timeout=timeout, interval=POLL_S,
                   what=f"{target.instance_id} at {target.address}:{target.port} to serve {target.revision}")
    except WaitTimeout as e:
        raise HealthCheckError(
            f"new server {target.instance_id} ({target.address}:{target.port}) did not become healthy "
            f"within {timeout:g}s: /health={last.health_status}, /version={last.version}, "
            f"error={last.error}", last_state=last) from e
    if reason:
        raise HealthCheckError(
            f"new server {target.instance_id} ({target.address}:{target.port}) will not serve "
            f"{target.revision}: {reason} (not waiting out the {timeout:g}s health timeout)", last_state=last)
    log.info("health gate passed: %s serves %s", target.instance_id, target.revision)


#: how deploy() makes sure the moved Elastic IP serves the new revision before retiring the old server
ADDRESS_CHECKS = ("auto", "http", "none")
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class AddressCheckError(HealthCheckError):
    """The app's public address did not serve the new revision in time after the move."""


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in _LOOPBACK
    except ValueError:
        return False


def address_check_mode(mode: str, address: str) -> str:
    """Resolve ``mode`` for the public ``address`` to "http" (probe it) or "none" (do not).

    ``http``: poll ``/version`` through the address (AWS: the public IP, which applies an
    association with a delay). ``none``: trust the API's association. ``auto``: ``none`` for an
    address in 127.0.0.0/8 — the local cloud's host-side Elastic IP listener, which the local
    cloud retargets before AssociateAddress returns; probing it from where deploy runs proves
    nothing (inside an instance 127.x is the instance's own loopback) — else ``http``. 127/8 is
    probed only when the caller asks for ``http`` explicitly.
    """
    if mode not in ADDRESS_CHECKS:
        raise ConfigError(f"address check {mode!r}: use one of {', '.join(ADDRESS_CHECKS)}")
    if mode == "auto":
        return "none" if is_loopback(address) else "http"
    return mode


def wait_for_address(address: str, port: int, revision: str, timeout: float) -> Observation:
    """Wait until ``http://address:port`` answers /health 200 and /version names ``revision``."""
    last = Observation()

    def check() -> bool:
        nonlocal last
        last = probe(address, port)
        return last.healthy_for(revision)

    try:
        wait_until(check, timeout=timeout, interval=POLL_S, what=f"{address}:{port} to serve {revision}")
    except WaitTimeout as e:
        raise AddressCheckError(
            f"the app address {address}:{port} did not serve {revision} within {timeout:g}s after the "
            f"move: /health={last.health_status}, /version={last.version}, error={last.error}",
            last_state=last) from e
    log.info("address check passed: %s:%d serves %s", address, port, revision)
    return last
