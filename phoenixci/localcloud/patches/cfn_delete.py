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
``moto.cloudformation.parsing.ResourceMap._delete_resource`` (per-type deleters below),
``moto.cloudformation.models.Stack.delete`` and
``moto.cloudformation.models.CloudFormationBackend.delete_stack`` (DELETE_FAILED),
``moto.ec2.models.subnets.SubnetRouteTableAssociation.create_from_cloudformation_json``
(a real route table association) and ``.physical_resource_id`` (the association id).
Tags of EC2 resources the stack deleted are dropped from ``TagBackend.tags`` (moto keeps
them, and DescribeTags kept listing deleted VPCs, subnets, ... as tagged).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

Deleter = Callable[[Any, str, str], None]


@dataclass(frozen=True)
class ResourceDeleteFailure:
    logical_id: str
    resource_type: str
    physical_id: str
    reason: str


class StackDeleteFailed(PhoenixError):
    """Some resources of a stack could not be deleted."""

    def __init__(self, failures: list[ResourceDeleteFailure]) -> None:
        self.failures = failures
        self.stack: Any = None
        super().__init__(stack_failure_reason(failures))


def stack_failure_reason(failures: Iterable[ResourceDeleteFailure]) -> str:
    names = ", ".join(sorted(f.logical_id for f in failures))
    return f"The following resource(s) failed to delete: [{names}]. "


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    code = getattr(exc, "error_type", None)
    text = str(message) if message else str(exc) or type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text


