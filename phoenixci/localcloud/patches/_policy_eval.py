"""Identity-policy evaluation over several resources, as AWS does it.

A request is allowed when, for EVERY resource it touches, some identity policy
allows the action and none denies it (an explicit Deny anywhere wins).

A statement applies when its Action/NotAction matches the action (case-insensitive
wildcards), its Resource/NotResource matches the resource (case-sensitive wildcards,
policy variables such as ``${aws:username}`` substituted) and its Condition holds for the
request context of that resource (:func:`_conditions.evaluate_condition`). A condition
operator IAM does not know makes a Deny apply and an Allow not (fail closed).

moto 5.2.5's own ``IAMPolicyStatement`` is not used for identity policies: it evaluates
only ``StringEquals`` (a failed one counts as an explicit Deny, even in an Allow), ignores
``NotResource`` and reads ``?``/``.`` in resource patterns as regular expressions.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phoenixci.localcloud.patches._conditions import (
    Context,
    UnknownOperator,
    evaluate_condition,
    substitute,
    wildcard,
)

log = logging.getLogger(__name__)

ContextSource = Mapping[str, Any] | Callable[[str], Mapping[str, Any]] | None


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


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def document(policy: Any) -> dict[str, Any]:
    """The JSON document of a policy as moto hands it out (Policy, dict or text)."""
    if isinstance(policy, Mapping) and "Statement" in policy:
        return dict(policy)
    if isinstance(policy, str):
        return dict(json.loads(policy))
    from moto.iam.access_control import IAMPolicy

    return dict(IAMPolicy(policy)._policy_json)


def statements(policy: Any) -> list[Mapping[str, Any]]:
    return [s for s in _as_list(document(policy).get("Statement")) if isinstance(s, Mapping)]


def action_matches(statement: Mapping[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(wildcard(str(p), action, ignore_case=True) for p in _as_list(statement["NotAction"]))
    return any(wildcard(str(p), action, ignore_case=True) for p in _as_list(statement.get("Action")))


def resource_matches(statement: Mapping[str, Any], resource: str, context: Context) -> bool:
    def hit(patterns: Any) -> bool:
        return any(wildcard(substitute(str(p), context), resource) for p in _as_list(patterns))

    if "NotResource" in statement:
        return not hit(statement["NotResource"])
    if "Resource" not in statement:  # trust policies: the role itself
        return True
    return hit(statement["Resource"])


def condition_applies(statement: Mapping[str, Any], context: Context) -> bool:
    """Does the statement's Condition hold? Unknown operators: a Deny applies, an Allow not."""
    try:
        return evaluate_condition(statement.get("Condition"), context)
    except UnknownOperator as error:
        log.warning("policy statement %s: %s", statement.get("Sid", ""), error)
        return statement.get("Effect") == "Deny"


def statement_effect(statement: Mapping[str, Any], action: str, resource: str,
                     context: Context) -> str | None:
    """"Allow" / "Deny" when the statement applies to (action, resource, context), else None."""
    if not action_matches(statement, action) or not resource_matches(statement, resource, context):
        return None
    if not condition_applies(statement, context):
        return None
    effect = statement.get("Effect")
    return str(effect) if effect in ("Allow", "Deny") else None


def _uses_context(statement: Mapping[str, Any]) -> bool:
    """Only statements with a Condition or a policy variable in their resources read the context."""
    return "Condition" in statement or "${" in json.dumps(
        [statement.get("Resource"), statement.get("NotResource")])


def _context_for(source: ContextSource, resource: str) -> Mapping[str, Any]:
    if source is None:
        return {}
    if callable(source):
        return source(resource)
    return source


def evaluate(policies: Iterable[Any], action: str, resources: str | Sequence[str],
             context: ContextSource = None) -> Decision:
    """Decide ``action`` on all ``resources`` for a principal holding ``policies``.

    ``context`` is the request context: one mapping for every resource, or a function
    resource ARN -> mapping (resource tags differ per resource).
    """
    compiled = [statements(policy) for policy in policies]
    needs_context = any(_uses_context(st) for policy in compiled for st in policy)
    for resource in as_resources(resources):
        ctx = _context_for(context, resource) if needs_context else {}
        permitted = False
        for policy in compiled:
            for statement in policy:
                effect = statement_effect(statement, action, resource, ctx)
                if effect == "Deny":
                    return Decision(False, explicit_deny=True, resource=resource)
                if effect == "Allow":
                    permitted = True
        if not permitted:
            return Decision(False, resource=resource)
    return Decision(True)
