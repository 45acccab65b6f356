"""``iam:PassRole`` is checked whenever a role is handed to an instance.

AWS behaviour restored: to launch an instance with an instance profile (RunInstances
with IamInstanceProfile, AssociateIamInstanceProfile, ReplaceIamInstanceProfileAssociation,
or an ``AWS::EC2::Instance`` with IamInstanceProfile in a stack), the caller needs
``iam:PassRole`` on the profile's role. Otherwise EC2 answers 403
``UnauthorizedOperation`` before the instance exists, and CloudFormation marks the
instance CREATE_FAILED and rolls the stack back (see cfn_rollback). moto 5.2.5 never
checks PassRole. With IAM enforcement off (bootstrap) there is no caller: allowed.

moto 5.2.5 hooks:
- ``moto.core.authorization.ActionAuthenticatorMixin._authenticate_and_authorize_normal_action``
  (after the normal check, for the EC2 actions above);
- ``moto.ec2.models.instances.Instance.create_from_cloudformation_json`` (classmethod).
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from phoenixci.localcloud.patches._caller import Caller, current_caller, is_patched, mark, replace
from phoenixci.localcloud.patches.cfn_rollback import ResourceCreateFailed

log = logging.getLogger(__name__)

EC2_ACTIONS = frozenset({
    "RunInstances", "AssociateIamInstanceProfile", "ReplaceIamInstanceProfileAssociation",
})


class PassRoleDenied(ResourceCreateFailed):
    """The caller may not pass the instance profile's role (CloudFormation path)."""

    def __init__(self, caller_arn: str, role_arn: str, *, logical_id: str,
                 resource_type: str = "AWS::EC2::Instance") -> None:
        super().__init__(
            f"API: iam:PassRole User: {caller_arn} is not authorized to perform: "
            f"iam:PassRole on resource: {role_arn}",
            logical_id=logical_id, resource_type=resource_type)
        self.caller_arn = caller_arn
        self.role_arn = role_arn


def profile_role_arns(account_id: str, region: str, profile: str) -> list[str]:
    """Role ARNs behind an instance profile given by name or ARN ([] if unknown)."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    backend = iam_backends[account_id][get_partition(region)]
    try:
        if profile.startswith("arn:"):
            found = backend.get_instance_profile_by_arn(profile)
        else:
            found = backend.get_instance_profile(profile)
    except NotFoundException:
        return []  # moto reports the unknown profile itself
    return [str(role.arn) for role in found.roles]


def denied_role(caller: Caller | None, role_arns: list[str]) -> str | None:
    """The first role ``caller`` may not pass, or None when all may be passed."""
    from phoenixci.localcloud.patches._policy_eval import evaluate
    from phoenixci.localcloud.patches._request_context import passrole_context

    if caller is None:  # IAM enforcement off: nothing to check
        return None
    policies = caller.policies()
    for role_arn in role_arns:
        if not evaluate(policies, "iam:PassRole", role_arn, context=passrole_context(caller.access_key)):
            log.info("%s may not iam:PassRole %s", caller.arn, role_arn)
            return role_arn
    return None


def _request_profile(querystring: dict[str, Any]) -> str | None:
    for key in ("IamInstanceProfile.Arn", "IamInstanceProfile.Name"):
        values = querystring.get(key)
        if values:
            return str(values[0] if isinstance(values, list) else values)
    return None


def check() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.ec2.models.instances import Instance
    from moto.iam.models import IAMBackend

    from phoenixci.localcloud.patches import require

    require(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action")
    require(Instance, "create_from_cloudformation_json")
    require(IAMBackend, "get_instance_profile")
    require(IAMBackend, "get_instance_profile_by_arn")


def install() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.ec2.models.instances import Instance

    from phoenixci.localcloud.patches.ec2_denial import unauthorized

    original_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if not getattr(original_authorize, "__phoenixci_passrole__", False):
        @functools.wraps(original_authorize)
        def authorize(self: Any, resource: str = "*") -> None:
            original_authorize(self, resource)
            caller = current_caller()
            if caller is None or getattr(self, "service_name", None) != "ec2":
                return
            if self._get_action() not in EC2_ACTIONS:
                return
            profile = _request_profile(self.querystring)
            if profile:
                role = denied_role(caller, profile_role_arns(caller.account_id, self.region, profile))
                if role:
                    raise unauthorized(caller.arn, "iam:PassRole", role)

        authorize.__phoenixci_passrole__ = True  # type: ignore[attr-defined]
        replace(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action", mark(authorize))

    original_create = Instance.__dict__["create_from_cloudformation_json"].__func__
    if not is_patched(original_create):
        @functools.wraps(original_create)
        def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                            account_id: str, region_name: str, **kwargs: Any) -> Any:
            profile = (cloudformation_json.get("Properties") or {}).get("IamInstanceProfile")
            if profile:
                caller = current_caller()
                role = denied_role(caller, profile_role_arns(account_id, region_name, str(profile)))
                if role and caller is not None:
                    raise PassRoleDenied(caller.arn, role,
                                         logical_id=str(kwargs.get("LogicalId", resource_name)))
            return original_create(cls, resource_name, cloudformation_json, account_id,
                                   region_name, **kwargs)

        replace(Instance, "create_from_cloudformation_json", classmethod(mark(create_from_cloudformation_json)))
    log.debug("iam:PassRole checks installed")
