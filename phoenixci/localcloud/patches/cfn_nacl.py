"""Network ACLs in CloudFormation: AWS::EC2::NetworkAcl, NetworkAclEntry, SubnetNetworkAclAssociation.

AWS behaviour restored (CloudFormation User Guide, the three resource types): each is made with
the EC2 API's semantics (ec2_nacl) — the ACL in its VPC with its tags and the stack's, closed
until entries open it; each entry with its number, direction, protocol, action, CIDR, port
range or ICMP type/code; the association moves the subnet from its current ACL (the VPC's
default) to the template's. ``Ref`` gives the ACL id, the entry's id and the association id
(``Fn::GetAtt`` ``Id`` / ``AssociationId``). DeleteStack removes them in dependency order
(cfn_delete): an association's subnet goes back to the VPC's default ACL, as on AWS; entries
and then the ACL are deleted (``DependencyViolation`` while a subnet still uses it).

moto 5.2.5 has no model for any of the three: the stack reported CREATE_COMPLETE while none
existed, DescribeStackResources listed them without logical id, type or physical id,
DescribeStackResource answered HTTP 500 and Outputs referring to them vanished.

moto 5.2.5 hooks: ``moto.core.common_models.CloudFormationModel`` (three subclasses, found by
``moto.cloudformation.parsing.get_model_map``, whose caches are cleared).
"""
from __future__ import annotations

import logging
from typing import Any

from phoenixci.errors import PhoenixError
from phoenixci.localcloud.patches.ec2_nacl import as_bool, subnet_association

log = logging.getLogger(__name__)

ACL, ENTRY, ASSOCIATION = ("AWS::EC2::NetworkAcl", "AWS::EC2::NetworkAclEntry",
                           "AWS::EC2::SubnetNetworkAclAssociation")


class NaclDeleteError(PhoenixError):
    """Deleting a network ACL resource failed inside moto (reported as DELETE_FAILED)."""


def _ec2(account_id: str, region_name: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region_name]


def _attr(resource: Any, attr: str, values: dict[str, str]) -> str:
    if attr in values:
        return values[attr]
    from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

    raise UnformattedGetAttTemplateException()


def _guarded(delete: Any) -> Any:
    """moto's ResourceMap._delete_resource swallows TypeError/AttributeError: surface them."""
    def wrapper(self: Any, account_id: str, region_name: str) -> None:
        try:
            delete(self, account_id, region_name)
        except (TypeError, AttributeError) as exc:
            raise NaclDeleteError(f"{type(self).__name__}: {exc}") from exc

    return wrapper


class _Model:
    """What CloudFormation needs of every resource object (no update: phoenix never updates)."""

    TYPE = ""
    ATTRS: tuple[str, ...] = ()

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.TYPE

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRS

    def is_created(self) -> bool:
        return True


class _NetworkAcl(_Model):
    TYPE, ATTRS = ACL, ("Id", "VpcId")

    def __init__(self, ec2_backend: Any, acl_id: str, vpc_id: str) -> None:
        self.ec2_backend, self.id, self.vpc_id = ec2_backend, acl_id, vpc_id

    @property
    def physical_resource_id(self) -> str:
        return str(self.id)

    def get_cfn_attribute(self, attr: str) -> str:
        return _attr(self, attr, {"Id": self.id, "VpcId": self.vpc_id})

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json.get("Properties") or {}
        backend = _ec2(account_id, region_name)
        tags = [{"Key": str(t["Key"]), "Value": str(t.get("Value", ""))} for t in props.get("Tags") or []]
        acl = backend.create_network_acl(str(props["VpcId"]), tags=tags)
        return cls(backend, acl.id, acl.vpc_id)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _ec2(account_id, region_name)
        if self.id in backend.network_acls:
            backend.delete_network_acl(self.id)  # DependencyViolation while associated, as AWS


