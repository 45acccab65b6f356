"""Authorise each request against the ARNs of the resources it touches.

AWS behaviour restored: a policy that allows ``cloudformation:DeleteStack`` only on
``arn:aws:cloudformation:R:A:stack/app-*/*`` lets the caller delete ``app-x`` and
nothing else; ``ec2:AssociateAddress`` allowed only on one ``elastic-ip/eipalloc-…``
works for that address alone. Every resource of a request must be allowed, and an
explicit Deny on any of them wins.

moto 5.2.5 hooks:
- ``moto.core.authorization.ActionAuthenticatorMixin._authenticate_and_authorize_normal_action``:
  computes the request's ARNs with :func:`resource_arns` (falls back to moto's
  ``_determine_resource()`` / ``*`` for actions not mapped here);
- ``moto.iam.access_control.IAMRequestBase.check_action_permitted``: accepts a list
  of resources and requires all of them to be allowed.

The mapping functions are pure (action + flat params + a lookup) for unit tests.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

CFN_STACK_ACTIONS = frozenset({
    "CreateStack", "DeleteStack", "UpdateStack", "DescribeStacks", "DescribeStackEvents",
    "DescribeStackResources", "DescribeStackResource", "ListStackResources", "GetTemplate",
    "GetTemplateSummary", "GetStackPolicy", "SetStackPolicy", "CancelUpdateStack",
    "ContinueUpdateRollback", "RollbackStack", "SignalResource", "UpdateTerminationProtection",
    "CreateChangeSet", "DescribeChangeSet", "ExecuteChangeSet", "DeleteChangeSet",
    "ListChangeSets", "DetectStackDrift", "DetectStackResourceDrift",
    "DescribeStackResourceDrifts",
})
EC2_INSTANCE_LIST_ACTIONS = frozenset({
    "TerminateInstances", "StopInstances", "StartInstances", "RebootInstances",
    "MonitorInstances", "UnmonitorInstances",
})
EC2_SINGLE_INSTANCE_ACTIONS = frozenset({
    "ModifyInstanceAttribute", "ResetInstanceAttribute", "GetConsoleOutput",
    "AssociateIamInstanceProfile", "ModifyInstanceMetadataOptions",
})


class Lookup(Protocol):
    """Backend facts the mapping needs (real stack ids, EIP allocation ids)."""

    def stack_arn(self, name: str) -> str | None: ...

    def allocation_for_association(self, association_id: str) -> str | None: ...

    def allocation_for_ip(self, public_ip: str) -> str | None: ...


def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def indexed(params: Mapping[str, str], prefix: str) -> list[str]:
    """Values of ``Prefix.1``, ``Prefix.2``… (query-protocol lists), in index order."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)$")
    found = [(int(m.group(1)), value) for key, value in params.items()
             if (m := pattern.match(key))]
    return [value for _, value in sorted(found)]


def stack_arn(name: str, region: str, account: str, lookup: Lookup | None = None) -> str:
    """The ARN that authorises an action on stack ``name`` (a name or a stack ARN)."""
    if name.startswith("arn:"):
        return name
    if lookup is not None:
        existing = lookup.stack_arn(name)
        if existing:
            return existing
    return f"arn:{partition_for(region)}:cloudformation:{region}:{account}:stack/{name}/*"


def cloudformation_arns(action: str, params: Mapping[str, str], region: str, account: str,
                        lookup: Lookup | None = None) -> list[str] | None:
    if action not in CFN_STACK_ACTIONS:
        return None
    name = params.get("StackName")
    if not name:  # DescribeStacks (all), DescribeStackResources by PhysicalResourceId...
        return ["*"]
    return [stack_arn(name, region, account, lookup)]


def _ec2(region: str, account: str, kind: str, ident: str) -> str:
    return f"arn:{partition_for(region)}:ec2:{region}:{account}:{kind}/{ident}"


def _elastic_ip(params: Mapping[str, str], region: str, account: str,
                lookup: Lookup | None) -> str:
    allocation = params.get("AllocationId")
    if not allocation and lookup is not None:
        if params.get("AssociationId"):
            allocation = lookup.allocation_for_association(params["AssociationId"])
        elif params.get("PublicIp"):
            allocation = lookup.allocation_for_ip(params["PublicIp"])
    return _ec2(region, account, "elastic-ip", allocation or "*")


def _run_instances(params: Mapping[str, str], region: str, account: str) -> list[str]:
    part = partition_for(region)
    arns = [_ec2(region, account, "instance", "*")]
    if params.get("ImageId"):
        arns.append(f"arn:{part}:ec2:{region}::image/{params['ImageId']}")
    subnets = [params["SubnetId"]] if params.get("SubnetId") else []
    groups = indexed(params, "SecurityGroupId")
    for nic in sorted({k.split(".")[1] for k in params if re.match(r"^NetworkInterface\.\d+\.", k)}):
        prefix = f"NetworkInterface.{nic}"
        if params.get(f"{prefix}.SubnetId"):
            subnets.append(params[f"{prefix}.SubnetId"])
        groups += indexed(params, f"{prefix}.SecurityGroupId")
    arns += [_ec2(region, account, "subnet", s) for s in dict.fromkeys(subnets)]
    arns += [_ec2(region, account, "security-group", g) for g in dict.fromkeys(groups)]
    if params.get("KeyName"):
        arns.append(_ec2(region, account, "key-pair", params["KeyName"]))
    if params.get("LaunchTemplate.LaunchTemplateId"):
        arns.append(_ec2(region, account, "launch-template", params["LaunchTemplate.LaunchTemplateId"]))
    arns.append(_ec2(region, account, "network-interface", "*"))
    arns.append(_ec2(region, account, "volume", "*"))
    return arns


