"""Instance-profile credentials for the IMDS: minted per instance and role, cached, refreshed early.

EC2 rotates an instance's role credentials well before they expire; so does the local cloud:
a cached set is re-minted once less than ``refresh_before`` seconds (15 minutes) remain.
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from phoenixci.localcloud.imds_tree import iso_z
from phoenixci.localcloud.instances import InstanceInfo

log = logging.getLogger(__name__)

CredentialsProvider = Callable[[InstanceInfo], dict[str, Any]]


def mint_for_instance(info: InstanceInfo) -> dict[str, Any]:
    """Default provider: STS credentials of the instance profile's role (the role must trust EC2)."""
    from phoenixci.localcloud.rolecreds import instance_credential_seconds, mint_role_credentials

    assert info.role_arn is not None
    return mint_role_credentials(info.account_id, info.role_arn, session_name=info.instance_id,
                                 duration=instance_credential_seconds(), region=info.region)


def _as_datetime(value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class CredentialCache:
    """Role credentials per (instance, role), re-minted when less than ``refresh_before`` s remain."""

    def __init__(self, provider: CredentialsProvider, *, refresh_before: float = 900.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._provider = provider
        self.refresh_before = refresh_before
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, info: InstanceInfo) -> dict[str, Any]:
        """``{AccessKeyId, SecretAccessKey, Token, Expiration, LastUpdated}`` (datetimes UTC)."""
        assert info.role_arn is not None
        key = (info.instance_id, info.role_arn)
        with self._lock:
            now = self._clock()
            cached = self._cache.get(key)
            if cached is not None and cached["Expiration"].timestamp() - now > self.refresh_before:
                return cached
            raw = self._provider(info)
            creds = {
                "AccessKeyId": raw["AccessKeyId"], "SecretAccessKey": raw["SecretAccessKey"],
                "Token": raw.get("SessionToken", raw.get("Token")),
                "Expiration": _as_datetime(raw["Expiration"]),
                "LastUpdated": datetime.datetime.fromtimestamp(now, datetime.UTC),
            }
            self._cache[key] = creds
            log.info("credentials for %s as %s, expiring %s", info.instance_id, info.role_arn,
                     iso_z(creds["Expiration"]))
            return creds

    def forget(self, instance_id: str) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == instance_id]:
                del self._cache[key]