class _NetworkAclEntry(_Model):
    TYPE, ATTRS = ENTRY, ("Id",)

    def __init__(self, entry_id: str, acl_id: str, rule_number: int, egress: bool) -> None:
        self.entry_id, self.acl_id, self.rule_number, self.egress = entry_id, acl_id, rule_number, egress

    @property
    def physical_resource_id(self) -> str:
        return self.entry_id

    def get_cfn_attribute(self, attr: str) -> str:
        return _attr(self, attr, {"Id": self.entry_id})

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json.get("Properties") or {}
        ports, icmp = props.get("PortRange") or {}, props.get("Icmp") or {}
        entry = _ec2(account_id, region_name).create_network_acl_entry(
            network_acl_id=str(props["NetworkAclId"]), rule_number=props["RuleNumber"],
            protocol=props["Protocol"], rule_action=props["RuleAction"], egress=as_bool(props.get("Egress")),
            cidr_block=props.get("CidrBlock"), icmp_code=icmp.get("Code"), icmp_type=icmp.get("Type"),
            port_range_from=ports.get("From"), port_range_to=ports.get("To"),
            ipv6_cidr_block=props.get("Ipv6CidrBlock"))
        return cls(resource_name, entry.network_acl_id, int(entry.rule_number), as_bool(entry.egress))

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _ec2(account_id, region_name)
        acl = backend.network_acls.get(self.acl_id)
        if acl is not None and any(int(e.rule_number) == self.rule_number and as_bool(e.egress) == self.egress
                                   for e in acl.network_acl_entries):
            backend.delete_network_acl_entry(self.acl_id, self.rule_number, self.egress)


class _SubnetNetworkAclAssociation(_Model):
    TYPE, ATTRS = ASSOCIATION, ("AssociationId",)

    def __init__(self, association_id: str, subnet_id: str, acl_id: str) -> None:
        self.association_id, self.subnet_id, self.acl_id = association_id, subnet_id, acl_id

    @property
    def physical_resource_id(self) -> str:
        return self.association_id

    def get_cfn_attribute(self, attr: str) -> str:
        return _attr(self, attr, {"AssociationId": self.association_id})

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json.get("Properties") or {}
        backend = _ec2(account_id, region_name)
        subnet_id, acl_id = str(props["SubnetId"]), str(props["NetworkAclId"])
        backend.get_subnet(subnet_id)  # InvalidSubnetID.NotFound
        current = subnet_association(backend, subnet_id)
        if current is None:  # moto associates every new subnet with its VPC's default ACL
            raise NaclDeleteError(f"subnet {subnet_id} has no network ACL association")
        assoc = backend.replace_network_acl_association(current[1], acl_id)
        return cls(assoc.id, subnet_id, acl_id)

    def delete(self, account_id: str, region_name: str) -> None:
        """The subnet goes back to its VPC's default network ACL."""
        backend = _ec2(account_id, region_name)
        current = subnet_association(backend, self.subnet_id)
        if current is None or current[1] != self.association_id:
            return  # the subnet is gone, or someone re-associated it since
        default = next((a for a in backend.network_acls.values()
                        if a.default and a.vpc_id == current[0].vpc_id), None)
        if default is None:
            del current[0]._associations[self.association_id]
        else:
            backend.replace_network_acl_association(self.association_id, default.id)


for _cls in (_NetworkAcl, _NetworkAclEntry, _SubnetNetworkAclAssociation):
    _cls.delete = _guarded(_cls.delete)

#: the registered CloudFormation models, by type (made by install())
MODELS: dict[str, type] = {}


def check() -> None:
    from moto.cloudformation import exceptions, parsing
    from moto.core import common_models
    from moto.ec2.models import core
    from moto.ec2.models.network_acls import NetworkAclBackend

    from phoenixci.localcloud.patches import require

    require(parsing, "get_model_map")
    require(parsing, "get_name_type_map")
    require(parsing.get_model_map, "cache_clear")
    require(exceptions, "UnformattedGetAttTemplateException")
    require(common_models, "CloudFormationModel")
    require(core, "TaggedEC2Resource")
    for name in ("create_network_acl", "delete_network_acl", "create_network_acl_entry",
                 "delete_network_acl_entry", "replace_network_acl_association"):
        require(NetworkAclBackend, name)


def install() -> None:
    """Register the three types with moto's CloudFormation (the ACL is tagged like EC2 resources:
    the stack's tags and aws:cloudformation:*)."""
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.ec2.models.core import TaggedEC2Resource

    if MODELS:
        return
    for mixin, bases in ((_NetworkAcl, (TaggedEC2Resource, CloudFormationModel)),
                         (_NetworkAclEntry, (CloudFormationModel,)),
                         (_SubnetNetworkAclAssociation, (CloudFormationModel,))):
        MODELS[mixin.TYPE] = type(mixin.__name__.lstrip("_"), (mixin, *bases), {"__module__": __name__})
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
    log.debug("CloudFormation network ACL types installed")


__all__ = ["ACL", "ASSOCIATION", "ENTRY", "MODELS", "check", "install"]
