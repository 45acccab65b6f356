"""Who is calling: the authenticated principal of the request being served.

moto authenticates a request in ``IAMRequestBase.check_signature`` and then forgets
who it was. Resources that CloudFormation creates for a stack are made by the
backends directly, so to authorise them (iam:PassRole) we remember the caller in a
context variable for the duration of ``BaseResponse.call_action``.
ThreadedMotoServer serves each request on its own thread and ``create_stack`` is
synchronous in moto 5.2.x, so the value is visible to everything the request does.
"""
from __future__ import annotations

import contextvars
import functools
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_MARK = "__phoenixci_patch__"


@dataclass(frozen=True)
class Caller:
    """An authenticated principal (IAM user or assumed-role session)."""

    arn: str
    account_id: str
    access_key: Any  # moto IAMUserAccessKey | AssumedRoleAccessKey

    def policies(self) -> list[Any]:
        """The identity policies moto knows for this principal (inline + attached)."""
        return list(self.access_key.collect_policies())


#: The caller of the request being served; None when IAM enforcement is off.
CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "phoenixci_current_caller", default=None)


def current_caller() -> Caller | None:
    return CURRENT_CALLER.get()


def is_patched(func: object) -> bool:
    return bool(getattr(func, _MARK, False))


def mark(func: Any) -> Any:
    setattr(func, _MARK, True)
    return func


def replace(owner: Any, name: str, value: Any) -> None:
    """Install ``value`` as ``owner.name`` (the one place patches assign into moto)."""
    setattr(owner, name, value)


def check() -> None:
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequestBase

    from phoenixci.localcloud.patches import require

    require(IAMRequestBase, "check_signature")
    require(BaseResponse, "call_action")


def install() -> None:
    from moto.core.responses import BaseResponse
    from moto.iam.access_control import IAMRequestBase

    if not is_patched(IAMRequestBase.check_signature):
        original_check_signature = IAMRequestBase.check_signature

        @functools.wraps(original_check_signature)
        def check_signature(self: Any) -> None:
            original_check_signature(self)
            CURRENT_CALLER.set(Caller(arn=self._access_key.arn, account_id=self.account_id,
                                      access_key=self._access_key))

        replace(IAMRequestBase, "check_signature", mark(check_signature))

    if not is_patched(BaseResponse.call_action):
        original_call_action = BaseResponse.call_action

        @functools.wraps(original_call_action)
        def call_action(self: Any) -> Any:
            token = CURRENT_CALLER.set(None)
            try:
                return original_call_action(self)
            finally:
                CURRENT_CALLER.reset(token)

        replace(BaseResponse, "call_action", mark(call_action))
    log.debug("caller capture installed")
