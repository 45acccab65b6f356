"""The text of ``hostsg``'s two nftables tables, from ``Subnet``s and ``Port``s (pure: nothing runs here).

``render_ports``: the ``bridge phoenixci_<tag>`` table (what each port may send and receive);
``render_groups``: the ``ip phoenixci_<tag>`` table (security groups, the IMDS redirect, the
network ACLs' jumps and chains); ``render``: both. What each chain does: ``hostsg``'s docstring.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from phoenixci.localcloud import nacls, netlink
from phoenixci.localcloud.secgroups import (
    Rule,
    SecurityGroup,
    SecurityGroupError,
    addr_match,
    label,
    port_match,
)

IMDS_ADDRESS = netlink.IMDS_ADDRESS
HTTPS = 443
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
              # DHCP before the conntrack checks: the kernel tracks no broadcast a promiscuous
              # bridge (tcpdump on it) passes up, so "invalid" would drop every DHCPDISCOVER
              "  chain to_host {", *dns_in, *heads["to_host"], f"    udp sport 68 udp dport 67 accept {label('DHCP')}",
              "    ct state established,related accept",
              "    ct state invalid drop",
              f"    ct status dnat ct original ip daddr {IMDS_ADDRESS} accept {label('the IMDS')}",
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


def render(tag: str, subnets: Iterable[Subnet], ports: Iterable[Port], members: Mapping[str, set[str]] | None = None,
           services: Iterable[int] = (), acls: Mapping[str, nacls.SubnetNacl] | None = None) -> str:
    """Both tables: the ports (bridge), then the groups, the IMDS redirect and the ACLs (ip)."""
    ports = list(ports)
    return render_ports(tag, ports) + render_groups(tag, subnets, ports, members or {}, services, acls)
