"""A bucket policy's Deny refuses every request on the bucket and on its objects, as S3's AccessDenied.

AWS behaviour restored (S3 User Guide, "How Amazon S3 authorizes a request": an explicit Deny in
the bucket policy ends the evaluation for bucket and object operations alike; error code list:
``AccessDenied`` "Access Denied", HTTP 403). moto 5.2.5 applies bucket policies to object GET/PUT/
HEAD/DELETE only, answering a Deny with an empty 403 (clients see ``403 Forbidden``, not
``AccessDenied``), and never to bucket operations: a TLS-only bucket still listed its keys over
plain HTTP.

Evaluation is ``FakeBucket.get_permission`` (patched by cfn_bucket_policy: Conditions against the
request being served); the action is the one moto's S3 routing names for IAM (``s3:ListBucket``,
``s3:GetObject`` …), the resource the bucket's or the object's ARN.

moto 5.2.5 hooks: ``ActionAuthenticatorMixin._authenticate_and_authorize_s3_action`` (after the
identity-policy check it performs), only while enforcement is on; ``S3Response._key_response``,
whose own early bucket-policy/ACL refusal (a bare ``403, {}, ""``) becomes ``AccessDenied``.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "__phoenixci_bucket_policy_deny__"
_BARE_403: tuple[int, dict[str, str], str] = (403, {}, "")


def denied(response: Any, bucket_name: str, key_name: str | None) -> bool:
    """Whether the bucket's policy explicitly denies the S3 request ``response`` is serving."""
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    partition = get_partition(str(getattr(response, "region", "") or "us-east-1"))
    bucket = s3_backends[response.current_account][partition].buckets.get(bucket_name)
    action = (getattr(response, "data", None) or {}).get("Action")
    if bucket is None or bucket.policy is None or not action:
        return False
    resource = f"arn:{partition}:s3:::{bucket_name}" + (f"/{key_name}" if key_name else "")
    return bool(bucket.get_permission(f"s3:{action}", resource) == PermissionResult.DENIED)


def check() -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.s3.exceptions import S3AccessDeniedError
    from moto.s3.models import FakeBucket

    from phoenixci.localcloud.patches import require

    require(ActionAuthenticatorMixin, "_authenticate_and_authorize_s3_action")
    require(ActionAuthenticatorMixin, "request_count")
    require(settings, "INITIAL_NO_AUTH_ACTION_COUNT")
    require(FakeBucket, "get_permission")
    require(S3AccessDeniedError, "__init__")
    from moto.s3.responses import S3Response

    require(S3Response, "_key_response")


def install() -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.s3.exceptions import S3AccessDeniedError

    from phoenixci.localcloud.patches._caller import replace

    original = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def authorize(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        original(self, bucket_name=bucket_name, key_name=key_name)
        if enforcing and bucket_name and denied(self, bucket_name, key_name):
            raise S3AccessDeniedError()

    from moto.s3.responses import S3Response

    original_key_response = S3Response._key_response

    @functools.wraps(original_key_response)
    def key_response(self: Any, request: Any, full_url: str) -> Any:
        result = original_key_response(self, request, full_url)
        if result == _BARE_403:
            raise S3AccessDeniedError()  # key_response serialises it as S3's AccessDenied
        return result

    setattr(authorize, _MARK, True)
    replace(ActionAuthenticatorMixin, "_authenticate_and_authorize_s3_action", authorize)
    replace(S3Response, "_key_response", key_response)
    log.debug("bucket policies deny bucket and object requests")