# --------------------------------------------------------------------- template references
def references(node: Any, names: set[str]) -> set[str]:
    """Logical ids of ``names`` that ``node`` (a raw template fragment) refers to."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str) and value in names:
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) and value else value
                if isinstance(target, str):
                    target = target.split(".", 1)[0]
                    if target in names:
                        found.add(target)
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) and value else value
                if isinstance(text, str):
                    found |= _sub_references(text, names)
                if isinstance(value, list) and len(value) > 1:
                    found |= references(value[1], names)
                continue
            elif key == "DependsOn":
                targets = [value] if isinstance(value, str) else value or []
                found |= {t for t in targets if isinstance(t, str) and t in names}
                continue
            found |= references(value, names)
    elif isinstance(node, list):
        for item in node:
            found |= references(item, names)
    return found


def _sub_references(text: str, names: set[str]) -> set[str]:
    found: set[str] = set()
    start = text.find("${")
    while start != -1:
        end = text.find("}", start)
        if end == -1:
            break
        target = text[start + 2:end].split(".", 1)[0]
        if not target.startswith("!") and target in names:
            found.add(target)
        start = text.find("${", end)
    return found


# --------------------------------------------------------------------- per-type deleters
def _ec2(account_id: str, region_name: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region_name]


def _delete_internet_gateway(igw: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    if igw.id in backend.internet_gateways:
        backend.delete_internet_gateway(igw.id)  # DependencyViolation while attached, as AWS


def _delete_gateway_attachment(attachment: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    if attachment.gateway_id:
        igw = backend.internet_gateways.get(attachment.gateway_id)
        if igw is not None and igw.vpc is not None and igw.vpc.id == attachment.vpc_id:
            backend.detach_internet_gateway(igw.id, attachment.vpc_id)
        return
    for vgw in backend.vpn_gateways.values():
        if vgw.attachments.get(attachment.vpc_id) is attachment and attachment.state == "attached":
            backend.detach_vpn_gateway(vgw.id, attachment.vpc_id)


def _delete_route_table(table: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    if table.id in backend.route_tables:
        backend.delete_route_table(table.id)  # DependencyViolation while associated, as AWS


def _delete_route(route: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    table = backend.route_tables.get(route.route_table.id)
    if table is None or route.id not in table._routes:
        return
    prefix_list = route.destination_prefix_list
    backend.delete_route(
        table.id, route.destination_cidr_block,
        destination_ipv6_cidr_block=route.destination_ipv6_cidr_block,
        destination_prefix_list_id=prefix_list.id if prefix_list else None)


def _delete_subnet_association(assoc: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    association_id = getattr(assoc, "association_id", None)
    table = backend.route_tables.get(assoc.route_table_id)
    if table is not None:
        if association_id is None:  # made before this patch was installed
            association_id = next((aid for aid, sid in table._associations.items()
                                   if sid == assoc.subnet_id), None)
        if association_id in table._associations:
            backend.disassociate_route_table(association_id)
    backend.subnet_associations.pop(f"{assoc.route_table_id}:{assoc.subnet_id}", None)


def _delete_elastic_ip(eip: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    if eip not in backend.addresses:
        return
    if eip.instance is not None or eip.eni is not None:
        backend.disassociate_address(address=eip.public_ip)
    backend.release_address(address=eip.public_ip)


def _delete_launch_template(template: Any, account_id: str, region_name: str) -> None:
    backend = _ec2(account_id, region_name)
    if template.id in backend.launch_templates:
        backend.delete_launch_template(None, template.id)


class BucketNotEmpty(PhoenixError):
    """S3 refuses to delete a bucket that still holds objects or versions."""


def _delete_bucket(bucket: Any, account_id: str, region_name: str) -> None:
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    backend = s3_backends[account_id][get_partition(region_name)]
    if bucket.name not in backend.buckets:
        return
    if backend.delete_bucket(bucket.name) is None and bucket.name in backend.buckets:
        raise BucketNotEmpty(f"The bucket you tried to delete is not empty. You must delete all "
                             f"versions in the bucket. (Bucket: {bucket.name})")


DELETERS: dict[str, Deleter] = {
    "AWS::EC2::InternetGateway": _delete_internet_gateway,
    "AWS::EC2::VPCGatewayAttachment": _delete_gateway_attachment,
    "AWS::EC2::RouteTable": _delete_route_table,
    "AWS::EC2::Route": _delete_route,
    "AWS::EC2::SubnetRouteTableAssociation": _delete_subnet_association,
    "AWS::EC2::EIP": _delete_elastic_ip,
    "AWS::EC2::LaunchTemplate": _delete_launch_template,
    "AWS::S3::Bucket": _delete_bucket,
}


def _forget_tags(resource: Any, resource_type: str, account_id: str, region_name: str) -> None:
    """Drop a deleted EC2 resource's tags: moto keeps them, so DescribeTags showed ghosts.

    Terminated instances keep theirs (AWS lists them while they are visible).
    """
    from moto.ec2.models.core import TaggedEC2Resource

    resource_id = getattr(resource, "id", None)
    if (not isinstance(resource, TaggedEC2Resource) or not resource_id
            or resource_type == "AWS::EC2::Instance"):
        return
    _ec2(account_id, region_name).tags.pop(resource_id, None)


def _can_delete(resource: Any) -> bool:
    if callable(getattr(resource, "delete", None)):
        return True
    method = getattr(type(resource), "delete_from_cloudformation_json", None)
    return method is not None and not hasattr(method, "__isabstractmethod__")


# --------------------------------------------------------------------- the replacements
def _delete_resource(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def wrapper(self: Any, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
        resource_type = getattr(parsed_resource, "cf_resource_type", None) or resource_json.get("Type")
        deleter = DELETERS.get(str(resource_type))
        if deleter is not None:
            deleter(parsed_resource, self._account_id, self._region_name)
        else:
            if not _can_delete(parsed_resource):
                log.warning("moto cannot delete %s %s: it is left behind", resource_type,
                            getattr(parsed_resource, "physical_resource_id", "?"))
            original(self, parsed_resource, resource_json)
        _forget_tags(parsed_resource, str(resource_type), self._account_id, self._region_name)

    return wrapper


def ordered_delete(self: Any) -> None:
    """ResourceMap.delete: dependants first, failures collected into StackDeleteFailed."""
    json_map: dict[str, dict[str, Any]] = self._resource_json_map
    names = set(json_map)
    needs = {lid: references(rj, names) - {lid} for lid, rj in json_map.items()}
    remaining = {lid for lid, rj in json_map.items()
                 if rj.get("DeletionPolicy") not in ("Retain", "RetainExceptOnCreate")}
    errors: dict[str, BaseException] = {}
    while remaining:
        ready = sorted(lid for lid in remaining
                       if not any(lid in needs[other] for other in remaining if other != lid))
        if not ready:
            if errors.keys() & remaining:
                break  # everything left waits on a resource that failed
            ready = sorted(remaining)  # a reference cycle: moto's "try everything" order
        progress = False
        for lid in ready:
            parsed = self._parsed_resources.get(lid)
            if parsed is None or isinstance(parsed, str):  # never created
                remaining.discard(lid)
                progress = True
                continue
            try:
                self._delete_resource(parsed, json_map[lid])
            except Exception as exc:  # noqa: BLE001 - reported as DELETE_FAILED
                errors[lid] = exc
                log.debug("deleting %s failed: %s", lid, exc)
            else:
                errors.pop(lid, None)
                self._parsed_resources.pop(lid, None)
                remaining.discard(lid)
                progress = True
        if not progress:
            break
    failed = [lid for lid in sorted(remaining) if lid in errors]
    if failed:
        raise StackDeleteFailed([
            ResourceDeleteFailure(
                logical_id=lid, resource_type=json_map[lid].get("Type", ""),
                physical_id=str(getattr(self._parsed_resources.get(lid), "physical_resource_id", "")),
                reason=_reason(errors[lid]))
            for lid in failed])


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
        backend = _ec2(account_id, region_name)
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
