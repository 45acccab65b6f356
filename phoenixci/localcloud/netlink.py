"""ip / nft commands for the instance runtime (every argument as list argv; dnsmasq: dnsmasq.py).

Every nftables table of a cloud is named ``phoenixci_<tag>``, one per family: ``inet`` = the host
firewall (nothing routed out), ``ip`` and ``bridge`` = security groups, the metadata redirect and
anti-spoofing on the host side of each instance's link (``hostsg``). ``tables()`` lists the names
of every family, ``delete_table`` removes a name from every family.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
from pathlib import Path

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

IMDS_ADDRESS = "169.254.169.254"


class NetError(PhoenixError):
    """An ip/nft/dnsmasq command failed."""


def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(argv[:4])} … failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
    return proc.stdout


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, stdin="\n".join(lines) + "\n")


def link_names() -> list[str]:
    data = json.loads(run(["ip", "-j", "link", "show"]) or "[]")
    return [str(link["ifname"]) for link in data]


def link_exists(name: str) -> bool:
    """Whether this (the host's) network namespace has a link ``name`` (sysfs: no ip process)."""
    return os.path.lexists(os.path.join("/sys/class/net", name))


def netns_exists(name: str) -> bool:
    return os.path.lexists(os.path.join("/run/netns", name))


def netns_names() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


FAMILIES = ("inet", "ip", "bridge")
BR_NETFILTER = Path("/proc/sys/net/bridge")


def _br_netfilter() -> None:
    """Bridged IPv4 must pass the IPv4 hooks (security groups are enforced there): br_netfilter."""
    if not BR_NETFILTER.exists():
        run(["modprobe", "br_netfilter"], check=False)
    if not BR_NETFILTER.exists():
        raise NetError("br_netfilter is unavailable (no /proc/sys/net/bridge; modprobe br_netfilter failed): "
                       "security groups between instances could not be enforced")


def ensure_bridge(name: str, cidr: str) -> str:
    """Create bridge ``name`` with the subnet's first host address (the gateway); return it.
    Its bridged IPv4 goes through the IPv4 hooks (``nf_call_iptables``, this bridge only)."""
    net = ipaddress.ip_network(cidr)
    gateway = str(next(net.hosts()))
    if not link_exists(name):
        _br_netfilter()
        ip_batch([f"link add {name} type bridge nf_call_iptables 1",
                  f"addr add {gateway}/{net.prefixlen} dev {name}",
                  f"link set {name} up"])
        log.info("bridge %s up with gateway %s/%d", name, gateway, net.prefixlen)
    return gateway


def delete_link(name: str) -> None:
    run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    run(["ip", "netns", "del", name], check=False)


def remove_prefixed(prefix: str) -> list[str]:
    """Delete every netns and link whose name starts with ``prefix``; return what went."""
    removed = []
    for ns in netns_names():
        if ns.startswith(prefix):
            delete_netns(ns)
            removed.append(f"netns {ns}")
    for link in link_names():
        if link.startswith(prefix):
            delete_link(link)
            removed.append(f"link {link}")
    return removed


def host_firewall(table: str, tag: str) -> None:
    """Nothing is routed from or to this cloud's interfaces, except between them.

    ``table`` is (re)created atomically. Bridged traffic between instances of one subnet passes
    (with br_netfilter loaded it traverses this hook with both sides named ``<tag>…``). The drops
    name this cloud's own interfaces only: every base chain of a hook must accept a packet, so a
    rule on another cloud's interfaces (``phx*``) would drop that cloud's bridged traffic whenever
    two clouds run on one machine. Traffic between two clouds is dropped by both tables.
    """
    rules = f"""
table inet {table}
delete table inet {table}
table inet {table} {{
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname "{tag}*" oifname "{tag}*" accept
    iifname "{tag}*" counter drop
    oifname "{tag}*" counter drop
  }}
}}
"""
    run(["nft", "-f", "-"], stdin=rules)


def delete_table(table: str) -> None:
    """Remove ``table`` from every family (one transaction; no error where it is absent)."""
    run(["nft", "-f", "-"], stdin="".join(f"table {f} {table} {{}}\ndelete table {f} {table}\n"
                                          for f in FAMILIES), check=False)


def family_tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table in the host's namespace."""
    out = run(["nft", "list", "tables"], check=False)
    return [(line.split()[1], line.split()[2]) for line in out.splitlines()
            if line.startswith("table ") and len(line.split()) == 3]


def tables() -> list[str]:
    """Names of the host's nftables tables, every family (a name may appear once per family)."""
    return [name for _, name in family_tables()]


def plumb_instance(netns: str, host_veth: str, bridge: str, mac: str, ip: str, prefix: int,
                   gateway: str) -> None:
    """netns + veth (eth0 inside) into the bridge; the subnet route and the metadata address via
    the gateway, nothing else. No rules inside: the host redirects 169.254.169.254 (``hostsg``)."""
    run(["ip", "netns", "add", netns])
    ip_batch([f"link add {host_veth} type veth peer name eth0 netns {netns}",
              f"link set {host_veth} master {bridge} up"])
    ip_batch(["link set lo up",
              f"link set eth0 address {mac}",
              f"addr add {ip}/{prefix} dev eth0",
              "link set eth0 up",
              # no default route: only the subnet (connected) and the metadata address via the gateway
              f"route add {IMDS_ADDRESS}/32 via {gateway} dev eth0"], netns=netns)
