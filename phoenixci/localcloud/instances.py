"""What the instance metadata service knows about an instance, and where it finds it.

``InstanceInfo`` is a plain snapshot of the facts EC2 exposes to an instance through its
metadata service. A *directory* maps the caller's source address (its private IP) to one:
``MotoInstanceDirectory`` reads moto's in-process EC2/IAM backends on every lookup (so
stop/terminate, EIP moves and profile changes show at once); ``DictInstanceDirectory``
serves fixed facts (tests, tools).
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "123456789012"


@dataclass(frozen=True)
class InstanceInfo:
    """The facts of one running instance, as its metadata service shows them."""

    instance_id: str
    account_id: str
    region: str
    az: str
    image_id: str
    instance_type: str
    private_ip: str
    public_ip: str | None
    mac: str
    local_hostname: str
    reservation_id: str
    launch_time: datetime.datetime
    http_tokens: str = "optional"          # 'required' | 'optional'
    http_endpoint: str = "enabled"         # 'enabled' | 'disabled'
    user_data: bytes | None = None
    public_keys: list[tuple[str, str]] = field(default_factory=list)  # (name, OpenSSH public key)
    instance_profile_arn: str | None = None
    role_arn: str | None = None
    security_groups: list[str] = field(default_factory=list)          # names
    subnet_id: str = ""
    vpc_id: str = ""
    # Optional extras AWS also shows (network interface tree, identity document, iam/info).
    instance_profile_id: str | None = None
    security_group_ids: list[str] = field(default_factory=list)
    interface_id: str = ""
    subnet_cidr: str = ""
    vpc_cidr: str = ""
    architecture: str = "x86_64"
    ami_launch_index: int = 0

    @property
    def role_name(self) -> str | None:
        return self.role_arn.rsplit("/", 1)[-1] if self.role_arn else None

    @property
    def public_hostname(self) -> str | None:
        if not self.public_ip:
            return None
        dashed = self.public_ip.replace(".", "-")
        if self.region == "us-east-1":
            return f"ec2-{dashed}.compute-1.amazonaws.com"
        return f"ec2-{dashed}.{self.region}.compute.amazonaws.com"


def local_hostname(private_ip: str, region: str) -> str:
    """EC2's private DNS name: ``ip-10-42-1-5.ec2.internal`` (us-east-1) or ``….REGION.compute.internal``."""
    dashed = private_ip.replace(".", "-")
    if region == "us-east-1":
        return f"ip-{dashed}.ec2.internal"
    return f"ip-{dashed}.{region}.compute.internal"


class InstanceDirectory(Protocol):
    def by_private_ip(self, ip: str) -> InstanceInfo | None:
        """The running instance whose private IP is ``ip``, or None."""


