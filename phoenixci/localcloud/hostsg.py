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

This module picks the ports to guard from a snapshot (``ports_of``, ``CloudLinks``) and puts the
tables in place (``apply``, ``remove``); their text is ``hostsg_render``'s (re-exported here).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from phoenixci.localcloud import nacls, netlink
from phoenixci.localcloud.hostsg_render import Port, Subnet, render, render_groups, render_ports, table_name
from phoenixci.localcloud.reconcile import GONE_STATES, RUNNING_STATES
from phoenixci.localcloud.secgroups import Rule, SecurityGroup, from_moto
from phoenixci.localcloud.snapshot import Snapshot

FAMILIES = ("bridge", "ip")


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
