"""Network ACLs for the local cloud: the rules of each subnet, and their stateless nftables chains.

AWS (VPC User Guide, "Control subnet traffic with network access control lists"): a network ACL
is enforced at the subnet boundary, statelessly (a reply is checked like any other packet),
ingress and egress separately, each in rule-number order — the first rule that matches decides,
and the ``*`` rule (32767) denies what none matched. Every subnet is associated with one ACL
(the VPC's default one, which allows everything, unless another was associated). A rule's port
range is the packet's destination port; its protocol is a number (``-1``: all; another protocol
than TCP, UDP or ICMP: all its traffic). Not filtered: the metadata service, DHCP and Amazon DNS.

``read_nacls`` copies what moto holds into plain values (the reconciler's snapshot carries them);
``nacl_rules`` — pure — orders each subnet's rules; ``render_chains`` writes one subnet's chains
for the ``ip phoenixci_<tag>`` table (``hostsg``): ``nacl_<bridge>_in``/``_out`` for traffic
between subnets (peers by address) and ``…_in_host``/``…_out_host`` for traffic with the host,
which stands for the internet (a rule's CIDR matches it when it contains 127.0.0.1, as for
security groups; the gateway's service ports — the API and the mirror — count as HTTPS, 443, on
the way out). Allow = ``return`` (the security groups decide next), deny = ``drop``. No ct state:
stateless. A subnet whose ACL allows everything both ways gets no chains at all.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from phoenixci.localcloud.netlink import IMDS_ADDRESS
from phoenixci.localcloud.secgroups import INTERNET, SecurityGroupError

HTTPS = 443
_IFNAME = re.compile(r"^[A-Za-z0-9]{1,15}$")
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp"}
_NAMES_TO_NUMBERS = {"tcp": "6", "udp": "17", "icmp": "1", "all": "-1"}


@dataclass(frozen=True)
class NaclEntry:
    """One entry as EC2 describes it (``cidr`` None for an IPv6 entry; instances speak IPv4)."""

    rule_number: int
    egress: bool
    allow: bool
    protocol: str = "-1"
    cidr: str | None = "0.0.0.0/0"
    ports: tuple[int, int] | None = None
    icmp: tuple[int, int] | None = None  # (type, code); -1 = any

    @property
    def network(self) -> ipaddress.IPv4Network | None:
        if self.cidr is None:
            return None
        try:
            net = ipaddress.ip_network(self.cidr, strict=False)
        except ValueError as e:
            raise SecurityGroupError(f"bad network ACL CIDR {self.cidr!r}: {e}") from None
        return net if isinstance(net, ipaddress.IPv4Network) else None

    def matches(self, protocol: str, port: int, peer: str) -> bool:
        """Would this entry match a packet to ``port`` (``protocol`` by number) with ``peer``?"""
        net = self.network
        if net is None or ipaddress.ip_address(peer) not in net:
            return False
        if self.protocol != "-1" and self.protocol != protocol:
            return False
        if self.protocol in ("6", "17") and self.ports is not None and self.ports[0] != -1:
            return self.ports[0] <= port <= self.ports[1]
        if self.protocol == "1" and self.icmp is not None:
            return self.icmp[0] in (-1, port)
        return True

    @property
    def allows_everything(self) -> bool:
        return self.allow and self.protocol == "-1" and str(self.network) == "0.0.0.0/0"


@dataclass(frozen=True)
class SubnetNacl:
    """The ACL a subnet is associated with, its rules in number order per direction."""

    acl_id: str
    ingress: tuple[NaclEntry, ...]
    egress: tuple[NaclEntry, ...]

    @property
    def open(self) -> bool:
        """The default ACL's shape: the first rule each way allows everything."""
        return all(rules and rules[0].allows_everything for rules in (self.ingress, self.egress))

    def decide(self, *, egress: bool, protocol: str, port: int, peer: str) -> bool:
        """The ACL's verdict for one packet (what the chains enforce), ``*`` denying the rest."""
        for entry in self.egress if egress else self.ingress:
            if entry.matches(protocol, port, peer):
                return entry.allow
        return False


def _number(protocol: Any) -> str:
    text = str(protocol).strip().lower()
    return _NAMES_TO_NUMBERS.get(text, text)


def _pair(low: Any, high: Any) -> tuple[int, int] | None:
    if low is None and high is None:
        return None
    low = -1 if low is None else int(low)
    return low, (low if high is None else int(high))


def read_nacls(ec2: Any, subnet_cidrs: Mapping[str, str]) -> dict[str, tuple[str, tuple[NaclEntry, ...]]]:
    """subnet CIDR → (ACL id, entries as stored) for the subnets in ``subnet_cidrs`` (id → CIDR)."""
    out: dict[str, tuple[str, tuple[NaclEntry, ...]]] = {}
    for acl in list(ec2.network_acls.values()):
        subnets = [a.subnet_id for a in list(acl._associations.values()) if a.subnet_id in subnet_cidrs]
        if not subnets:
            continue
        entries = tuple(NaclEntry(
            rule_number=int(e.rule_number), egress=e.egress in (True, "true", "True"),
            allow=str(e.rule_action).lower() == "allow", protocol=_number(e.protocol),
            cidr=e.cidr_block or None, ports=_pair(e.port_range_from, e.port_range_to),
            icmp=_pair(e.icmp_type, e.icmp_code)) for e in list(acl.network_acl_entries))
        for subnet_id in subnets:
            out[subnet_cidrs[subnet_id]] = (str(acl.id), entries)
    return out