class DictInstanceDirectory:
    """A fixed mapping source address → InstanceInfo (thread-safe; entries can change)."""

    def __init__(self, instances: Mapping[str, InstanceInfo] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_ip: dict[str, InstanceInfo] = dict(instances or {})

    def add(self, ip: str, info: InstanceInfo) -> None:
        with self._lock:
            self._by_ip[ip] = info

    def remove(self, ip: str) -> None:
        with self._lock:
            self._by_ip.pop(ip, None)

    def by_private_ip(self, ip: str) -> InstanceInfo | None:
        with self._lock:
            return self._by_ip.get(ip)


def decode_user_data(value: Any) -> bytes | None:
    """moto keeps user data base64-encoded (a ``Base64EncodedString`` from the API, a str from
    CloudFormation's ``Fn::Base64``); the instance sees the raw bytes."""
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else str(value).encode()
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw  # not base64: already the raw bytes


def _openssh_key(material: Any) -> str | None:
    if material is None:
        return None
    text = material.decode() if isinstance(material, bytes) else str(material)
    text = text.strip()
    if text and not text.startswith(("ssh-", "ecdsa-", "sk-", "----")):
        # ImportKeyPair's PublicKeyMaterial may still be base64 of the key line
        with contextlib.suppress(binascii.Error, ValueError):
            text = base64.b64decode(text, validate=True).decode().strip()
    return text or None


class MotoInstanceDirectory:
    """Instances of one account and region, read from moto's in-process backends.

    ``overrides`` maps extra source addresses to instance ids (tests reach the IMDS from
    127.0.0.1, not from the instance's private IP).
    """

    def __init__(self, account_id: str = DEFAULT_ACCOUNT, region: str = "us-east-1",
                 overrides: Mapping[str, str] | None = None) -> None:
        self.account_id = account_id
        self.region = region
        self._lock = threading.Lock()
        self._overrides: dict[str, str] = dict(overrides or {})
        self._keys: dict[str, list[tuple[str, str]]] = {}  # instance id → keys seen at launch

    def alias(self, ip: str, instance_id: str) -> None:
        """Also answer requests from ``ip`` as instance ``instance_id``."""
        with self._lock:
            self._overrides[ip] = instance_id

    def unalias(self, ip: str) -> None:
        with self._lock:
            self._overrides.pop(ip, None)

    def _backend(self) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[self.account_id][self.region]

    def by_private_ip(self, ip: str) -> InstanceInfo | None:
        with self._lock:
            wanted_id = self._overrides.get(ip)
        backend = self._backend()
        for reservation in list(backend.reservations.values()):
            for instance in list(reservation.instances):
                if instance.state != "running":
                    continue
                if wanted_id is not None:
                    if instance.id != wanted_id:
                        continue
                elif ip not in {nic.private_ip_address for nic in list(instance.nics.values())}:
                    continue
                return self._info(backend, reservation.id, instance)
        return None

    # -- building an InstanceInfo from moto objects --------------------------------------------
    def _info(self, backend: Any, reservation_id: str, instance: Any) -> InstanceInfo:
        nic = instance.nics[0]
        groups = list(nic.group_set) or list(instance.security_groups)
        subnet_cidr = vpc_cidr = ""
        try:
            subnet = backend.get_subnet(instance.subnet_id)
            subnet_cidr = subnet.cidr_block
            vpc_cidr = backend.get_vpc(subnet.vpc_id).cidr_block
        except Exception:  # noqa: BLE001 - cidrs are extras; a vanished subnet/VPC leaves them empty
            log.debug("no subnet/vpc cidr for %s", instance.id)
        profile_arn, profile_id, role_arn = self._profile(backend, instance.id)
        launch = instance.launch_time
        if launch.tzinfo is None:
            launch = launch.replace(tzinfo=datetime.UTC)
        return InstanceInfo(
            instance_id=instance.id, account_id=self.account_id, region=self.region,
            az=instance.placement.zone or f"{self.region}a", image_id=instance.image_id,
            instance_type=instance.instance_type, private_ip=nic.private_ip_address,
            public_ip=nic.public_ip or None, mac=nic.mac_address,
            local_hostname=local_hostname(nic.private_ip_address, self.region),
            reservation_id=reservation_id, launch_time=launch,
            http_tokens=instance.metadata_options.http_tokens,
            http_endpoint=instance.metadata_options.http_endpoint,
            user_data=decode_user_data(instance.user_data),
            public_keys=self._public_keys(backend, instance),
            instance_profile_arn=profile_arn, role_arn=role_arn, instance_profile_id=profile_id,
            security_groups=[g.name for g in groups], security_group_ids=[g.id for g in groups],
            subnet_id=instance.subnet_id or "", vpc_id=instance.vpc_id or "",
            interface_id=nic.id, subnet_cidr=subnet_cidr, vpc_cidr=vpc_cidr,
            architecture=instance.architecture or "x86_64",
            ami_launch_index=int(instance.ami_launch_index or 0))

    def _public_keys(self, backend: Any, instance: Any) -> list[tuple[str, str]]:
        """The key the instance was launched with (kept, as in AWS, after the key pair is deleted)."""
        with self._lock:
            known = self._keys.get(instance.id)
        if known is not None or not instance.key_name:
            return list(known or [])
        pair = backend.key_pairs.get(instance.key_name)
        key = _openssh_key(pair.material_public) if pair is not None else None
        keys = [(instance.key_name, key)] if key else []
        with self._lock:
            self._keys[instance.id] = keys
        return list(keys)

    def _profile(self, backend: Any, instance_id: str) -> tuple[str | None, str | None, str | None]:
        """(profile ARN, profile id, role ARN) of the instance's current profile association."""
        from moto.iam.exceptions import NotFoundException
        from moto.iam.models import iam_backends
        from moto.utilities.utils import get_partition

        association = backend.iam_instance_profile_associations.get(instance_id)
        if association is None or association.state != "associated":
            return None, None, None
        iam = iam_backends[self.account_id][get_partition(self.region)]
        try:  # the profile as IAM has it now (deleted profile → no credentials, roles may change)
            profile = iam.get_instance_profile(association.iam_instance_profile.name)
        except NotFoundException:
            return None, None, None
        roles = list(profile.roles)
        return profile.arn, profile.id, (roles[0].arn if roles else None)