def ec2_arns(action: str, params: Mapping[str, str], region: str, account: str,
             lookup: Lookup | None = None) -> list[str] | None:
    if action == "RunInstances":
        return _run_instances(params, region, account)
    if action == "AssociateAddress":
        arns = [_elastic_ip(params, region, account, lookup)]
        if params.get("InstanceId"):
            arns.append(_ec2(region, account, "instance", params["InstanceId"]))
        if params.get("NetworkInterfaceId"):
            arns.append(_ec2(region, account, "network-interface", params["NetworkInterfaceId"]))
        return arns
    if action in ("DisassociateAddress", "ReleaseAddress"):
        return [_elastic_ip(params, region, account, lookup)]
    if action in EC2_INSTANCE_LIST_ACTIONS:
        ids = indexed(params, "InstanceId") or ["*"]
        return [_ec2(region, account, "instance", i) for i in ids]
    if action in EC2_SINGLE_INSTANCE_ACTIONS:
        return [_ec2(region, account, "instance", params.get("InstanceId") or "*")]
    return None


def resource_arns(service: str, action: str, params: Mapping[str, str], region: str,
                  account: str, lookup: Lookup | None = None) -> list[str] | None:
    """ARNs to authorise ``service:action`` against; None = not mapped (keep moto's)."""
    if service == "cloudformation":
        return cloudformation_arns(action, params, region, account, lookup)
    if service == "ec2":
        return ec2_arns(action, params, region, account, lookup)
    return None


def flat_params(querystring: Mapping[str, Any]) -> dict[str, str]:
    """moto's ``querystring`` (name -> list of values) as name -> first value."""
    flat: dict[str, str] = {}
    for key, value in querystring.items():
        if isinstance(value, (list, tuple)):
            if value:
                flat[str(key)] = str(value[0])
        elif value is not None:
            flat[str(key)] = str(value)
    return flat


class MotoLookup:
    """Lookup answered from moto's in-process backends."""

    def __init__(self, account: str, region: str) -> None:
        self.account = account
        self.region = region

    def stack_arn(self, name: str) -> str | None:
        from moto.cloudformation.models import cloudformation_backends

        backend = cloudformation_backends[self.account][self.region]
        for stack in backend.stacks.values():
            if stack.name == name and stack.status != "DELETE_COMPLETE":
                return str(stack.stack_id)
        return None

    def _addresses(self) -> list[Any]:
        from moto.ec2.models import ec2_backends

        return list(ec2_backends[self.account][self.region].addresses)

    def allocation_for_association(self, association_id: str) -> str | None:
        for address in self._addresses():
            if address.association_id == association_id:
                return str(address.allocation_id)
        return None

    def allocation_for_ip(self, public_ip: str) -> str | None:
        for address in self._addresses():
            if address.public_ip == public_ip:
                return str(address.allocation_id)
        return None


def _enforcing() -> bool:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def arns_for_response(response: Any) -> list[str] | None:
    """The ARNs for the request a moto ``BaseResponse`` is serving (None = unmapped)."""
    service = getattr(response, "service_name", None)
    if service not in ("cloudformation", "ec2"):
        return None
    account, region = response.current_account, response.region
    return resource_arns(service, response._get_action(), flat_params(response.querystring),
                         region, account, MotoLookup(account, region))


def check() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequestBase

    from phoenixci.localcloud.patches import require

    for name in ("_authenticate_and_authorize_normal_action", "_authenticate_and_authorize_action"):
        require(ActionAuthenticatorMixin, name)
    for name in ("check_action_permitted", "_is_assuming_role_operation",
                 "_check_role_trust_relationship", "_raise_access_denied"):
        require(IAMRequestBase, name)


def install() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequest, IAMRequestBase

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace
    from phoenixci.localcloud.patches._policy_eval import as_resources, evaluate
    from phoenixci.localcloud.patches._request_context import context_source

    original_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if not is_patched(original_authorize):
        @functools.wraps(original_authorize)
        def authorize(self: Any, resource: str = "*") -> None:
            arns: Sequence[str] | None = None
            if _enforcing():
                try:
                    arns = arns_for_response(self)
                except Exception:  # never let the mapping turn a request into a 500
                    log.exception("resource ARN mapping failed; using %r", resource)
            self._authenticate_and_authorize_action(IAMRequest, arns or resource)

        replace(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action", mark(authorize))

    if not is_patched(IAMRequestBase.check_action_permitted):
        def check_action_permitted(self: Any, resource: str | Sequence[str]) -> None:
            if self._action == "sts:GetCallerIdentity":  # always allowed, as in AWS
                return
            resources = as_resources(resource)
            if not evaluate(self._access_key.collect_policies(), self._action, resources,
                            context=context_source(self._access_key, self._action)):
                self._raise_access_denied()
            for arn in resources:
                if self._is_assuming_role_operation(arn) and \
                        not self._check_role_trust_relationship(arn):
                    self._raise_access_denied()

        replace(IAMRequestBase, "check_action_permitted", mark(check_action_permitted))
    log.debug("resource ARN authorization installed")
