"""Short-lived credentials for an instance profile's role, minted in-process.

The local cloud's IMDS hands these to code on an instance, exactly as EC2 does:
only for a role whose trust policy lets ``ec2.amazonaws.com`` assume it. moto
accepts and enforces the returned keys like any assumed-role session.
"""
from __future__ import annotations

import datetime
import logging
import os
from typing import Any

from phoenixci.errors import ConfigError, PhoenixError

log = logging.getLogger(__name__)

EC2_SERVICE = "ec2.amazonaws.com"
#: how long the credentials the IMDS hands an instance last
INSTANCE_CREDENTIAL_SECONDS = 3600
#: test only: a shorter lifetime (seconds), so a test sees them expire (AWS's minimum is 900 s)
TEST_LIFETIME_ENV = "PHOENIXCI_TEST_ROLE_CREDENTIAL_SECONDS"


def instance_credential_seconds() -> int:
    """The lifetime of instance-role credentials: 3600 s, or ``$PHOENIXCI_TEST_ROLE_CREDENTIAL_SECONDS``."""
    raw = os.environ.get(TEST_LIFETIME_ENV, "").strip()
    if not raw:
        return INSTANCE_CREDENTIAL_SECONDS
    if not raw.isdigit() or not 1 <= int(raw) <= 43200:
        raise ConfigError(f"{TEST_LIFETIME_ENV}={raw!r}: give whole seconds from 1 to 43200 (test only)")
    return int(raw)


class RoleTrustError(PhoenixError):
    """The role does not exist or does not trust the EC2 service."""

    def __init__(self, message: str, *, role_arn: str) -> None:
        super().__init__(message)
        self.role_arn = role_arn


def mint_role_credentials(account_id: str, role_arn: str, session_name: str,
                          duration: int = 3600, region: str = "us-east-1") -> dict[str, Any]:
    """Assume ``role_arn`` on behalf of EC2 and return STS-style ``Credentials``.

    Returns ``{"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}``
    (Expiration is an aware UTC datetime), plus ``"AssumedRoleArn"``.
    """
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends
    from moto.utilities.utils import get_partition

    from phoenixci.localcloud.patches.trust import trust_allows

    partition = get_partition(region)
    try:
        role = iam_backends[account_id][partition].get_role_by_arn(role_arn)
    except NotFoundException as exc:
        raise RoleTrustError(f"role {role_arn} does not exist", role_arn=role_arn) from exc
    if not trust_allows(role.assume_role_policy_document, "sts:AssumeRole", service=EC2_SERVICE):
        raise RoleTrustError(
            f"role {role_arn} does not trust {EC2_SERVICE} (its trust policy must allow "
            f"sts:AssumeRole for Service {EC2_SERVICE})", role_arn=role_arn)
    assumed = sts_backends[account_id][partition].assume_role(
        region_name=region, role_session_name=session_name, role_arn=role_arn,
        policy=None, duration=duration, external_id=None)  # type: ignore[arg-type]
    log.debug("minted credentials for %s (session %s)", role_arn, session_name)
    return {
        "AccessKeyId": assumed.access_key_id,
        "SecretAccessKey": assumed.secret_access_key,
        "SessionToken": assumed.session_token,
        "Expiration": assumed.expiration.replace(tzinfo=datetime.UTC),
        "AssumedRoleArn": assumed.arn,
    }
