"""Elastic IPs behave as in AWS (VPC addresses).

AWS behaviour restored:

- AllocateAddress hands out an address no other allocated address has. Ours stay in
  127.0.0.0/8 (the local cloud forwards them on the host) but never in 127.0.0.0/24
  (the host's own loopback services) and never 127.255.255.255.
  moto 5.2.5: random ``127.x.x.x`` with no uniqueness check.
- AssociateAddress on an address that is already associated moves it (for VPC
  addresses reassociation is the default; only ``AllowReassociation=false`` refuses),
  and the previous instance / network interface no longer shows it as its public IP;
  an address already on the target interface is disassociated from it.
  moto 5.2.5: ``Resource.AlreadyAssociated`` unless AllowReassociation is true, and the
  old instance keeps ``PublicIpAddress``.
- Terminating an instance disassociates its Elastic IPs (they stay allocated).
  moto 5.2.5: the address stays associated with the terminated instance.
- An ``AWS::EC2::EIP`` resource carries its template Tags (moto 5.2.5 drops them, so a
  leak check by tag could not see the address).

moto 5.2.5 hooks:
``moto.ec2.models.elastic_ip_addresses.ElasticAddressBackend.allocate_address`` and
``.associate_address``, ``moto.ec2.responses.elastic_ip_addresses.ElasticIPAddresses.associate_address``
(tells the backend whether AllowReassociation was given),
``moto.ec2.models.instances.Instance.terminate``,
``moto.ec2.models.elastic_ip_addresses.ElasticAddress.create_from_cloudformation_json``.
"""
from __future__ import annotations

import contextvars
import functools
import ipaddress
import logging
import random
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

#: Addresses handed out: 127.0.1.0 .. 127.255.255.254.
FIRST = int(ipaddress.IPv4Address("127.0.1.0"))
LAST = int(ipaddress.IPv4Address("127.255.255.254"))

_lock = threading.Lock()
_rng = random.SystemRandom()
#: True while serving an AssociateAddress request that did not say AllowReassociation.
_REASSOCIATE_BY_DEFAULT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "phoenixci_eip_reassociate_by_default", default=False)


def _used_addresses() -> Iterator[str]:
    """Every address of the pool in use, in any account: Elastic IPs and the public addresses of
    network interfaces (auto-assigned ones: patches/auto_public_ip)."""
    from moto.ec2.models import ec2_backends

    for _account, _region, backend in list(ec2_backends.iter_backends()):
        yield from (eip.public_ip for eip in list(backend.addresses))  # type: ignore[attr-defined]
        yield from (eni.public_ip for eni in list(getattr(backend, "enis", {}).values()) if eni.public_ip)


def unique_address() -> str:
    """A random address in FIRST..LAST that no Elastic IP or interface (in any account) has."""
    used = set(_used_addresses())
    for _ in range(1000):
        candidate = str(ipaddress.IPv4Address(_rng.randint(FIRST, LAST)))
        if candidate not in used:
            return candidate
    raise RuntimeError("no free Elastic IP address left in 127.0.0.0/8")


def _allocate_address(original: Any) -> Any:
    @functools.wraps(original)
    def allocate_address(self: Any, domain: str, address: str | None = None,
                         tags: dict[str, str] | None = None) -> Any:
        if address:
            return original(self, domain, address=address, tags=tags)
        with _lock:  # pick and record atomically, so concurrent allocations differ
            return original(self, domain, address=unique_address(), tags=tags)

    return allocate_address


def _detach(backend: Any, eip: Any) -> None:
    if eip.instance is not None or eip.eni is not None:
        backend.disassociate_address(address=eip.public_ip)