def nacl_rules(snap: Any) -> dict[str, SubnetNacl]:
    """subnet CIDR → its ACL's ingress and egress rules, each in rule-number order.

    ``snap`` is the reconciler's Snapshot (its ``nacls``: subnet CIDR → (ACL id, entries)); a
    subnet it does not list has the default ACL's rules (everything allowed).
    """
    result: dict[str, SubnetNacl] = {}
    for cidr, (acl_id, entries) in sorted(getattr(snap, "nacls", {}).items()):
        ordered = sorted(entries, key=lambda e: e.rule_number)
        result[cidr] = SubnetNacl(acl_id, tuple(e for e in ordered if not e.egress),
                                  tuple(e for e in ordered if e.egress))
    return result


# --------------------------------------------------------------------------- nftables
def label(comment: str) -> str:
    """``comment "…"`` with anything but [A-Za-z0-9_. -] neutralised (as hostsg's rules)."""
    return 'comment "' + re.sub(r"[^A-Za-z0-9_. -]", "_", comment)[:120] + '"'


def chain(bridge: str, suffix: str) -> str:
    if not _IFNAME.match(bridge) or suffix not in ("in", "out", "in_host", "out_host"):
        raise SecurityGroupError(f"bad network ACL chain {bridge!r}/{suffix!r}")
    return f"nacl_{bridge}_{suffix}"


def _match(entry: NaclEntry) -> str:
    proto = entry.protocol
    if proto == "-1":
        return ""
    name = _PROTOCOL_NAMES.get(proto)
    if name in ("tcp", "udp"):
        if entry.ports is None or entry.ports == (0, 65535) or entry.ports[0] == -1:
            return f"meta l4proto {name}"
        low, high = entry.ports
        return f"{name} dport {low if low == high else f'{low}-{high}'}"
    if name == "icmp":
        if entry.icmp is None or entry.icmp[0] == -1:
            return "meta l4proto icmp"
        kind, code = entry.icmp
        return f"icmp type {kind}" + ("" if code == -1 else f" icmp code {code}")
    if not proto.isdigit() or not 0 <= int(proto) <= 255:
        raise SecurityGroupError(f"bad network ACL protocol {proto!r}")
    return f"meta l4proto {int(proto)}"


def _rules(acl: SubnetNacl, *, egress: bool, host: bool, services: Iterable[int] = ()) -> list[str]:
    entries = acl.egress if egress else acl.ingress
    lines = []
    svc = sorted({int(p) for p in services})
    if host and egress and svc:  # the gateway's service ports stand for HTTPS endpoints
        verdict = "return" if acl.decide(egress=True, protocol="6", port=HTTPS, peer=str(INTERNET)) else "drop"
        lines.append(f"    tcp dport {{ {', '.join(map(str, svc))} }} {verdict} {label('service ports as 443')}")
    for e in entries:
        net = e.network
        if net is None:
            continue
        if host:
            if INTERNET not in net:
                continue  # never matches the host, which stands for the internet
            peer = ""
        else:
            peer = f"ip {'daddr' if egress else 'saddr'} {net}" if net.prefixlen else ""
        match = " ".join(x for x in (peer, _match(e)) if x)
        verdict = "return" if e.allow else "drop"
        lines.append(f"    {match + ' ' if match else ''}{verdict} {label(f'{acl.acl_id} rule {e.rule_number}')}")
    return lines + [f"    drop {label(acl.acl_id + ' rule *')}"]


def render_chains(bridge: str, acl: SubnetNacl, services: Iterable[int] = ()) -> list[str]:
    """The four chains of one subnet's ACL (none when it allows everything)."""
    if acl.open:
        return []
    services = list(services)
    lines = []
    for suffix, egress, host in (("in", False, False), ("out", True, False),
                                 ("in_host", False, True), ("out_host", True, True)):
        lines += [f"  chain {chain(bridge, suffix)} {{",
                  *_rules(acl, egress=egress, host=host, services=services), "  }"]
    return lines


def jumps(acls: Mapping[str, SubnetNacl]) -> dict[str, list[str]]:
    """What goes at the head of hostsg's ``between``, ``to_host`` and ``from_host`` chains, before
    their conntrack rules: what AWS's ACLs never filter (the metadata service both ways, DHCP),
    then the jumps into the chains — across subnets only (iifname != oifname) in ``between``.
    Nothing at all when every subnet's ACL allows everything."""
    out: dict[str, list[str]] = {"between": [], "to_host": [], "from_host": []}
    for bridge, acl in sorted(acls.items()):
        if acl.open:
            continue
        out["between"] += [f'    iifname "{bridge}" oifname != "{bridge}" jump {chain(bridge, "out")}',
                           f'    oifname "{bridge}" iifname != "{bridge}" jump {chain(bridge, "in")}']
        out["to_host"].append(f'    iifname "{bridge}" jump {chain(bridge, "out_host")}')
        out["from_host"].append(f'    oifname "{bridge}" jump {chain(bridge, "in_host")}')
    if out["between"]:
        imds = f"    ct status dnat ct original ip daddr {IMDS_ADDRESS} accept {label('the IMDS')}"
        out["to_host"][:0] = [imds, f"    udp sport 68 udp dport 67 accept {label('DHCP')}"]
        out["from_host"][:0] = [imds, f"    udp sport 67 udp dport 68 accept {label('DHCP')}"]
    return out


__all__ = ["NaclEntry", "SubnetNacl", "chain", "jumps", "nacl_rules", "read_nacls", "render_chains"]
