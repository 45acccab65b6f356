"""The region a local cloud serves: one of the regions whose zones moto knows, checked before start."""
from __future__ import annotations

from phoenixci.errors import ConfigError

DEFAULT_REGION = "us-east-1"


def known_regions() -> list[str]:
    from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend

    return sorted(RegionsAndZonesBackend.zones)


def check_region(region: str) -> str:
    """``region`` if a local cloud can serve it, else ConfigError in one line."""
    known = known_regions()
    if region not in known:
        raise ConfigError(f"unknown region {region!r}: a local cloud serves one of {', '.join(known)}")
    return region