def _associate_address(original: Any) -> Any:
    @functools.wraps(original)
    def associate_address(self: Any, instance: Any = None, eni: Any = None,
                          address: str | None = None, allocation_id: str | None = None,
                          reassociate: bool = False) -> Any:
        if address:
            eip = self.address_by_ip([address])[0]
        elif allocation_id:
            eip = self.address_by_allocation([allocation_id])[0]
        else:
            return original(self, instance=instance, eni=eni, address=address,
                            allocation_id=allocation_id, reassociate=reassociate)
        if eip.domain == "vpc" and _REASSOCIATE_BY_DEFAULT.get():
            reassociate = True
        target_eni = eni or (instance.nics.get(0) if instance is not None else None)
        same_target = (
            (instance is not None and eip.instance is not None and eip.instance.id == instance.id)
            or (eni is not None and eip.eni is not None and eip.eni.id == eni.id))
        elsewhere = (eip.instance is not None or eip.eni is not None) and not same_target
        if elsewhere and not reassociate:
            return original(self, instance=instance, eni=eni, address=address,
                            allocation_id=allocation_id, reassociate=False)  # AlreadyAssociated
        if elsewhere:
            _detach(self, eip)  # the old instance loses the address
        if target_eni is not None:
            for other in list(self.addresses):
                if other is not eip and other.eni is not None and other.eni.id == target_eni.id:
                    _detach(self, other)  # one Elastic IP per interface
        return original(self, instance=instance, eni=eni, address=eip.public_ip if address else None,
                        allocation_id=allocation_id if not address else None, reassociate=True)

    return associate_address


def _response_associate_address(original: Any) -> Any:
    @functools.wraps(original)
    def associate_address(self: Any) -> Any:
        if "AllowReassociation" in self._get_params():
            return original(self)
        token = _REASSOCIATE_BY_DEFAULT.set(True)
        try:
            return original(self)
        finally:
            _REASSOCIATE_BY_DEFAULT.reset(token)

    return associate_address


def _terminate(original: Any) -> Any:
    @functools.wraps(original)
    def terminate(self: Any) -> Any:
        backend = self.ec2_backend
        nic_ids = {nic.id for nic in self.nics.values()}
        for eip in list(backend.addresses):
            if ((eip.instance is not None and eip.instance.id == self.id)
                    or (eip.eni is not None and eip.eni.id in nic_ids)):
                _detach(backend, eip)
                log.debug("terminating %s disassociated %s", self.id, eip.public_ip)
        return original(self)

    return terminate


def _cfn_create(original: Any) -> Any:
    func = original.__func__

    @functools.wraps(func)
    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        eip = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        for tag in (cloudformation_json.get("Properties") or {}).get("Tags") or []:
            if isinstance(tag, dict) and "Key" in tag:
                eip.add_tag(str(tag["Key"]), str(tag.get("Value", "")))
        return eip

    return classmethod(create_from_cloudformation_json)


def check() -> None:
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_ip_addresses import ElasticAddress, ElasticAddressBackend
    from moto.ec2.models.instances import Instance
    from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses

    from phoenixci.localcloud.patches import require

    for name in ("allocate_address", "associate_address", "disassociate_address",
                 "address_by_ip", "address_by_allocation"):
        require(ElasticAddressBackend, name)
    require(ElasticIPAddresses, "associate_address")
    require(Instance, "terminate")
    require(ElasticAddress, "create_from_cloudformation_json")
    require(ElasticAddress, "add_tag")
    require(ec2_backends, "iter_backends")


def install() -> None:
    from moto.ec2.models.elastic_ip_addresses import ElasticAddress, ElasticAddressBackend
    from moto.ec2.models.instances import Instance
    from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses

    from phoenixci.localcloud.patches._caller import is_patched, mark

    if is_patched(ElasticAddressBackend.allocate_address):
        return
    ElasticAddressBackend.allocate_address = mark(_allocate_address(ElasticAddressBackend.allocate_address))
    ElasticAddressBackend.associate_address = mark(
        _associate_address(ElasticAddressBackend.associate_address))
    ElasticIPAddresses.associate_address = mark(
        _response_associate_address(ElasticIPAddresses.associate_address))
    Instance.terminate = mark(_terminate(Instance.terminate))
    ElasticAddress.create_from_cloudformation_json = _cfn_create(
        ElasticAddress.__dict__["create_from_cloudformation_json"])
    log.debug("Elastic IP semantics installed")
