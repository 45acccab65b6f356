"""Auto-assigned public IPv4 addresses come from the local cloud's pool, never from AWS's ranges.

moto 5.2.5 gives an instance launched with ``AssociatePublicIpAddress`` or into a subnet with
``MapPublicIpOnLaunch`` (a default subnet's, or a template's: cfn_vpc_attributes) a random
``54.214.x.y`` — an address of the real internet, shown as ``PublicIpAddress``, that a script
connecting to its instance's public address would send traffic to. Restored, locally: the
address is unique and in 127.0.1.0–127.255.255.254 like Elastic IPs (eip_semantics), and the
cloud forwards it to the instance with the ports its groups open (reconcile.snapshot counts it
among the addresses), so the instance answers at its public address as on AWS. A stop releases
it and a start gets another (moto already does); an Elastic IP associated later replaces it.

Hook: ``moto.ec2.models.elastic_network_interfaces.random_public_ip`` (the name that module
calls, replaced).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def check() -> None:
    from moto.ec2.models import elastic_network_interfaces as enis

    from phoenixci.localcloud.patches import require

    require(enis, "random_public_ip")
    require(enis.NetworkInterface, "check_auto_public_ip")


def install() -> None:
    from moto.ec2.models import elastic_network_interfaces as enis

    from phoenixci.localcloud.patches.eip_semantics import unique_address

    enis.random_public_ip = unique_address  # the pool's free addresses (Elastic IPs' and interfaces')
    log.debug("auto-assigned public addresses from the local pool installed")


__all__ = ["check", "install"]
