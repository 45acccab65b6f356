"""The base image as an AMI of the local cloud, published where Debian publishes its own."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def register_image(ec2: Any, name: str, state_dir: Path, account_id: str, region: str) -> str:
    """Register the image in moto's EC2 ``ec2`` backend, note it in ``state_dir/image.json`` and
    publish it under Debian's SSM name; return the AMI id."""
    ami = ec2.register_image(name=name, description="phoenixci base image: Debian 12 with cloud-init")
    ami.architecture = "x86_64"
    ami.virtualization_type = "hvm"
    ami.root_device_name = "/dev/xvda"
    (state_dir / "image.json").write_text(json.dumps({"image_id": ami.id, "name": name}))
    publish_image_parameter(str(ami.id), account_id, region)
    return str(ami.id)


def publish_image_parameter(image_id: str, account_id: str, region: str) -> None:
    """The AMI under Debian's public SSM name, as in AWS regions (see images.py); seeded as moto
    seeds its own /aws/service parameters (PutParameter refuses the reserved /aws names); owned
    by no account, as AWS's (ARN arn:aws:ssm:REGION::parameter/aws/…)."""
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter, ssm_backends

    from phoenixci.images import DEBIAN_12_PARAMETER

    versions = ssm_backends[account_id][region]._parameters[DEBIAN_12_PARAMETER]
    versions.append(Parameter(account_id="", name=DEBIAN_12_PARAMETER, value=image_id,  # type: ignore[abstract]
                              parameter_type="String", description=None, allowed_pattern=None,
                              keyid=None, last_modified_date=utcnow(), version=len(versions) + 1,
                              data_type="text"))
