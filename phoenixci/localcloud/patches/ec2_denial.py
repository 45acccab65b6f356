"""EC2 denials look like EC2's: HTTP 403 ``UnauthorizedOperation``.

AWS behaviour restored: EC2 answers an unauthorised call with code
``UnauthorizedOperation`` ("You are not authorized to perform this operation."),
not IAM's ``AccessDenied``; clients (and our deploy code) branch on that code.

moto 5.2.5 hook: ``moto.iam.access_control.IAMRequest._raise_access_denied``.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from moto.core.exceptions import _RESTError

log = logging.getLogger(__name__)

MESSAGE = "You are not authorized to perform this operation."


class UnauthorizedOperationError(_RESTError):
    """EC2's authorization failure (HTTP 403)."""

    code = 403

    def __init__(self, detail: str = "") -> None:
        super().__init__("UnauthorizedOperation", f"{MESSAGE} {detail}".strip())


def unauthorized(user_arn: str, action: str, resource: str | None = None) -> UnauthorizedOperationError:
    """The error EC2 returns when ``user_arn`` may not perform ``action`` (on ``resource``)."""
    detail = f"User: {user_arn} is not authorized to perform: {action}"
    if resource:
        detail += f" on resource: {resource}"
    return UnauthorizedOperationError(detail)


def check() -> None:
    from moto.iam.access_control import IAMRequest

    from phoenixci.localcloud.patches import require

    require(IAMRequest, "_raise_access_denied")


def install() -> None:
    from moto.iam.access_control import IAMRequest

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original = IAMRequest._raise_access_denied
    if is_patched(original):
        return

    @functools.wraps(original)
    def _raise_access_denied(self: Any) -> None:
        if self._service == "ec2":
            raise unauthorized(self._access_key.arn, self._action)
        original(self)

    replace(IAMRequest, "_raise_access_denied", mark(_raise_access_denied))
    log.debug("EC2 UnauthorizedOperation denials installed")
