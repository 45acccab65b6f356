"""Identity-policy evaluation over several resources, as AWS does it.

A request is allowed when, for EVERY resource it touches, some identity policy
allows the action and none denies it (an explicit Deny anywhere wins).
Statements are evaluated by moto's own ``IAMPolicy`` so that matching stays
moto's (wildcards in Action/Resource; moto's limited Condition support).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool = False
    resource: str | None = None  # first resource that was not allowed

    def __bool__(self) -> bool:
        return self.allowed


def as_resources(resource: str | Sequence[str]) -> list[str]:
    if isinstance(resource, str):
        return [resource]
    return list(resource) or ["*"]


def evaluate(policies: Iterable[Any], action: str, resources: str | Sequence[str]) -> Decision:
    """Decide ``action`` on all ``resources`` for a principal holding ``policies``."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    compiled = [IAMPolicy(policy) for policy in policies]
    for resource in as_resources(resources):
        permitted = False
        for policy in compiled:
            result = policy.is_action_permitted(action, resource)
            if result == PermissionResult.DENIED:
                return Decision(False, explicit_deny=True, resource=resource)
            if result == PermissionResult.PERMITTED:
                permitted = True
        if not permitted:
            return Decision(False, resource=resource)
    return Decision(True)
