"""Network ACLs in the EC2 API behave as on AWS.

AWS behaviour restored (EC2 API Reference: CreateNetworkAcl, CreateNetworkAclEntry,
DeleteNetworkAclEntry, ReplaceNetworkAclAssociation, DeleteSubnet, DeleteVpc; VPC User Guide,
"Control subnet traffic with network access control lists"):

* a custom network ACL starts closed: its only entries are the ``*`` rules (number 32767)
  denying all inbound and all outbound traffic, and DescribeNetworkAcls lists them;
* an entry's protocol is stored as its number (``tcp`` → ``6``, ``udp`` → ``17``, ``icmp`` →
  ``1``, ``all`` → ``-1``); rule numbers are numbers whichever way they came in (the API's
  strings and a template's integers used to be different rules to moto's duplicate check);
* deleting or replacing an entry that does not exist answers ``InvalidNetworkAclEntry.NotFound``,
  replacing an unknown association ``InvalidAssociationID.NotFound`` (moto: HTTP 500);
* a deleted subnet leaves no association behind; DeleteVpc refuses while a custom network ACL is
  in the VPC (``DependencyViolation``) and deletes the VPC's default network ACL with it.

moto 5.2.5 creates custom ACLs with no entries (so they looked open), raised StopIteration for
the missing entry and association, and kept every VPC's default ACL (and stale associations)
forever. Hooks: ``moto.ec2.models.network_acls.NetworkAclBackend`` (``create_network_acl``,
``create_network_acl_entry``, ``delete_network_acl_entry``, ``replace_network_acl_association``),
``moto.ec2.models.subnets.SubnetBackend.delete_subnet``, ``moto.ec2.models.vpcs.VPCBackend.delete_vpc``.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PROTOCOL_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "all": "-1"}
DEFAULT_RULE = 32767


def protocol_number(protocol: Any) -> str:
    """The protocol as EC2 stores it: a number as a string, ``-1`` for all."""
    text = str(protocol).strip().lower()
    return PROTOCOL_NUMBERS.get(text, text)


def as_bool(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def _not_found(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _entry_missing(acl: Any, rule_number: int, egress: bool) -> Exception:
    return _not_found("InvalidNetworkAclEntry.NotFound",
                      f"The network ACL entry identified by {rule_number} ({'egress' if egress else 'ingress'}) "
                      f"does not exist in {acl.id}")


def _find_entry(acl: Any, rule_number: int, egress: bool) -> Any:
    return next((e for e in acl.network_acl_entries
                 if as_bool(e.egress) == egress and int(e.rule_number) == rule_number), None)


def _create_acl(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_network_acl(self: Any, vpc_id: str, tags: Any = None, default: bool = False) -> Any:
        acl = original(self, vpc_id, tags=tags, default=default)
        if not default:
            for egress in (False, True):
                self.create_network_acl_entry(
                    network_acl_id=acl.id, rule_number=DEFAULT_RULE, protocol="-1", rule_action="deny",
                    egress=egress, cidr_block="0.0.0.0/0", icmp_code=None, icmp_type=None,
                    port_range_from=None, port_range_to=None, ipv6_cidr_block=None)
        return acl

    return create_network_acl


def _create_entry(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_network_acl_entry(self: Any, network_acl_id: str, rule_number: Any, protocol: Any,
                                 rule_action: str, egress: Any, *args: Any, **kwargs: Any) -> Any:
        acl = self.get_network_acl(network_acl_id)
        number, out = int(rule_number), as_bool(egress)
        if _find_entry(acl, number, out) is not None:
            from moto.ec2.exceptions import NetworkAclEntryAlreadyExistsError

            raise NetworkAclEntryAlreadyExistsError(number)
        for key in ("port_range_from", "port_range_to", "icmp_code", "icmp_type"):
            if kwargs.get(key) not in (None, ""):
                kwargs[key] = int(kwargs[key])
        return original(self, network_acl_id, number, protocol_number(protocol),
                        str(rule_action).lower(), out, *args, **kwargs)

    return create_network_acl_entry


def _delete_entry(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def delete_network_acl_entry(self: Any, network_acl_id: str, rule_number: Any, egress: Any) -> Any:
        acl = self.get_network_acl(network_acl_id)
        entry = _find_entry(acl, int(rule_number), as_bool(egress))
        if entry is None:
            raise _entry_missing(acl, int(rule_number), as_bool(egress))
        acl.network_acl_entries.remove(entry)
        return entry

    return delete_network_acl_entry


def _replace_association(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def replace_network_acl_association(self: Any, association_id: str, network_acl_id: str) -> Any:
        self.get_network_acl(network_acl_id)  # InvalidNetworkAclID.NotFound before anything changes
        if not any(association_id in acl._associations for acl in self.network_acls.values()):
            raise _not_found("InvalidAssociationID.NotFound",
                             f"The association ID '{association_id}' does not exist")
        return original(self, association_id, network_acl_id)

    return replace_network_acl_association


def subnet_association(backend: Any, subnet_id: str) -> tuple[Any, str] | None:
    """The network ACL a subnet is associated with, and the association id."""
    for acl in list(backend.network_acls.values()):
        for assoc_id, assoc in list(acl._associations.items()):
            if assoc.subnet_id == subnet_id:
                return acl, assoc_id
    return None


def _delete_subnet(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def delete_subnet(self: Any, subnet_id: str) -> Any:
        subnet = original(self, subnet_id)
        for acl in list(self.network_acls.values()):
            for assoc_id, assoc in list(acl._associations.items()):
                if assoc.subnet_id == subnet_id:
                    del acl._associations[assoc_id]
        return subnet

    return delete_subnet


def _delete_vpc(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def delete_vpc(self: Any, vpc_id: str) -> Any:
        from moto.ec2.exceptions import DependencyViolationError

        acls = [a for a in list(self.network_acls.values()) if a.vpc_id == vpc_id]
        if any(not a.default for a in acls):
            raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
        vpc = original(self, vpc_id)
        for acl in acls:
            self.network_acls.pop(acl.id, None)
            self.tags.pop(acl.id, None)
        return vpc

    return delete_vpc


def _targets() -> list[tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
    from moto.ec2.models.network_acls import NetworkAclBackend
    from moto.ec2.models.subnets import SubnetBackend
    from moto.ec2.models.vpcs import VPCBackend

    return [(NetworkAclBackend, "create_network_acl", _create_acl),
            (NetworkAclBackend, "create_network_acl_entry", _create_entry),
            (NetworkAclBackend, "delete_network_acl_entry", _delete_entry),
            (NetworkAclBackend, "replace_network_acl_association", _replace_association),
            (SubnetBackend, "delete_subnet", _delete_subnet),
            (VPCBackend, "delete_vpc", _delete_vpc)]


def check() -> None:
    from moto.ec2 import exceptions
    from moto.ec2.models import network_acls

    from phoenixci.localcloud.patches import require

    for owner, name, _ in _targets():
        require(owner, name)
    require(network_acls.NetworkAcl, "entries")
    for name in ("EC2ClientError", "DependencyViolationError", "NetworkAclEntryAlreadyExistsError"):
        require(exceptions, name)
    require(network_acls, "NetworkAclAssociation")


def install() -> None:
    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    for owner, name, wrap in _targets():
        current = getattr(owner, name)
        if not is_patched(current):
            replace(owner, name, mark(wrap(current)))
    log.debug("EC2 network ACL semantics installed")


__all__ = ["DEFAULT_RULE", "as_bool", "check", "install", "protocol_number", "subnet_association"]
