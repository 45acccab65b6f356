"""Security groups, anti-spoofing and the metadata redirect on the host side of each instance's link.

Root inside an instance owns everything in its network namespace (Debian's nftables.service
starts with ``flush ruleset``), so nothing that keeps the cloud's promises lives there. Two
nftables tables in the host's namespace, named like the cloud's host firewall (``phoenixci_<tag>``,
one per family), hold it all; one ``nft -f`` transaction replaces both (never ``flush ruleset``):

``bridge phoenixci_<tag>`` — the instances' ports (host-side veths ``<tag>v…``), stateless:
  * prerouting: a port sends only from its instance's MAC; IPv4 only from its private IP (and
    DHCP from 0.0.0.0 to broadcast); ARP only naming that MAC and IP. Anything else (another
    address, forged ARP, IPv6, VLAN tags) is dropped before the bridge learns from it.
  * postrouting: a port receives only ARP and IPv4 addressed to its instance (or broadcast), so
    the address a packet was checked against is the instance that gets it.
  A port of this cloud without rules sends and receives nothing.

``ip phoenixci_<tag>`` — security groups, stateful. The kernel here has no conntrack for the
bridge family (nf_conntrack_bridge), so groups are enforced in the IPv4 hooks, which bridged
packets pass through br_netfilter (each bridge has ``nf_call_iptables 1``); after the port rules
an address names its instance:
  * forward (instance → instance): the sender's egress, then the receiver's ingress;
  * input (instance → host, which stands for the internet: API, mirror): the sender's
    internet-facing egress, the gateway's service ports counting as HTTPS (443), the endpoints
    they stand for; the metadata service, DHCP and DNS on the gateway pass regardless, as on AWS;
  * output (host → instance: Elastic IP forwarders, SSH from the host): internet-facing ingress;
  * established and related packets pass both ways; invalid ones between instances are dropped;
  * prerouting nat: 169.254.169.254:80 arriving from a bridge → that gateway's IMDS port.

Network ACLs (stateless, at the subnet boundary; ``nacls``) are per-bridge chains jumped to from
``to_host``, ``from_host`` and ``between`` (when iifname != oifname) before the conntrack rules.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from phoenixci.localcloud import nacls, netlink
from phoenixci.localcloud.reconcile import GONE_STATES, RUNNING_STATES, Snapshot
from phoenixci.localcloud.secgroups import (
    Rule,
    SecurityGroup,
    SecurityGroupError,
    addr_match,
    from_moto,
    label,
    port_match,
)

IMDS_ADDRESS = netlink.IMDS_ADDRESS
HTTPS = 443
FAMILIES = ("bridge", "ip")
_TAG = re.compile(r"^[A-Za-z0-9]{1,12}$")
_IFNAME = re.compile(r"^[A-Za-z0-9]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ID = re.compile(r"^[A-Za-z0-9-]{1,40}$")


@dataclass(frozen=True)
class Subnet:
    """One bridge: its name, its gateway (the host), the IMDS port there (None: not yet) and whether
    the gateway answers DNS (the package path of ``cloud start --package-proxy``)."""

    bridge: str
    gateway: str
    imds_port: int | None = None
    dns: bool = False


@dataclass(frozen=True)
class Port:
    """One instance's link: the host-side veth, the MAC and IP the cloud gave it, its groups."""

    instance_id: str
    veth: str
    mac: str
    ip: str
    groups: tuple[SecurityGroup, ...] = ()


def table_name(tag: str) -> str:
    if not _TAG.match(tag):
        raise SecurityGroupError(f"bad cloud tag {tag!r}")
    return f"phoenixci_{tag}"


def _ip(text: str) -> str:
    return str(ipaddress.IPv4Address(text))


def _chain(port: Port, suffix: str) -> str:
    if not _ID.match(port.instance_id):
        raise SecurityGroupError(f"bad instance id {port.instance_id!r}")
    name = port.instance_id.replace("-", "_")
    return f"{name if name[0].isalpha() else 'i_' + name}_{suffix}"


