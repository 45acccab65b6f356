"""DeleteStack removes every resource of the stack, or ends DELETE_FAILED naming the culprit.

AWS behaviour restored: CloudFormation deletes a stack's resources in reverse dependency
order (a resource only after everything that refers to it), with the real API calls:
disassociate the subnet from the route table, delete the route and the route table,
detach the internet gateway and delete it, disassociate and release Elastic IPs, delete
launch templates, refuse to delete a non-empty bucket. When a resource cannot be
deleted the resource is DELETE_FAILED with the reason, the stack ends DELETE_FAILED
("The following resource(s) failed to delete: [...]") and stays visible, so DeleteStack
can be retried.

moto 5.2.5 deletes resources in arbitrary order, treats a missing
``delete_from_cloudformation_json`` as success (RouteTable, Route,
SubnetRouteTableAssociation, InternetGateway, VPCGatewayAttachment, EIP: all left
behind), reports a non-empty bucket as deleted, and when something fails DeleteStack
answers with the raw error (``DependencyViolation``) and the stack vanishes from
DescribeStacks while its resources remain. A CloudFormation subnet association was
also never made in the route table (DescribeRouteTables did not show it).

moto 5.2.5 hooks:
``moto.cloudformation.parsing.ResourceMap.delete`` (replaced: ordered, reports failures),
``moto.cloudformation.parsing.ResourceMap._delete_resource`` (per-type deleters: ``_cfn_deleters``),
``moto.cloudformation.models.Stack.delete`` and
``moto.cloudformation.models.CloudFormationBackend.delete_stack`` (DELETE_FAILED),
``moto.ec2.models.subnets.SubnetRouteTableAssociation.create_from_cloudformation_json``
(a real route table association) and ``.physical_resource_id`` (the association id).
Tags of EC2 resources the stack deleted are dropped from ``TagBackend.tags`` (moto keeps
them, and DescribeTags kept listing deleted VPCs, subnets, ... as tagged).

This module holds the replacements, ``check`` and ``install``; the order and the failures are
``_cfn_delete_order``'s, the per-type deleters and the tag clean-up ``_cfn_deleters``'s.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from phoenixci.localcloud.patches._cfn_delete_order import StackDeleteFailed, ordered_delete
from phoenixci.localcloud.patches._cfn_deleters import DELETERS, can_delete, ec2_backend, forget_tags

log = logging.getLogger(__name__)


# --------------------------------------------------------------------- the replacements
def _delete_resource(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def wrapper(self: Any, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
        resource_type = getattr(parsed_resource, "cf_resource_type", None) or resource_json.get("Type")
        deleter = DELETERS.get(str(resource_type))
        if deleter is not None:
            deleter(parsed_resource, self._account_id, self._region_name)
        else:
            if not can_delete(parsed_resource):
                log.warning("moto cannot delete %s %s: it is left behind", resource_type,
                            getattr(parsed_resource, "physical_resource_id", "?"))
            original(self, parsed_resource, resource_json)
        forget_tags(parsed_resource, str(resource_type), self._account_id, self._region_name)

    return wrapper


def _stack_delete(original: Callable[[Any], None]) -> Callable[[Any], None]:
    @functools.wraps(original)
    def delete(self: Any) -> None:
        from moto.cloudformation.models import Event

        try:
            original(self)
        except StackDeleteFailed as failure:
            for item in failure.failures:
                self.events.append(Event(
                    stack_id=self.stack_id, stack_name=self.name,
                    logical_resource_id=item.logical_id, physical_resource_id=item.physical_id,
                    resource_type=item.resource_type, resource_status="DELETE_FAILED",
                    resource_status_reason=item.reason, resource_properties=None))
            reason = str(failure)
            self.status = "DELETE_FAILED"
            self.stack_status_reason = reason
            self._add_stack_event("DELETE_FAILED", resource_status_reason=reason)
            failure.stack = self
            raise

    return delete


def _backend_delete_stack(original: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
    @functools.wraps(original)
    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        try:
            original(self, name_or_stack_id)
        except StackDeleteFailed as failure:
            stack = failure.stack
            if stack is None:
                raise
            self.stacks[stack.stack_id] = stack  # moto popped it; AWS keeps it, DELETE_FAILED
            self.deleted_stacks.pop(stack.stack_id, None)
            log.warning("stack %s: DELETE_FAILED: %s", stack.name,
                        "; ".join(f"{f.logical_id} ({f.resource_type}): {f.reason}"
                                  for f in failure.failures))

    return delete_stack


def _association_create(original: Any) -> Any:
    func = original.__func__

    @functools.wraps(func)
    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        assoc = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = ec2_backend(account_id, region_name)
        assoc.association_id = backend.associate_route_table(
            assoc.route_table_id, subnet_id=assoc.subnet_id)
        return assoc

    return classmethod(create_from_cloudformation_json)


def _association_physical_id(self: Any) -> str:
    return str(getattr(self, "association_id", None) or self.route_table_id)


def check() -> None:
    from moto.cloudformation.models import CloudFormationBackend, Event, Stack
    from moto.cloudformation.parsing import ResourceMap
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_ip_addresses import ElasticAddressBackend
    from moto.ec2.models.internet_gateways import InternetGatewayBackend
    from moto.ec2.models.launch_templates import LaunchTemplateBackend
    from moto.ec2.models.route_tables import RouteBackend
    from moto.ec2.models.subnets import SubnetRouteTableAssociation
    from moto.ec2.models.vpn_gateway import VpnGatewayBackend
    from moto.s3.models import S3Backend

    from phoenixci.localcloud.patches import require

    require(ResourceMap, "delete")
    require(ResourceMap, "_delete_resource")
    require(Stack, "delete")
    require(Stack, "_add_stack_event")
    require(CloudFormationBackend, "delete_stack")
    require(Event, "__init__")
    require(SubnetRouteTableAssociation, "create_from_cloudformation_json")
    require(SubnetRouteTableAssociation, "physical_resource_id")
    for owner, names in (
        (InternetGatewayBackend, ("delete_internet_gateway", "detach_internet_gateway")),
        (VpnGatewayBackend, ("detach_vpn_gateway",)),
        (RouteBackend, ("delete_route_table", "delete_route", "disassociate_route_table",
                        "associate_route_table")),
        (ElasticAddressBackend, ("disassociate_address", "release_address")),
        (LaunchTemplateBackend, ("delete_launch_template",)),
        (S3Backend, ("delete_bucket",)),
    ):
        for name in names:
            require(owner, name)
    assert ec2_backends is not None


def install() -> None:
    from moto.cloudformation.models import CloudFormationBackend, Stack
    from moto.cloudformation.parsing import ResourceMap
    from moto.ec2.models.subnets import SubnetRouteTableAssociation

    from phoenixci.localcloud.patches._caller import is_patched, mark

    if is_patched(ResourceMap.delete):
        return
    ResourceMap._delete_resource = mark(_delete_resource(ResourceMap._delete_resource))
    ResourceMap.delete = mark(functools.wraps(ResourceMap.delete)(ordered_delete))
    Stack.delete = mark(_stack_delete(Stack.delete))
    CloudFormationBackend.delete_stack = mark(_backend_delete_stack(CloudFormationBackend.delete_stack))
    SubnetRouteTableAssociation.create_from_cloudformation_json = _association_create(
        SubnetRouteTableAssociation.__dict__["create_from_cloudformation_json"])
    SubnetRouteTableAssociation.physical_resource_id = property(_association_physical_id)  # type: ignore[assignment]
    log.debug("CloudFormation ordered stack deletion installed")
