"""CloudFormation VPCs get the DNS attributes their template gives, subnets ``MapPublicIpOnLaunch``.

AWS behaviour restored (AWS::EC2::VPC, properties EnableDnsSupport — default true — and
EnableDnsHostnames — default false): DescribeVpcAttribute answers what the template said.
moto 5.2.5's ``VPC.create_from_cloudformation_json`` reads only CidrBlock, InstanceTenancy and
Tags, so a template enabling DNS hostnames (most workshop VPCs do) described a VPC without them.
(The attributes are what the API shows; the local cloud's DNS answers package sources only.)
Likewise ``AWS::EC2::Subnet``'s ``MapPublicIpOnLaunch`` (default false) was dropped, so a public
subnet's instances got no public address; they now get one (auto_public_ip: from the local pool).

Hooks: ``moto.ec2.models.vpcs.VPC.create_from_cloudformation_json`` and
``moto.ec2.models.subnets.Subnet.create_from_cloudformation_json`` (wrapped), applying the
properties with ``modify_vpc_attribute`` / ``modify_subnet_attribute`` as the API calls would.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ATTRIBUTES = {"EnableDnsSupport": "enable_dns_support", "EnableDnsHostnames": "enable_dns_hostnames"}


def _bool(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def check() -> None:
    from moto.ec2.models.vpcs import VPC, VPCBackend

    from phoenixci.localcloud.patches import require

    require(VPC, "create_from_cloudformation_json")
    require(VPCBackend, "modify_vpc_attribute")
    from moto.ec2.models.subnets import Subnet, SubnetBackend

    require(Subnet, "create_from_cloudformation_json")
    require(SubnetBackend, "modify_subnet_attribute")


def _vpc_attributes(backend: Any, vpc: Any, props: dict[str, Any]) -> None:
    for prop, attr in ATTRIBUTES.items():  # the backend stores the value as given (a bool)
        if prop in props:
            backend.modify_vpc_attribute(vpc.id, attr, _bool(props[prop]))


def _subnet_attributes(backend: Any, subnet: Any, props: dict[str, Any]) -> None:
    if "MapPublicIpOnLaunch" in props:
        backend.modify_subnet_attribute(subnet.id, "map_public_ip_on_launch", _bool(props["MapPublicIpOnLaunch"]))


def _after_create(owner: Any, apply: Callable[[Any, Any, dict[str, Any]], None]) -> None:
    """Wrap ``owner.create_from_cloudformation_json``: create, then ``apply(backend, made, properties)``."""
    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original = owner.__dict__["create_from_cloudformation_json"].__func__
    if is_patched(original):
        return

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        from moto.ec2.models import ec2_backends

        made = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        apply(ec2_backends[account_id][region_name], made, cloudformation_json.get("Properties") or {})
        return made

    replace(owner, "create_from_cloudformation_json", classmethod(mark(create_from_cloudformation_json)))


def install() -> None:
    from moto.ec2.models.subnets import Subnet
    from moto.ec2.models.vpcs import VPC

    _after_create(VPC, _vpc_attributes)
    _after_create(Subnet, _subnet_attributes)
    log.debug("CloudFormation VPC DNS attributes and subnet MapPublicIpOnLaunch installed")


__all__ = ["ATTRIBUTES", "check", "install"]