def _check(port: Port) -> None:
    if not _IFNAME.match(port.veth) or not _MAC.match(port.mac.lower()):
        raise SecurityGroupError(f"bad link {port.veth!r} / {port.mac!r} of {port.instance_id}")
    _ip(port.ip)


def _vmap(key: str, entries: dict[str, str]) -> list[str]:
    if not entries:
        return []
    return [f"    {key} vmap {{ {', '.join(f'{k} : jump {v}' for k, v in sorted(entries.items()))} }}"]


def render_ports(tag: str, ports: Iterable[Port]) -> str:
    """The ``bridge`` table: what each port may send and receive."""
    ports = list(ports)
    for p in ports:
        _check(p)
    wild = f'"{tag}v*"'
    lines = [f"table bridge {table_name(tag)} {{",
             "  chain prerouting {", "    type filter hook prerouting priority -300; policy accept;",
             *_vmap("iifname", {f'"{p.veth}"': _chain(p, "sends") for p in ports}),
             f"    iifname {wild} drop {label('a port without rules')}", "  }",
             "  chain postrouting {", "    type filter hook postrouting priority -200; policy accept;",
             *_vmap("oifname", {f'"{p.veth}"': _chain(p, "receives") for p in ports}),
             f"    oifname {wild} drop {label('a port without rules')}", "  }"]
    for p in ports:
        mac, ip = p.mac.lower(), _ip(p.ip)
        lines += [f"  chain {_chain(p, 'sends')} {{",
                  f"    ether saddr != {mac} drop",
                  f"    arp saddr ether {mac} arp saddr ip {{ 0.0.0.0, {ip} }} accept",
                  f"    ip saddr {ip} accept",
                  "    ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept "
                  + label("DHCP"),
                  "    drop", "  }",
                  f"  chain {_chain(p, 'receives')} {{",
                  "    ether type arp accept",
                  f"    ip daddr {{ {ip}, 255.255.255.255 }} accept",
                  "    drop", "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def _peers(rule: Rule, members: Mapping[str, set[str]], field: str) -> str:
    addrs = list(rule.cidrs) + [ip for g in rule.source_groups for ip in sorted(members.get(g, set()))]
    return addr_match(addrs, field)


def _rules(port: Port, members: Mapping[str, set[str]], *, egress: bool, verdict: str) -> list[str]:
    """Rules with peers (instances): egress matches destinations, ingress sources."""
    out = []
    for g in port.groups:
        for rule in g.egress if egress else g.ingress:
            peers = _peers(rule, members, "daddr" if egress else "saddr")
            if peers:
                match = " ".join(x for x in (peers, port_match(rule)) if x)
                out.append(f"    {match} {verdict} {label(g.group_id)}")
    return out + ["    drop"]


def _internet(port: Port, services: Iterable[int], *, egress: bool) -> list[str]:
    """Internet-facing rules, for traffic between the instance and the host."""
    svc = sorted({int(p) for p in services})
    out = []
    for g in port.groups:
        for rule in g.egress if egress else g.ingress:
            if not rule.internet_facing:
                continue
            match = port_match(rule)
            out.append(f"    {match + ' ' if match else ''}accept {label(g.group_id + ' internet')}")
            if egress and svc and match and rule.matches_port("tcp", HTTPS):
                out.append(f"    tcp dport {{ {', '.join(map(str, svc))} }} accept "
                           f"{label(g.group_id + ' HTTPS endpoints on the gateway')}")
    return out + ["    drop"]


def render_groups(tag: str, subnets: Iterable[Subnet], ports: Iterable[Port], members: Mapping[str, set[str]],
                  services: Iterable[int] = (), acls: Mapping[str, nacls.SubnetNacl] | None = None) -> str:
    """The ``ip`` table: security groups of ``ports``, the IMDS redirect of ``subnets``, the network
    ACLs (``acls``: bridge → its subnet's ACL; stateless, before the conntrack rules)."""
    ports, services, acls = list(ports), list(services), dict(acls or {})
    heads = nacls.jumps(acls)
    ips = {_ip(p.ip): p for p in ports}
    bridges = f'"{tag}b*"'
    known = f"    ip saddr != {{ {', '.join(sorted(ips))} }} drop" if ips else "    drop"
    lines = [f"table ip {table_name(tag)} {{",
             "  chain imds {", "    type nat hook prerouting priority dstnat; policy accept;"]
    dns_in, dns_out = [], []  # Amazon DNS: neither groups nor ACLs filter it (answered only with --package-proxy)
    for s in subnets:
        if not _IFNAME.match(s.bridge):
            raise SecurityGroupError(f"bad bridge name {s.bridge!r}")
        if s.dns:
            dns_in.append(f'    iifname "{s.bridge}" ip daddr {_ip(s.gateway)} meta l4proto {{ tcp, udp }} '
                          f"th dport 53 accept {label('Amazon DNS')}")
            dns_out.append(f'    oifname "{s.bridge}" ip saddr {_ip(s.gateway)} meta l4proto {{ tcp, udp }} '
                           f"th sport 53 accept {label('Amazon DNS')}")
        if s.imds_port:
            lines.append(f'    iifname "{s.bridge}" ip daddr {IMDS_ADDRESS} tcp dport 80 '
                         f"dnat to {_ip(s.gateway)}:{int(s.imds_port)}")
    lines += ["  }",
              "  chain forward {", "    type filter hook forward priority filter; policy accept;",
              f'    iifname "{tag}*" oifname "{tag}*" jump between', "  }",  # bridged (br_netfilter) or routed
              "  chain input {", "    type filter hook input priority filter; policy accept;",
              f"    iifname {bridges} jump to_host", "  }",
              "  chain output {", "    type filter hook output priority filter; policy accept;",
              f"    oifname {bridges} jump from_host", "  }",
              "  chain between {", *heads["between"], "    ct state established,related accept",
              "    ct state invalid drop",
              known,
              *_vmap("ip saddr", {ip: _chain(p, "out") for ip, p in ips.items()}),
              *_vmap("ip daddr", {ip: _chain(p, "in") for ip, p in ips.items()}),
              "    drop", "  }",
              "  chain to_host {", *dns_in, *heads["to_host"], "    ct state established,related accept",
              "    ct state invalid drop",
              f"    ct status dnat ct original ip daddr {IMDS_ADDRESS} accept {label('the IMDS')}",
              f"    udp sport 68 udp dport 67 accept {label('DHCP')}",
              *_vmap("ip saddr", {ip: _chain(p, "to_host") for ip, p in ips.items()}),
              "    drop", "  }",
              "  chain from_host {", *dns_out, *heads["from_host"], "    ct state established,related accept",
              f"    udp sport 67 udp dport 68 accept {label('DHCP')}",
              *_vmap("ip daddr", {ip: _chain(p, "from_host") for ip, p in ips.items()}),
              "    drop", "  }"]
    for p in ips.values():
        for suffix, body in (("out", _rules(p, members, egress=True, verdict="return")),
                             ("in", _rules(p, members, egress=False, verdict="accept")),
                             ("to_host", _internet(p, services, egress=True)),
                             ("from_host", _internet(p, services, egress=False))):
            lines += [f"  chain {_chain(p, suffix)} {{", *body, "  }"]
    for bridge, acl in sorted(acls.items()):
        lines += nacls.render_chains(bridge, acl, services)
    return "\n".join(lines + ["}"]) + "\n"


def ports_of(snap: Snapshot, veth: Any, subnets: Mapping[str, Subnet],
             present: Iterable[str] = ()) -> tuple[list[Port], dict[str, set[str]]]:
    """The ports to guard — instances that run or should (and those whose container is still
    ``present``) in a subnet with a bridge — and each group's member IPs (instances not gone)."""
    members: dict[str, set[str]] = {}
    for v in snap.instances.values():
        if v.state not in GONE_STATES:
            for gid in v.group_ids:
                members.setdefault(gid, set()).add(v.private_ip)
    have = set(present)
    views = sorted(snap.instances.values(), key=lambda v: (v.state not in RUNNING_STATES, v.instance_id))
    ports: dict[str, Port] = {}  # by IP: one running instance wins over a leftover container
    for v in views:
        if (v.state in RUNNING_STATES or v.instance_id in have) and v.subnet_cidr in subnets \
                and v.private_ip not in ports:
            groups = tuple(from_moto(snap.groups[g]) for g in v.group_ids if g in snap.groups)
            ports[v.private_ip] = Port(v.instance_id, veth(v.instance_id), v.mac, v.private_ip, groups)
    return list(ports.values()), members


def render(tag: str, subnets: Iterable[Subnet], ports: Iterable[Port], members: Mapping[str, set[str]] | None = None,
           services: Iterable[int] = (), acls: Mapping[str, nacls.SubnetNacl] | None = None) -> str:
    """Both tables: the ports (bridge), then the groups, the IMDS redirect and the ACLs (ip)."""
    ports = list(ports)
    return render_ports(tag, ports) + render_groups(tag, subnets, ports, members or {}, services, acls)


#: everything in and out: for instances without a cloud (the runtime's own tests, bench/boot.py)
OPEN = SecurityGroup("open", [Rule("-1", cidrs=["0.0.0.0/0"])], [Rule("-1", cidrs=["0.0.0.0/0"])])


def apply(tag: str, script: str) -> None:
    """Replace this cloud's bridge and ip tables with ``script`` in one transaction: a bad script
    leaves the old rules in force, and there is never a moment without rules."""
    name = table_name(tag)
    reset = "".join(f"table {f} {name} {{}}\ndelete table {f} {name}\n" for f in FAMILIES)
    netlink.run(["nft", "-f", "-"], stdin=reset + script)


def remove(tag: str) -> None:
    """Remove the bridge and ip tables (the inet host firewall stays); no error if absent."""
    name = table_name(tag)
    netlink.run(["nft", "-f", "-"], stdin="".join(f"table {f} {name} {{}}\ndelete table {f} {name}\n"
                                                  for f in FAMILIES))


class CloudLinks:
    """What the rules need of a running cloud, read live from its own (mutable) maps: the tag,
    veth names, bridges by subnet CIDR, IMDS servers by gateway, and the gateway's service ports."""

    def __init__(self, runtime: Any, bridges: Mapping[str, Any], imds: Mapping[str, Any],
                 services: Iterable[int | None], *, dns: bool = False) -> None:
        self.tag, self.veth = str(runtime.tag), runtime.veth
        self._bridges, self._imds, self.dns = bridges, imds, dns
        self.services = frozenset(p for p in services if p)

    def subnets(self) -> dict[str, Subnet]:
        return {cidr: Subnet(b.name, b.gateway_ip, getattr(self._imds.get(b.gateway_ip), "port", None), self.dns)
                for cidr, b in list(self._bridges.items())}

    def render(self, snap: Snapshot, present: Iterable[str] = ()) -> str:
        """Both tables, or "" before the first bridge (the tables go with the last one)."""
        subnets = self.subnets()
        if not subnets:
            return ""
        ports, members = ports_of(snap, self.veth, subnets, present)
        acls = {subnets[cidr].bridge: acl for cidr, acl in nacls.nacl_rules(snap).items() if cidr in subnets}
        return render(self.tag, subnets.values(), ports, members, self.services, acls)


__all__ = ["FAMILIES", "OPEN", "CloudLinks", "Port", "Subnet", "apply", "ports_of", "remove", "render",
           "render_groups", "render_ports", "table_name"]
