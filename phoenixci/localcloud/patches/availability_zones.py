"""Subnets and ``Fn::GetAZs`` keep to the zones of the region they are made in, as in AWS.

AWS behaviour restored:
- CreateSubnet (and ``AWS::EC2::Subnet``) with an Availability Zone that is not one of the
  region's fails with ``InvalidParameterValue`` "Value (eu-west-1a) for parameter availabilityZone
  is invalid. Subnets can currently only be created in the following availability zones:
  us-east-1a, us-east-1b, ….", listing the region's zones (the message EC2 answers, as quoted in
  github.com/widdix/aws-cf-templates/issues/36 and github.com/schrht/aws-test-init/issues/1).
  moto 5.2.5 accepts a zone of any region and lists the zones of every region.
- A subnet created without a zone gets one of the region's zones (moto: always us-east-1a,
  whatever the region — a eu-west-1 instance then reports us-east-1a in its metadata).
- ``Fn::GetAZs: ""`` (or ``!Ref AWS::Region``) is the stack's region's zones
  (CloudFormation User Guide, "Fn::GetAZs"); moto answers us-east-1a…d for an empty region and
  invents a "d" zone for every region.

moto 5.2.5 hooks: ``moto.ec2.models.EC2Backend.create_subnet`` (the API and CloudFormation both
call it), ``moto.cloudformation.parsing.clean_json`` (recursive through its module global).
"""
from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


def region_zones(region: str) -> list[Any]:
    """moto's zones of ``region`` (objects with .name and .zone_id); empty for an unknown one."""
    from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend

    return list(RegionsAndZonesBackend.zones.get(region, []))


def zone_names(region: str) -> list[str]:
    return [zone.name for zone in region_zones(region)]


def invalid_zone(value: str, region: str) -> Exception:
    from moto.ec2.exceptions import InvalidAvailabilityZoneError

    return InvalidAvailabilityZoneError(value, ", ".join(zone_names(region)))


def _checked_zone(region: str, zone: str | None, zone_id: str | None) -> tuple[str | None, str | None]:
    """The (zone, zone id) to create a subnet with in ``region``; raises EC2's error for another
    region's zone."""
    zones = region_zones(region)
    if zone:
        if zone not in {z.name for z in zones}:
            raise invalid_zone(zone, region)
        return zone, zone_id
    if zone_id:
        if zone_id not in {z.zone_id for z in zones}:
            raise invalid_zone(zone_id, region)
        return None, zone_id
    return (zones[0].name if zones else None), None


def check() -> None:
    from moto.cloudformation import parsing
    from moto.ec2.models import EC2Backend

    from phoenixci.localcloud.patches import require

    require(EC2Backend, "create_subnet")
    require(parsing, "clean_json")


def install() -> None:
    from moto.cloudformation import parsing
    from moto.ec2.models import EC2Backend

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original_create = EC2Backend.create_subnet
    if not is_patched(original_create):
        @functools.wraps(original_create)
        def create_subnet(self: Any, vpc_id: str, cidr_block: str, ipv6_cidr_block: str | None = None,
                          availability_zone: str | None = None, availability_zone_id: str | None = None,
                          **kwargs: Any) -> Any:
            zone, zone_id = _checked_zone(self.region_name, availability_zone, availability_zone_id)
            return original_create(self, vpc_id, cidr_block, ipv6_cidr_block, availability_zone=zone,
                                   availability_zone_id=zone_id, **kwargs)

        replace(EC2Backend, "create_subnet", mark(create_subnet))

    original_clean = parsing.clean_json
    if not is_patched(original_clean):
        @functools.wraps(original_clean)
        def clean_json(resource_json: Any, resources_map: Any) -> Any:
            if isinstance(resource_json, dict) and "Fn::GetAZs" in resource_json:
                region = original_clean(resource_json["Fn::GetAZs"], resources_map)
                return zone_names(str(region or resources_map._region_name))
            return original_clean(resource_json, resources_map)

        replace(parsing, "clean_json", mark(clean_json))
    log.debug("availability zones kept to their region")
