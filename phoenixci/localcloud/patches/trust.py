"""Trust policies (role assume-role policy documents) evaluated as AWS does.

AWS behaviour restored, for ``sts:AssumeRole`` by an IAM user or role session:
- a role trusted only by a service (``{"Service": "ec2.amazonaws.com"}``) is not
  assumable by a user: 403 AccessDenied (moto 5.2.5 crashes: HTTP 500);
- a statement whose principal does not match is neutral, not a Deny;
- ``arn:aws:iam::ACCT:root`` / ``ACCT`` trusts every principal of that account
  (their identity policy must still allow the call); a role ARN trusts its sessions;
- an explicit Deny statement that applies wins.

moto 5.2.5 hooks: ``moto.iam.access_control.IAMRequestBase._check_role_trust_relationship``
(replaced) and ``IAMPolicyStatement._check_principal`` (no crash on non-AWS principals).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _wildcard(pattern: str, value: str) -> bool:
    regex = "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"
    return re.match(regex, value, flags=re.IGNORECASE) is not None


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def aws_principal_matches(expected: str, caller_arn: str) -> bool:
    """Does trust-policy ``AWS`` principal ``expected`` cover the caller ``caller_arn``?"""
    if expected == "*" or expected == caller_arn:
        return True
    if re.fullmatch(r"\d{12}", expected):
        return _account_of(caller_arn) == expected
    if re.fullmatch(r"arn:[^:]+:iam::\d{12}:root", expected):
        return _account_of(caller_arn) == _account_of(expected)
    role = re.fullmatch(r"arn:([^:]+):iam::(\d{12}):role/(?:.*/)?([^/]+)", expected)
    session = re.fullmatch(r"arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/.+", caller_arn)
    if role and session:
        return role.groups() == session.groups()
    return False


def principal_matches(principal: Any, caller_arn: str | None = None,
                      service: str | None = None) -> bool:
    """Does a statement's ``Principal`` element cover the caller (an ARN or a service)?"""
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    if caller_arn and any(aws_principal_matches(str(v), caller_arn)
                          for v in _as_list(principal.get("AWS"))):
        return True
    return bool(service and any(str(v) == service for v in _as_list(principal.get("Service"))))


def _statement_applies(statement: Mapping[str, Any], action: str, caller_arn: str | None,
                       service: str | None, condition_values: Mapping[str, str]) -> bool:
    from moto.iam.access_control import IAMPolicyStatement

    if "NotAction" in statement:
        if any(_wildcard(a, action) for a in _as_list(statement["NotAction"])):
            return False
    elif not any(_wildcard(a, action) for a in _as_list(statement.get("Action"))):
        return False
    if "NotPrincipal" in statement:
        if principal_matches(statement["NotPrincipal"], caller_arn, service):
            return False
    elif not principal_matches(statement.get("Principal"), caller_arn, service):
        return False
    # moto's condition support (StringEquals on sts:ExternalId; others ignored)
    return bool(IAMPolicyStatement(dict(statement))._check_conditions(dict(condition_values)))


def trust_allows(document: str | Mapping[str, Any], action: str = "sts:AssumeRole", *,
                 caller_arn: str | None = None, service: str | None = None,
                 condition_values: Mapping[str, str] | None = None) -> bool:
    """True when the trust policy allows (and does not deny) ``action`` for the caller."""
    policy = json.loads(document) if isinstance(document, str) else document
    allowed = False
    for statement in _as_list(policy.get("Statement")):
        if not _statement_applies(statement, action, caller_arn, service, condition_values or {}):
            continue
        if statement.get("Effect") == "Deny":
            return False
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


def check() -> None:
    from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase
    from moto.iam.utils import format_incoming_conditional_values

    from phoenixci.localcloud.patches import require

    require(IAMRequestBase, "_check_role_trust_relationship")
    require(IAMPolicyStatement, "_check_principal")
    require(IAMPolicyStatement, "_check_conditions")
    assert callable(format_incoming_conditional_values)


def install() -> None:
    from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase
    from moto.iam.utils import format_incoming_conditional_values

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    if not is_patched(IAMRequestBase._check_role_trust_relationship):
        def _check_role_trust_relationship(self: Any, role_arn: str) -> bool:
            role = self.backend.get_role_by_arn(role_arn)
            allowed = trust_allows(
                role.assume_role_policy_document, self._action,
                caller_arn=self._access_key.arn,
                condition_values=format_incoming_conditional_values(self._data))
            if not allowed:
                log.info("trust policy of %s does not let %s %s", role_arn,
                         self._access_key.arn, self._action)
            return allowed

        replace(IAMRequestBase, "_check_role_trust_relationship", mark(_check_role_trust_relationship))

    if not is_patched(IAMPolicyStatement._check_principal):
        def _check_principal(self: Any, principal: str) -> bool:
            expected = self._statement.get("Principal")
            return not expected or principal_matches(expected, caller_arn=principal)

        replace(IAMPolicyStatement, "_check_principal", mark(_check_principal))
    log.debug("trust policy evaluation installed")
