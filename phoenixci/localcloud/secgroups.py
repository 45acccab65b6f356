"""Security-group semantics for the local cloud: the rules as EC2 describes them, and matching.

A ``SecurityGroup`` holds ingress and egress ``Rule``s (for egress, a rule's CIDRs and groups are
destinations). ``allows`` answers "may this source reach this port?"; ``allowed_public_ports``
lists the TCP ports the Elastic IP forwarder must listen on; ``port_match``/``addr_match`` are the
nftables pieces ``hostsg`` builds the host-side rules from (enforced outside the guest's reach).

The host stands for the internet: a rule is "internet-facing" when its CIDRs contain
``127.0.0.1`` (``0.0.0.0/0`` does). Traffic between an instance and the host (the EIP forwarder,
the API, the mirror) is allowed exactly by internet-facing rules — never because a VPC CIDR
happens to contain the gateway address.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

Protocol = Literal["tcp", "udp", "icmp", "-1"]
INTERNET = ipaddress.ip_address("127.0.0.1")
#: A wider internet-facing TCP range is cut to this many ports (one listener each).
PUBLIC_RANGE_CAP = 64

_PROTOCOLS: dict[str, Protocol] = {
    "tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
    "-1": "-1", "all": "-1",
}


class SecurityGroupError(PhoenixError):
    """A security group that cannot be understood, or a ruleset that could not be applied."""


@dataclass(frozen=True)
class Rule:
    """One permission. Ports are inclusive; ``-1`` means all (or, for ICMP, any type). For an
    egress rule ``cidrs`` and ``source_groups`` are the destinations."""

    protocol: Protocol
    from_port: int = -1
    to_port: int = -1
    cidrs: list[str] = field(default_factory=list)
    source_groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp", "icmp", "-1"):
            raise SecurityGroupError(f"unsupported protocol {self.protocol!r}")
        for cidr in self.cidrs:
            _network(cidr)
        if self.protocol in ("tcp", "udp") and not (
                0 <= self.from_port <= self.to_port <= 65535 or self.from_port == self.to_port == -1):
            raise SecurityGroupError(f"bad port range {self.from_port}-{self.to_port} for {self.protocol}")

    @property
    def all_ports(self) -> bool:
        return self.protocol == "-1" or self.from_port == -1 or (self.from_port, self.to_port) == (0, 65535)

    def matches_port(self, protocol: str, port: int) -> bool:
        if self.protocol != "-1" and self.protocol != protocol:
            return False
        if self.protocol == "icmp":  # FromPort is the ICMP type, ToPort the code
            return self.from_port in (-1, port)
        return self.all_ports or self.from_port <= port <= self.to_port

    def matches_source(self, source_ip: str, members: Mapping[str, set[str]]) -> bool:
        addr = ipaddress.ip_address(source_ip)
        if any(addr in _network(c) for c in self.cidrs):
            return True
        return any(source_ip in members.get(g, set()) for g in self.source_groups)

    @property
    def internet_facing(self) -> bool:
        return any(INTERNET in _network(c) for c in self.cidrs)


@dataclass(frozen=True)
class SecurityGroup:
    group_id: str
    ingress: list[Rule] = field(default_factory=list)
    egress: list[Rule] = field(default_factory=list)



def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as e:
        raise SecurityGroupError(f"bad CIDR {cidr!r}: {e}") from None


#: every new group's egress until revoked (AWS); moto gives it only to groups of an existing VPC
ALL_OUTBOUND = Rule("-1", -1, -1, ["0.0.0.0/0"])


def _rule(protocol: str | None, from_port: Any, to_port: Any, cidrs: list[str],
          groups: list[str], group_id: str) -> Rule | None:
    proto = _PROTOCOLS.get(str(protocol).lower()) if protocol is not None else None
    if proto is None:
        log.warning("security group %s: skipping rule with unsupported protocol %r", group_id, protocol)
        return None
    if proto == "-1":
        return Rule(proto, -1, -1, cidrs, groups)
    lo = -1 if from_port is None else int(from_port)
    hi = -1 if to_port is None else int(to_port)
    return Rule(proto, lo, hi, cidrs, groups)


def from_api(group: Mapping[str, Any]) -> SecurityGroup:
    """Convert one element of ``describe_security_groups()["SecurityGroups"]``."""
    group_id = str(group["GroupId"])

    def rules(perms: list[Mapping[str, Any]]) -> list[Rule]:
        out = []
        for perm in perms:
            cidrs = [r["CidrIp"] for r in perm.get("IpRanges", []) if r.get("CidrIp")]
            cidrs += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", []) if r.get("CidrIpv6")]
            groups = [p["GroupId"] for p in perm.get("UserIdGroupPairs", []) if p.get("GroupId")]
            rule = _rule(perm.get("IpProtocol"), perm.get("FromPort"), perm.get("ToPort"), cidrs, groups,
                         group_id)
            if rule is not None:
                out.append(rule)
        return out

    return SecurityGroup(group_id, rules(group.get("IpPermissions", [])),
                         rules(group.get("IpPermissionsEgress", [])))


def from_moto(group: Any) -> SecurityGroup:
    """Convert a moto ``SecurityGroup`` model (moto keeps one CIDR or one source group per rule).

    A group outside any VPC gets AWS's default egress (allow all): moto adds it only to groups of
    an existing VPC, and it cannot have been revoked (moto refuses to revoke a rule it lacks).
    """
    def rules(moto_rules: Iterable[Any]) -> list[Rule]:
        out = []
        for r in moto_rules:
            cidr = r.ip_range.get("CidrIp") or r.ip_range.get("CidrIpv6")
            peer = r.source_group.get("GroupId")
            if r.source_group and not peer:
                log.warning("security group %s: peer group without GroupId ignored: %r", group.id, r.source_group)
            rule = _rule(r.ip_protocol, r.from_port, r.to_port, [cidr] if cidr else [],
                         [peer] if peer else [], group.id)
            if rule is not None:
                out.append(rule)
        return out

    egress = rules(getattr(group, "egress_rules", []))
    if getattr(group, "vpc_id", None) is None and ALL_OUTBOUND not in egress:
        egress.append(ALL_OUTBOUND)
    return SecurityGroup(group.id, rules(group.ingress_rules), egress)


def allows(groups: Iterable[SecurityGroup], *, source_ip: str, port: int, protocol: str = "tcp",
           members: Mapping[str, set[str]] | None = None) -> bool:
    """True if any rule of any group lets ``source_ip`` reach ``port``/``protocol``.

    ``members`` maps a group id to the private IPs of the instances in it (for rules that name a
    source group). For ICMP, ``port`` is the ICMP type.
    """
    members = members or {}
    return any(rule.matches_port(protocol, port) and rule.matches_source(source_ip, members)
               for g in groups for rule in g.ingress)


def allowed_public_ports(groups: Iterable[SecurityGroup], *, cap: int = PUBLIC_RANGE_CAP) -> set[int]:
    """TCP ports reachable from the internet (the host): what the EIP forwarder listens on.

    A range wider than ``cap`` ports (an all-traffic rule too) is cut to its first ``cap`` ports
    (from 1) with a warning: name internet-facing ports explicitly in templates.
    """
    ports: set[int] = set()
    for g in groups:
        for rule in g.ingress:
            if rule.protocol not in ("tcp", "-1") or not rule.internet_facing:
                continue
            lo, hi = (0, 65535) if rule.all_ports else (rule.from_port, rule.to_port)
            lo = max(lo, 1)
            if hi - lo + 1 > cap:
                log.warning("security group %s: internet-facing TCP range %d-%d is wider than %d ports; "
                            "forwarding only %d-%d", g.group_id, lo, hi, cap, lo, lo + cap - 1)
                hi = lo + cap - 1
            ports.update(range(lo, hi + 1))
    return ports


def port_match(rule: Rule, *, direction: str = "dport") -> str:
    """The protocol/port part of an nft rule (empty for all traffic)."""
    if rule.protocol == "-1":
        return ""
    if rule.protocol == "icmp":
        return "meta l4proto icmp" if rule.from_port == -1 else f"icmp type {rule.from_port}"
    if rule.all_ports:
        return f"meta l4proto {rule.protocol}"
    ports = str(rule.from_port) if rule.from_port == rule.to_port else f"{rule.from_port}-{rule.to_port}"
    return f"{rule.protocol} {direction} {ports}"


def addr_match(addrs: Iterable[str], field: str) -> str:
    """``ip saddr { … }`` (``field`` = saddr | daddr) for the IPv4 addresses or networks among
    ``addrs`` (validated; IPv6 ones are left out: instances send and receive IPv4 only), or ""."""
    if field not in ("saddr", "daddr"):
        raise SecurityGroupError(f"bad address field {field!r}")
    v4: set[str] = set()
    for a in addrs:
        net = _network(a)
        if net.version == 4:
            v4.add(str(net.network_address) if net.num_addresses == 1 else str(net))
    return f"ip {field} {{ {', '.join(sorted(v4))} }}" if v4 else ""


def label(comment: str) -> str:
    """``comment "…"`` with anything but [A-Za-z0-9_. -] neutralised."""
    return 'comment "' + re.sub(r"[^A-Za-z0-9_. -]", "_", comment)[:120] + '"'


__all__ = ["ALL_OUTBOUND", "PUBLIC_RANGE_CAP", "Protocol", "Rule", "SecurityGroup", "SecurityGroupError",
           "addr_match", "allowed_public_ports", "allows", "from_api", "from_moto", "label", "port_match"]
