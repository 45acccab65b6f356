"""``cfn_delete``'s per-type deleters: the real EC2 and S3 calls for what moto 5.2.5 cannot delete.

``DELETERS`` maps a resource type to its deleter (detach and delete the internet gateway, delete
routes, route tables and subnet associations, disassociate and release Elastic IPs, delete launch
templates, refuse a non-empty bucket: ``BucketNotEmpty``); ``forget_tags`` drops the tags of a
deleted EC2 resource, ``can_delete`` tells whether moto can delete a resource itself.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from phoenixci.errors import PhoenixError

Deleter = Callable[[Any, str, str], None]


def ec2_backend(account_id: str, region_name: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region_name]


def _delete_internet_gateway(igw: Any, account_id: str, region_name: str) -> None:
    backend = ec2_backend(account_id, region_name)
    if igw.id in backend.internet_gateways:
        backend.delete_internet_gateway(igw.id)  # DependencyViolation while attached, as AWS


def _delete_gateway_attachment(attachment: Any, account_id: str, region_name: str) -> None:
    backend = ec2_backend(account_id, region_name)
    if attachment.gateway_id:
        igw = backend.internet_gateways.get(attachment.gateway_id)
        if igw is not None and igw.vpc is not None and igw.vpc.id == attachment.vpc_id:
            backend.detach_internet_gateway(igw.id, attachment.vpc_id)
        return
    for vgw in backend.vpn_gateways.values():
        if vgw.attachments.get(attachment.vpc_id) is attachment and attachment.state == "attached":
            backend.detach_vpn_gateway(vgw.id, attachment.vpc_id)


def _delete_route_table(table: Any, account_id: str, region_name: str) -> None:
    backend = ec2_backend(account_id, region_name)
    if table.id in backend.route_tables:
        backend.delete_route_table(table.id)  # DependencyViolation while associated, as AWS


def _delete_route(route: Any, account_id: str, region_name: str) -> None:
    backend = ec2_backend(account_id, region_name)
    table = backend.route_tables.get(route.route_table.id)
    if table is None or route.id not in table._routes:
        return
    prefix_list = route.destination_prefix_list
    backend.delete_route(
        table.id, route.destination_cidr_block,
        destination_ipv6_cidr_block=route.destination_ipv6_cidr_block,
        destination_prefix_list_id=prefix_list.id if prefix_list else None)


def _delete_subnet_association(assoc: Any, account_id: str, region_name: str) -> None:
    backend = ec2_backend(account_id, region_name)
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
    backend = ec2_backend(account_id, region_name)
    if eip not in backend.addresses:
        return
    if eip.instance is not None or eip.eni is not None:
        backend.disassociate_address(address=eip.public_ip)
    backend.release_address(address=eip.public_ip)


def _delete_launch_template(template: Any, account_id: str, region_name: str) -> None:
    backend = ec2_backend(account_id, region_name)
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


def forget_tags(resource: Any, resource_type: str, account_id: str, region_name: str) -> None:
    """Drop a deleted EC2 resource's tags: moto keeps them, so DescribeTags showed ghosts.

    Terminated instances keep theirs (AWS lists them while they are visible).
    """
    from moto.ec2.models.core import TaggedEC2Resource

    resource_id = getattr(resource, "id", None)
    if (not isinstance(resource, TaggedEC2Resource) or not resource_id
            or resource_type == "AWS::EC2::Instance"):
        return
    ec2_backend(account_id, region_name).tags.pop(resource_id, None)


def can_delete(resource: Any) -> bool:
    if callable(getattr(resource, "delete", None)):
        return True
    method = getattr(type(resource), "delete_from_cloudformation_json", None)
    return method is not None and not hasattr(method, "__isabstractmethod__")

