"""CloudFormation security groups get the egress rules their template gives.

moto 5.2.5's ``SecurityGroup.create_from_cloudformation_json`` reads only ``SecurityGroupIngress``:
``SecurityGroupEgress`` is silently dropped and the group keeps the default allow-all egress, so
a template that restricts outbound traffic is wider locally than on AWS — and now that the local
cloud enforces egress (hostsg.py), that difference would let a broken template pass.

AWS behaviour restored (AWS::EC2::SecurityGroup, property SecurityGroupEgress): when egress rules
are given, the default rule allowing all outbound traffic is removed and the given ones apply,
each with IpProtocol, FromPort/ToPort and one of CidrIp, CidrIpv6, DestinationSecurityGroupId.
Hook: ``moto.ec2.models.security_groups.SecurityGroup.create_from_cloudformation_json`` (wrapped).
"""
from __future__ import annotations

from typing import Any

from phoenixci.localcloud.patches import require

MARK = "_phoenixci_cfn_sg_egress"


def _group_cls() -> Any:
    from moto.ec2.models.security_groups import SecurityGroup

    return SecurityGroup


def check() -> None:
    from moto.ec2.models.security_groups import SecurityGroupBackend

    require(_group_cls(), "create_from_cloudformation_json")
    require(SecurityGroupBackend, "authorize_security_group_egress")


def _port(value: Any) -> str | None:
    return None if value is None else str(value)


def apply_egress(backend: Any, group: Any, rules: list[dict[str, Any]]) -> None:
    """Replace ``group``'s egress rules with the template's ``rules``."""
    group.egress_rules.clear()
    for rule in rules:
        ranges: list[dict[str, str]] = []
        if rule.get("CidrIp"):
            ranges.append({"CidrIp": rule["CidrIp"]})
        if rule.get("CidrIpv6"):
            ranges.append({"CidrIpv6": rule["CidrIpv6"]})
        dest = rule.get("DestinationSecurityGroupId")
        protocol = str(rule["IpProtocol"])
        every = protocol in ("-1", "all")
        ports = (None, None) if every else (_port(rule.get("FromPort")), _port(rule.get("ToPort")))
        backend.authorize_security_group_egress(
            group_name_or_id=group.id, ip_protocol=protocol, from_port=ports[0], to_port=ports[1],
            ip_ranges=ranges, source_groups=[{"GroupId": dest}] if dest else [], vpc_id=group.vpc_id)


def install() -> None:
    group_cls = _group_cls()
    original = group_cls.__dict__["create_from_cloudformation_json"].__func__
    if getattr(original, MARK, False):
        return

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        from moto.ec2.models import ec2_backends

        group = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        egress = (cloudformation_json.get("Properties") or {}).get("SecurityGroupEgress")
        if egress:
            apply_egress(ec2_backends[account_id][region_name], group, list(egress))
        return group

    setattr(create_from_cloudformation_json, MARK, True)
    group_cls.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)


__all__ = ["apply_egress", "check", "install"]
