"""Which private networks a local cloud may use on this machine: never one already routed here
(a VPC overlapping the machine's own networks would hijack them), and for each run a 10.X.0.0/16
that no other run uses."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess

from phoenixci.errors import PhoenixError


class AddressingError(PhoenixError):
    """No network can be used (overlap, or none free)."""


def routed_networks() -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """(network, device) for every route on this machine that is not local/broadcast/default."""
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True, check=True).stdout
    found = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("type") in ("local", "broadcast"):
            continue
        try:
            network = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if network.prefixlen:
            found.append((network, str(route.get("dev", "?"))))
    return found


def refuse_overlap(cidr: str) -> None:
    """Refuse a subnet that overlaps a network already routed on this machine."""
    wanted = ipaddress.ip_network(cidr)
    for existing, dev in routed_networks():
        if wanted.overlaps(existing):
            raise AddressingError(f"subnet {cidr} overlaps {existing} already in use on this machine "
                                  f"(dev {dev}): choose another VPC/subnet CIDR or stop the other local cloud")


def free_vpc_cidr(seed: str) -> str:
    """A 10.X.0.0/16 that overlaps nothing routed on this machine, X spread by ``seed``.

    Several runs on one machine (a demo while the tests run, two CI jobs) then get separate
    networks instead of refusing each other's subnets.
    """
    taken = [net for net, _ in routed_networks()]
    start = int(hashlib.sha1(seed.encode()).hexdigest(), 16) % 180
    for i in range(180):
        candidate = ipaddress.ip_network(f"10.{64 + (start + i) % 180}.0.0/16")
        if not any(candidate.overlaps(net) for net in taken):
            return str(candidate)
    raise AddressingError("no free 10.X.0.0/16 left on this machine for a new VPC")


__all__ = ["AddressingError", "free_vpc_cidr", "refuse_overlap", "routed_networks"]
