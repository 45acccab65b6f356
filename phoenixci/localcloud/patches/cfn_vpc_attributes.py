"""CloudFormation VPCs get the DNS attributes their template gives.

AWS behaviour restored (AWS::EC2::VPC, properties EnableDnsSupport — default true — and
EnableDnsHostnames — default false): DescribeVpcAttribute answers what the template said.
moto 5.2.5's ``VPC.create_from_cloudformation_json`` reads only CidrBlock, InstanceTenancy and
Tags, so a template enabling DNS hostnames (most workshop VPCs do) described a VPC without them.
(The local cloud serves no DNS to instances either way: the attributes are what the API shows.)

Hook: ``moto.ec2.models.vpcs.VPC.create_from_cloudformation_json`` (wrapped), applying the
properties with ``modify_vpc_attribute`` as ModifyVpcAttribute would.
"""
from __future__ import annotations

import logging
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


def install() -> None:
    from moto.ec2.models.vpcs import VPC

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original = VPC.__dict__["create_from_cloudformation_json"].__func__
    if is_patched(original):
        return

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        from moto.ec2.models import ec2_backends

        vpc = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        props = cloudformation_json.get("Properties") or {}
        backend: Any = ec2_backends[account_id][region_name]  # stores the value as given (a bool)
        for prop, attr in ATTRIBUTES.items():
            if prop in props:
                backend.modify_vpc_attribute(vpc.id, attr, _bool(props[prop]))
        return vpc

    replace(VPC, "create_from_cloudformation_json", classmethod(mark(create_from_cloudformation_json)))
    log.debug("CloudFormation VPC DNS attributes installed")


__all__ = ["ATTRIBUTES", "check", "install"]
