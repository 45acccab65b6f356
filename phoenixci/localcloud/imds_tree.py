"""The instance metadata tree of one instance, laid out as EC2 serves it.

``metadata_root(info, credentials)`` returns the tree below a version prefix
(``/latest/``, ``/2009-04-04/`` …): ``meta-data/``, ``dynamic/`` and ``user-data``.
Directories list their entries one per line, subtrees with a trailing ``/``;
``public-keys/`` lists ``0=<name>`` as EC2 does. Credentials are produced lazily, only
when ``iam/security-credentials/<role>`` itself is read.
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from phoenixci.localcloud.instances import InstanceInfo

#: Metadata versions EC2 lists at ``GET /`` (cloud-init probes 2021-03-23, 2018-09-24, 2016-09-02, 2009-04-04).
VERSIONS = (
    "1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
    "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12", "2014-02-25",
    "2014-11-05", "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02", "2018-03-28",
    "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03", "2021-03-23",
    "2021-07-15", "2022-09-24", "latest",
)

Leaf: TypeAlias = "str | bytes | Callable[[], str]"


@dataclass
class Tree:
    """A metadata directory: entries by name, with optional listing labels (``0=name``)."""

    entries: dict[str, Node] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def listing(self) -> str:
        lines = []
        for name, node in self.entries.items():
            if name in self.labels:
                lines.append(self.labels[name])
            else:
                lines.append(f"{name}/" if isinstance(node, Tree) else name)
        return "\n".join(lines)

    def resolve(self, parts: list[str]) -> Node | None:
        node: Node = self
        for part in parts:
            if not isinstance(node, Tree) or part not in node.entries:
                return None
            node = node.entries[part]
        return node


Node: TypeAlias = "Tree | Leaf"


def iso_z(moment: datetime.datetime) -> str:
    """``2024-05-01T12:00:00Z`` (UTC, seconds), the timestamp format of the IMDS documents."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _doc(data: dict[str, object]) -> str:
    return json.dumps(data, indent=2)


def identity_document(info: InstanceInfo) -> str:
    return _doc({
        "accountId": info.account_id, "architecture": info.architecture,
        "availabilityZone": info.az, "billingProducts": None, "devpayProductCodes": None,
        "marketplaceProductCodes": None, "imageId": info.image_id, "instanceId": info.instance_id,
        "instanceType": info.instance_type, "kernelId": None, "pendingTime": iso_z(info.launch_time),
        "privateIp": info.private_ip, "ramdiskId": None, "region": info.region,
        "version": "2017-09-30",
    })


def iam_info(info: InstanceInfo, last_updated: datetime.datetime) -> str:
    return _doc({"Code": "Success", "LastUpdated": iso_z(last_updated),
                 "InstanceProfileArn": info.instance_profile_arn,
                 "InstanceProfileId": info.instance_profile_id or ""})


def _interface(info: InstanceInfo) -> Tree:
    t: dict[str, Node] = {"device-number": "0"}
    if info.interface_id:
        t["interface-id"] = info.interface_id
    if info.public_ip:
        t["ipv4-associations"] = Tree({info.public_ip: info.private_ip})
    t["local-hostname"] = info.local_hostname
    t["local-ipv4s"] = info.private_ip
    t["mac"] = info.mac
    t["owner-id"] = info.account_id
    if info.public_ip:
        t["public-hostname"] = info.public_hostname or ""
        t["public-ipv4s"] = info.public_ip
    if info.security_group_ids:
        t["security-group-ids"] = "\n".join(info.security_group_ids)
    if info.security_groups:
        t["security-groups"] = "\n".join(info.security_groups)
    if info.subnet_id:
        t["subnet-id"] = info.subnet_id
    if info.subnet_cidr:
        t["subnet-ipv4-cidr-block"] = info.subnet_cidr
    if info.vpc_id:
        t["vpc-id"] = info.vpc_id
    if info.vpc_cidr:
        t["vpc-ipv4-cidr-block"] = info.vpc_cidr
        t["vpc-ipv4-cidr-blocks"] = info.vpc_cidr
    return Tree(t)


def _public_keys(info: InstanceInfo) -> Tree:
    tree = Tree()
    for index, (name, key) in enumerate(info.public_keys):
        tree.entries[str(index)] = Tree({"openssh-key": key + "\n" if not key.endswith("\n") else key})
        tree.labels[str(index)] = f"{index}={name}"
    return tree


def meta_data(info: InstanceInfo, credentials: Callable[[], str] | None,
              now: datetime.datetime) -> Tree:
    """``meta-data/``. ``credentials`` renders the role's credential document when read."""
    md: dict[str, Node] = {
        "ami-id": info.image_id,
        "ami-launch-index": str(info.ami_launch_index),
        "ami-manifest-path": "(unknown)",
        "hostname": info.local_hostname,
    }
    if info.instance_profile_arn:
        iam: dict[str, Node] = {"info": lambda: iam_info(info, now)}
        if info.role_name and credentials is not None:
            iam["security-credentials"] = Tree({info.role_name: credentials})
        md["iam"] = Tree(iam)
    md.update({
        "instance-action": "none",
        "instance-id": info.instance_id,
        "instance-life-cycle": "on-demand",
        "instance-type": info.instance_type,
        "local-hostname": info.local_hostname,
        "local-ipv4": info.private_ip,
        "mac": info.mac,
        "network": Tree({"interfaces": Tree({"macs": Tree({info.mac: _interface(info)})})}),
        "placement": Tree({"availability-zone": info.az, "region": info.region}),
        "profile": "default-hvm",
    })
    if info.public_ip:
        md["public-hostname"] = info.public_hostname or ""
        md["public-ipv4"] = info.public_ip
    if info.public_keys:
        md["public-keys"] = _public_keys(info)
    md["reservation-id"] = info.reservation_id
    md["security-groups"] = "\n".join(info.security_groups)
    md["services"] = Tree({"domain": "amazonaws.com", "partition": "aws"})
    return Tree(md)


def metadata_root(info: InstanceInfo, credentials: Callable[[], str] | None,
                  now: datetime.datetime) -> Tree:
    """What lies below a version prefix: ``dynamic``, ``meta-data`` and (if any) ``user-data``."""
    root = Tree({
        "dynamic": Tree({"instance-identity": Tree({"document": lambda: identity_document(info)})}),
        "meta-data": meta_data(info, credentials, now),
    }, labels={"dynamic": "dynamic", "meta-data": "meta-data"})
    if info.user_data is not None:
        root.entries["user-data"] = info.user_data
    return root
