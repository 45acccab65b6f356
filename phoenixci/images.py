"""The AMI every phoenix server boots: Debian 12, found by its public SSM parameter.

Debian's cloud team publishes each release's AMI ids in every region under the public
Parameter Store tree ``/aws/service/debian``: ``<prefix>/release/<release>/<version>/<arch>``,
written once with the codename and once with the number as ``<release>`` (``bookworm`` / ``12``)
and once as ``latest`` and once with the image serial as ``<version>`` (debian-cloud-images,
``debian_cloud_images/cli/put_ssm.py``; listed on https://wiki.debian.org/Cloud/AmazonEC2Image).

``image_for(backend)`` reads that parameter with ``ssm:GetParameter``, on every backend alike:

- ``aws://``: Debian's own parameter in the chosen region.
- ``moto://`` (in-process, and the daemon of ``phoenixci cloud start``): the local cloud publishes
  its base image (Debian 12 bookworm) under the same name when it registers the AMI, as a
  parameter every principal of the account can read given ``ssm:GetParameter`` — as on AWS, where
  reading a public parameter needs that permission in the caller's own policy.
- Where nothing is published and instances are only rows in a table (``moto://?instances=off``,
  ``localstack://``), there is no real image to find: on those emulators, and only there,
  ``image_for`` falls back to the first image the API lists (what any AMI id does there). On
  ``aws://`` a missing parameter is always a ConfigError: we never guess an image on real AWS.

An explicit image id (``harness.infrastructure(image_id=…)``) always wins over the lookup.
"""
from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from phoenixci.errors import ConfigError, CredentialsError

log = logging.getLogger(__name__)

#: Debian 12 (bookworm), amd64, the newest image; the local cloud publishes the same name
DEBIAN_12_PARAMETER = "/aws/service/debian/release/bookworm/latest/amd64"

#: backends whose instances are rows in a table: any listed image will do when none is published
_ROWS_ONLY_SCHEMES = frozenset({"moto", "localstack"})


def image_for(backend: Any, parameter: str = DEBIAN_12_PARAMETER) -> str:
    """The AMI id published under ``parameter`` in the backend's region (ConfigError if none)."""
    region = backend.region
    try:
        reply = backend.client("ssm").get_parameter(Name=parameter)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "ParameterNotFound":
            fallback = _listed_image(backend)
            if fallback:
                log.info("%s publishes no %s: using the listed image %s (instances there are rows "
                         "in a table)", backend.url, parameter, fallback)
                return fallback
            raise ConfigError(f"no Debian 12 image is published in {region} under {parameter}: "
                              "pass an image id / choose another region") from e
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"} or status == 403:
            raise ConfigError(f"cannot read the Debian 12 image parameter {parameter} in {region}: access "
                              f"denied (allow ssm:GetParameter on it), or pass an image id") from e
        message = e.response.get("Error", {}).get("Message", str(e))
        raise ConfigError(f"cannot read the Debian 12 image parameter {parameter} in {region}: "
                          f"{code or 'error'}: {message}") from e
    except NoCredentialsError as e:
        raise CredentialsError(f"no AWS credentials found for backend {backend.url}: set AWS_PROFILE or "
                               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass ?profile=NAME") from e
    except BotoCoreError as e:
        raise ConfigError(f"cannot read the Debian 12 image parameter {parameter} in {region}: {e}") from e
    value = str(reply["Parameter"]["Value"])
    if not value.startswith("ami-"):
        raise ConfigError(f"the parameter {parameter} in {region} holds {value!r}, not an AMI id: "
                          "pass an image id")
    return value


def _listed_image(backend: Any) -> str | None:
    """On an emulator without a published image, the first image it lists (None on aws://)."""
    if getattr(backend, "scheme", "") not in _ROWS_ONLY_SCHEMES:
        return None
    try:
        listed = backend.client("ec2").describe_images(Owners=["self", "amazon"])["Images"]
    except (ClientError, BotoCoreError):
        return None
    return str(sorted(i["ImageId"] for i in listed)[0]) if listed else None
