"""What the reconciler reads of moto's EC2 backend, as plain values (one pass's snapshot)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from phoenixci.localcloud.nacls import read_nacls


@dataclass(frozen=True)
class InstanceView:
    """What the reconciler needs of one moto instance."""

    instance_id: str
    state: str
    private_ip: str
    subnet_id: str
    subnet_cidr: str
    mac: str
    group_ids: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    instances: dict[str, InstanceView]
    #: public ip → instance id
    addresses: dict[str, str]
    #: group id → moto SecurityGroup object
    groups: dict[str, Any]
    #: subnet CIDR → (network ACL id, its entries) for the subnets of instances (nacls.read_nacls)
    nacls: dict[str, Any] = field(default_factory=dict)


def snapshot(ec2: Any) -> Snapshot:
    """Read moto's EC2 backend into plain values (retried by the caller on concurrent change)."""
    instances: dict[str, InstanceView] = {}
    auto: dict[str, str] = {}  # auto-assigned public address → instance (patches/auto_public_ip)
    for reservation in list(ec2.reservations.values()):
        for inst in list(reservation.instances):
            if not inst.subnet_id or not inst.private_ip:
                continue
            try:
                cidr = ec2.get_subnet(inst.subnet_id).cidr_block
            except Exception:  # noqa: BLE001 - the subnet went first (a deleted stack): only
                cidr = ""      # a terminated instance can be left like that; it is destroyed
            nic = inst.nics.get(0) if hasattr(inst, "nics") else None
            mac = getattr(nic, "mac_address", None) or _mac_for(inst.private_ip)
            public = getattr(nic, "public_ip", None)
            if public:
                auto[public] = inst.id
            instances[inst.id] = InstanceView(
                instance_id=inst.id, state=inst.state, private_ip=inst.private_ip,
                subnet_id=inst.subnet_id, subnet_cidr=cidr, mac=mac,
                group_ids=tuple(sorted(g.id for g in inst.security_groups)))
    addresses = {**auto, **{a.public_ip: a.instance.id for a in list(ec2.addresses)
                            if a.instance is not None and a.instance.id in instances}}
    groups = {gid: ec2.get_security_group_from_id(gid)
              for view in instances.values() for gid in view.group_ids}
    acls = read_nacls(ec2, {v.subnet_id: v.subnet_cidr for v in instances.values() if v.subnet_cidr})
    return Snapshot(instances, addresses, {k: v for k, v in groups.items() if v is not None}, acls)


def _mac_for(ip: str) -> str:
    """A stable locally administered MAC derived from the private address."""
    octets = ipaddress.ip_address(ip).packed
    return "02:" + ":".join(f"{b:02x}" for b in (0x42, *octets))
