"""CloudFormation performs each resource operation with the caller's permissions.

AWS behaviour restored: a stack created or deleted without a service role acts as the
principal who called CreateStack/DeleteStack. Every resource operation is authorised
against that principal's policies, conditions included (``aws:RequestTag`` of the tags the
stack applies — the resource's ``Tags`` and the stack's tags —, ``ec2:CreateAction`` for
tag-on-create, ``aws:ResourceTag`` of what is deleted, ``aws:CalledVia``
cloudformation.amazonaws.com, no ``aws:SourceIp``). A stack whose caller lacks
``ec2:RunInstances`` ends as on AWS: the instance CREATE_FAILED ("API: ec2:RunInstances You
are not authorized to perform this operation. User: … is not authorized to perform:
ec2:RunInstances on resource: …"), then ROLLBACK_COMPLETE (cfn_rollback). A denied deletion
is the resource's DELETE_FAILED reason (cfn_delete). moto 5.2.5 checks only the
CreateStack/DeleteStack call itself.

Which calls a resource type makes: ``_cfn_calls``. Not modelled: UpdateStack, stacks with a
service role (``RoleARN``), deletions during a create's rollback (AWS would end
ROLLBACK_FAILED when the caller may not delete what it just made).

moto 5.2.5 hooks: ``moto.cloudformation.parsing.parse_resource_and_generate_name`` (the
resolved properties and physical name, before the resource exists) and
``moto.cloudformation.parsing.ResourceMap._delete_resource``.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from phoenixci.errors import PhoenixError
from phoenixci.localcloud.patches._caller import Caller, current_caller, is_patched, mark, replace
from phoenixci.localcloud.patches._cfn_calls import Call, Where, create_calls, delete_calls
from phoenixci.localcloud.patches._request_context import CLOUDFORMATION, Request
from phoenixci.localcloud.patches.cfn_rollback import ResourceCreateFailed, _creating
from phoenixci.localcloud.patches.request_conditions import authorize_call, tags_on_create_denial

log = logging.getLogger(__name__)

_SERVICE_NAMES = {"ec2": "Ec2", "s3": "S3", "iam": "Iam", "sts": "Sts"}


class CallerDenied(PhoenixError):
    """The stack's caller may not perform one of the stack's resource operations."""


def denial_reason(caller_arn: str, action: str, arn: str, explicit: bool) -> str:
    service = action.split(":", 1)[0]
    why = ("with an explicit deny in an identity-based policy" if explicit
           else f"because no identity-based policy allows the {action} action")
    detail = f"User: {caller_arn} is not authorized to perform: {action} on resource: {arn} {why}"
    if service == "ec2":
        return f"API: {action} You are not authorized to perform this operation. {detail}"
    return f"{detail} (Service: {_SERVICE_NAMES.get(service, service)}, Status Code: 403)"


def first_denial(caller: Caller, calls: list[Call], where: Where) -> str | None:
    """The reason the caller may not make one of ``calls``, or None when all are allowed."""
    for call in calls:
        request = Request(service=call.service, action=call.action, params=call.params,
                          region=where.region, account=where.account, via=CLOUDFORMATION,
                          extra=call.extra)
        decision = authorize_call(caller, request, call.arns)
        action = f"{call.service}:{call.action}"
        if not decision:
            return denial_reason(caller.arn, action, decision.resource or "*", decision.explicit_deny)
        if call.service == "ec2":
            tagging = tags_on_create_denial(caller, request)
            if tagging:
                return denial_reason(caller.arn, tagging[0], tagging[1], False)
    return None


def _stack_tags(resources_map: Any) -> dict[str, str]:
    tags = getattr(resources_map, "tags", None) or {}
    return {str(k): str(v) for k, v in dict(tags).items() if not str(k).startswith("aws:")}


def _authorise_create(logical_id: str, resource_json: dict[str, Any], name: str, resources_map: Any) -> None:
    caller = current_caller()
    if caller is None or not _creating.get():
        return
    resource_type = str(resource_json.get("Type", ""))
    where = Where(str(getattr(resources_map, "_region_name", "")), str(getattr(resources_map, "_account_id", "")),
                  _stack_tags(resources_map))
    reason = first_denial(caller, create_calls(resource_type, resource_json.get("Properties") or {}, name, where),
                          where)
    if reason:
        log.info("stack resource %s (%s): %s", logical_id, resource_type, reason)
        raise ResourceCreateFailed(reason, logical_id=logical_id, resource_type=resource_type)


def _physical_id(resource: Any, resource_type: str) -> str:
    if resource_type == "AWS::EC2::EIP":
        return str(getattr(resource, "allocation_id", "") or "")
    return str(getattr(resource, "physical_resource_id", "") or "")


def check() -> None:
    from moto.cloudformation import parsing

    from phoenixci.localcloud.patches import require

    require(parsing, "parse_resource_and_generate_name")
    require(parsing.ResourceMap, "_delete_resource")


def install() -> None:
    from moto.cloudformation import parsing

    original_parse: Any = parsing.parse_resource_and_generate_name
    if not is_patched(original_parse):
        @functools.wraps(original_parse)
        def parse_resource_and_generate_name(logical_id: str, resource_json: dict[str, Any],
                                             resources_map: Any) -> Any:
            parsed = original_parse(logical_id, resource_json, resources_map)
            if parsed:
                _authorise_create(logical_id, parsed[1], str(parsed[2]), resources_map)
            return parsed

        parsing.parse_resource_and_generate_name = mark(parse_resource_and_generate_name)

    original_delete = parsing.ResourceMap._delete_resource
    if not getattr(original_delete, "__phoenixci_caller__", False):
        @functools.wraps(original_delete)
        def _delete_resource(self: Any, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
            caller = current_caller()
            if caller is not None and not _creating.get():
                resource_type = str(getattr(parsed_resource, "cf_resource_type", None) or resource_json.get("Type"))
                where = Where(self._region_name, self._account_id)
                calls = delete_calls(resource_type, _physical_id(parsed_resource, resource_type), where)
                reason = first_denial(caller, calls, where)
                if reason:
                    raise CallerDenied(reason)
            original_delete(self, parsed_resource, resource_json)

        _delete_resource.__phoenixci_caller__ = True  # type: ignore[attr-defined]
        replace(parsing.ResourceMap, "_delete_resource", mark(_delete_resource))
    log.debug("CloudFormation acts with the caller's permissions")
