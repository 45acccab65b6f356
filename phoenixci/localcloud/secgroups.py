"""Security-group semantics for the local cloud: matching, public ports, nftables per instance.

A ``SecurityGroup`` holds ingress ``Rule``s as EC2 describes them. ``allows`` answers "may this
source reach this port?"; ``allowed_public_ports`` lists the TCP ports the Elastic IP forwarder
must listen on; ``render_nft``/``apply_nft`` enforce the groups inside an instance's network
namespace.

The host stands for the internet: a rule is "internet-facing" when its CIDRs contain
``127.0.0.1`` (``0.0.0.0/0`` does). Inside the namespace, the host appears as the subnet gateway
(the EIP forwarder connects from there), so traffic from the gateway is accepted exactly for the
internet-facing rules — never because a VPC CIDR happens to contain the gateway address.
Egress is not filtered (the host firewall keeps traffic in the machine).
"""
from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

Protocol = Literal["tcp", "udp", "icmp", "-1"]
TABLE = "phoenixci_sg"
INTERNET = ipaddress.ip_address("127.0.0.1")
#: A wider internet-facing TCP range is cut to this many ports (one listener each).
PUBLIC_RANGE_CAP = 64

_PROTOCOLS: dict[str, Protocol] = {
    "tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
    "-1": "-1", "all": "-1",
}
_NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SecurityGroupError(PhoenixError):
    """A security group that cannot be understood, or a ruleset that could not be applied."""


@dataclass(frozen=True)
class Rule:
    """One ingress permission. Ports are inclusive; ``-1`` means all (or, for ICMP, any type)."""

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


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as e:
        raise SecurityGroupError(f"bad CIDR {cidr!r}: {e}") from None


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
    rules = []
    for perm in group.get("IpPermissions", []):
        cidrs = [r["CidrIp"] for r in perm.get("IpRanges", []) if r.get("CidrIp")]
        cidrs += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", []) if r.get("CidrIpv6")]
        groups = [p["GroupId"] for p in perm.get("UserIdGroupPairs", []) if p.get("GroupId")]
        rule = _rule(perm.get("IpProtocol"), perm.get("FromPort"), perm.get("ToPort"), cidrs, groups, group_id)
        if rule is not None:
            rules.append(rule)
    return SecurityGroup(group_id, rules)


def from_moto(group: Any) -> SecurityGroup:
    """Convert a moto ``SecurityGroup`` model (moto keeps one CIDR or one source group per rule)."""
    rules = []
    for r in group.ingress_rules:
        cidr = r.ip_range.get("CidrIp") or r.ip_range.get("CidrIpv6")
        source = r.source_group.get("GroupId")
        if r.source_group and not source:
            log.warning("security group %s: source group without GroupId ignored: %r", group.id, r.source_group)
        rule = _rule(r.ip_protocol, r.from_port, r.to_port, [cidr] if cidr else [],
                     [source] if source else [], group.id)
        if rule is not None:
            rules.append(rule)
    return SecurityGroup(group.id, rules)


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


def _match(rule: Rule) -> str:
    """The protocol/port part of an nft rule (empty for all traffic)."""
    if rule.protocol == "-1":
        return ""
    if rule.protocol == "icmp":
        return "meta l4proto icmp" if rule.from_port == -1 else f"icmp type {rule.from_port}"
    if rule.all_ports:
        return f"meta l4proto {rule.protocol}"
    ports = str(rule.from_port) if rule.from_port == rule.to_port else f"{rule.from_port}-{rule.to_port}"
    return f"{rule.protocol} dport {ports}"


def _saddr(addrs: Iterable[str]) -> list[str]:
    """``ip saddr { … }`` / ``ip6 saddr { … }`` matches for validated addresses or networks."""
    v4: set[str] = set()
    v6: set[str] = set()
    for a in addrs:
        net = _network(a)
        (v4 if net.version == 4 else v6).add(str(net.network_address) if net.num_addresses == 1 else str(net))
    out = []
    for fam, items in (("ip", v4), ("ip6", v6)):
        if items:
            out.append(f"{fam} saddr {{ {', '.join(sorted(items))} }}")
    return out


def _line(*parts: str, comment: str) -> str:
    label = re.sub(r"[^A-Za-z0-9_. -]", "_", comment)[:120]
    return "    " + " ".join(p for p in parts if p) + f' accept comment "{label}"'


def render_nft(groups: Iterable[SecurityGroup], *, gateway_ip: str,
               members: Mapping[str, set[str]] | None = None) -> str:
    """The nftables ruleset enforcing ``groups`` inside an instance's network namespace."""
    members = members or {}
    gw = str(ipaddress.ip_address(gateway_ip))
    groups = list(groups)
    lines = [
        f"table inet {TABLE} {{",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iif "lo" accept',
        "    ct state established,related accept",
        "    ct state invalid drop",
        f"    ip saddr {gw} udp sport 67 udp dport 68 accept comment \"dhcp replies\"",
        "    # the host (the internet, and the EIP forwarder) comes from the gateway",
    ]
    for g in groups:
        for rule in g.ingress:
            if rule.internet_facing:
                lines.append(_line(f"ip saddr {gw}", _match(rule), comment=f"{g.group_id} internet"))
    lines.append(f"    ip saddr {gw} drop")
    for g in groups:
        for rule in g.ingress:
            sources = list(rule.cidrs)
            for ref in rule.source_groups:
                ips = sorted(members.get(ref, set()))
                if not ips:
                    log.debug("security group %s: referenced group %s has no members", g.group_id, ref)
                sources.extend(ips)
            for saddr in _saddr(sources):
                lines.append(_line(saddr, _match(rule), comment=g.group_id))
    lines += [
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _nft(netns_name: str, script: str) -> None:
    if not _NETNS_NAME.match(netns_name):
        raise SecurityGroupError(f"bad network namespace name {netns_name!r}")
    try:
        proc = subprocess.run(["ip", "netns", "exec", netns_name, "nft", "-f", "-"], input=script,
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SecurityGroupError(f"nft in netns {netns_name} failed: {e}") from e
    if proc.returncode != 0:
        raise SecurityGroupError(f"nft in netns {netns_name} failed (exit {proc.returncode}): "
                                 f"{proc.stderr.strip()}")


def apply_nft(netns_name: str, ruleset: str) -> None:
    """Replace the ``inet phoenixci_sg`` table in ``netns_name`` with ``ruleset``, atomically.

    One nft transaction: create the table if missing, delete it, define it anew — so there is
    no moment without rules, and a bad ruleset leaves the old one in force.
    """
    _nft(netns_name, f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{ruleset}")
    log.info("security groups applied in netns %s", netns_name)


def remove_nft(netns_name: str) -> None:
    """Remove the security-group table from ``netns_name`` (no error if it is absent)."""
    _nft(netns_name, f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")


__all__ = ["PUBLIC_RANGE_CAP", "TABLE", "Protocol", "Rule", "SecurityGroup", "SecurityGroupError",
           "allowed_public_ports", "allows", "apply_nft", "from_api", "from_moto",
           "remove_nft", "render_nft"]
