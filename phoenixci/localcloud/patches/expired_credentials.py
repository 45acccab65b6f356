"""Temporary (assumed-role) credentials are refused once they have expired.

AWS behaviour restored (IAM User Guide, "Temporary security credentials in IAM": "After
temporary credentials expire, any calls that you make with those credentials will fail"):
moto 5.2.5 keeps accepting an assumed role's keys forever, so the local cloud's instance-role
credentials (the IMDS renews them 15 minutes before expiry, imds_creds.py) never expired.
The refusal has each service's shape (AWS Knowledge Center "security-token-expired"; the
EC2 API's common client errors; the S3 error-code list):

- query-protocol services (STS, IAM, CloudFormation): HTTP 403 ``ExpiredToken`` "The security
  token included in the request is expired";
- JSON-protocol services (SSM, …): HTTP 403 ``ExpiredTokenException``, same message;
- EC2: HTTP 400 ``RequestExpired`` "Request has expired." (its code for expired temporary
  credentials too);
- S3: HTTP 400 ``ExpiredToken`` "The provided token has expired."

moto 5.2.5 hooks: ``moto.iam.access_control.AssumedRoleAccessKey.__init__`` (the key lookup
every signed request makes) reports an expired key as ``CreateAccessKeyFailure("ExpiredToken")``;
``IAMRequest._raise_invalid_access_key`` and ``S3IAMRequest._raise_invalid_access_key`` answer it.
"""
from __future__ import annotations

import datetime
import functools
import logging
from typing import Any

from moto.core.exceptions import JsonRESTError, _RESTError
from moto.s3.exceptions import S3ClientError

log = logging.getLogger(__name__)

EXPIRED = "ExpiredToken"
TOKEN_EXPIRED = "The security token included in the request is expired"
_MARK = "__phoenixci_expired_credentials__"


class ExpiredTokenError(_RESTError):
    code = 403

    def __init__(self) -> None:
        super().__init__("ExpiredToken", TOKEN_EXPIRED)


class ExpiredTokenJsonError(JsonRESTError):
    code = 403

    def __init__(self) -> None:
        super().__init__("ExpiredTokenException", TOKEN_EXPIRED)


class RequestExpiredError(_RESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("RequestExpired", "Request has expired.")


class S3ExpiredTokenError(S3ClientError):
    def __init__(self) -> None:
        super().__init__("ExpiredToken", "The provided token has expired.")


def expired(expiration: datetime.datetime, now: datetime.datetime | None = None) -> bool:
    """moto keeps naive UTC datetimes."""
    now = now or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return expiration.replace(tzinfo=None) <= now


def refusal(service: str, json_protocol: bool) -> Exception:
    if service == "ec2":
        return RequestExpiredError()
    if service == "s3":
        return S3ExpiredTokenError()
    return ExpiredTokenJsonError() if json_protocol else ExpiredTokenError()


def check() -> None:
    from moto.iam.access_control import AssumedRoleAccessKey, IAMRequest, S3IAMRequest

    from phoenixci.localcloud.patches import require

    require(AssumedRoleAccessKey, "__init__")
    require(IAMRequest, "_raise_invalid_access_key")
    require(S3IAMRequest, "_raise_invalid_access_key")


def install() -> None:
    from moto.iam.access_control import AssumedRoleAccessKey, CreateAccessKeyFailure, IAMRequest, S3IAMRequest
    from moto.sts.models import sts_backends

    from phoenixci.localcloud.patches._caller import replace

    original_init = AssumedRoleAccessKey.__init__
    if getattr(original_init, _MARK, False):
        return

    @functools.wraps(original_init)
    def init(self: Any, account_id: str, partition: str, access_key_id: str, headers: dict[str, str]) -> None:
        original_init(self, account_id, partition, access_key_id, headers)
        for role in sts_backends[account_id][partition].assumed_roles:
            if role.access_key_id == access_key_id and expired(role.expiration):
                raise CreateAccessKeyFailure(reason=EXPIRED)

    def answer(original: Any, service_of: Any) -> Any:
        @functools.wraps(original)
        def raise_invalid_access_key(self: Any, reason: str) -> None:
            if reason == EXPIRED:
                headers = getattr(self, "_headers", None) or {}
                raise refusal(service_of(self), json_protocol="X-Amz-Target" in headers)
            original(self, reason)
        return raise_invalid_access_key

    setattr(init, _MARK, True)
    replace(AssumedRoleAccessKey, "__init__", init)
    replace(IAMRequest, "_raise_invalid_access_key",
            answer(IAMRequest._raise_invalid_access_key, lambda r: str(getattr(r, "_service", ""))))
    replace(S3IAMRequest, "_raise_invalid_access_key", answer(S3IAMRequest._raise_invalid_access_key, lambda r: "s3"))
    log.debug("expired temporary credentials are refused")
