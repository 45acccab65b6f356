"""The local cloud publishes its base image under Debian's public SSM parameter name, so
``images.image_for`` finds the AMI the same way on moto:// as on aws://.

As on AWS, reading the public parameter needs ``ssm:GetParameter`` in the caller's own policy:
the administrator has it, a role granted it reads the parameter, a role without it is denied
(the CI agent's role is such a role, and needs none: deploy takes ImageId from the
infrastructure stack's parameters). Roles are named ``imgp-…`` and removed after the module.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from phoenixci import images
from phoenixci.errors import ConfigError

pytestmark = pytest.mark.integration

EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


@pytest.fixture(scope="module")
def local(phoenix_backend: Any) -> Any:
    if phoenix_backend.scheme != "moto" or not getattr(phoenix_backend, "image_id", None):
        pytest.skip("the local cloud's own image parameter (moto:// with instances)")
    return phoenix_backend


@pytest.fixture(scope="module")
def roles(local: Any) -> Iterator[dict[str, Any]]:
    """Sessions of two instance roles: one granted ssm:GetParameter, one with nothing for SSM."""
    iam, suffix = local.client("iam"), uuid.uuid4().hex[:8]
    names = {"reader": f"imgp-reader-{suffix}", "other": f"imgp-other-{suffix}"}
    policies = {"reader": {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"},
                "other": {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}}
    sessions = {}
    try:
        for key, name in names.items():
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
            iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [policies[key]]}))
            sessions[key] = local.instance_role_session(arn, "imgp-test")
        yield sessions
    finally:
        for name in names.values():
            try:
                iam.delete_role_policy(RoleName=name, PolicyName="p")
                iam.delete_role(RoleName=name)
            except ClientError as e:
                if e.response["Error"]["Code"] != "NoSuchEntity":
                    raise


def test_image_for_finds_the_local_clouds_image(local: Any) -> None:
    assert images.image_for(local) == local.image_id


def test_the_parameter_looks_like_debians(local: Any) -> None:
    ssm = local.client("ssm")
    parameter = ssm.get_parameter(Name=images.DEBIAN_12_PARAMETER)["Parameter"]
    assert parameter["Value"] == local.image_id
    assert parameter["Type"] == "String"
    assert parameter["ARN"] == f"arn:aws:ssm:{local.region}::parameter{images.DEBIAN_12_PARAMETER}"
    listed = ssm.get_parameters_by_path(Path="/aws/service/debian", Recursive=True)["Parameters"]
    assert images.DEBIAN_12_PARAMETER in {p["Name"] for p in listed}


def test_names_under_aws_stay_reserved(local: Any) -> None:
    with pytest.raises(ClientError) as info:
        local.client("ssm").put_parameter(Name=images.DEBIAN_12_PARAMETER, Value="ami-12345678",
                                          Type="String", Overwrite=True)
    assert "reserved parameter name" in info.value.response["Error"]["Message"], info.value
    assert images.image_for(local) == local.image_id


def test_a_role_granted_get_parameter_reads_it(local: Any, roles: dict[str, Any]) -> None:
    ssm = local.client("ssm", roles["reader"])
    assert ssm.get_parameter(Name=images.DEBIAN_12_PARAMETER)["Parameter"]["Value"] == local.image_id


def test_a_role_without_ssm_permission_is_denied(local: Any, roles: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as info:
        local.client("ssm", roles["other"]).get_parameter(Name=images.DEBIAN_12_PARAMETER)
    # AWS answers 400 AccessDeniedException in JSON; moto 5.2.5 sends its XML denial (HTTP 403),
    # which botocore cannot parse for a JSON service: the code reads "403". Either way: refused.
    error = info.value.response
    assert error["Error"]["Code"] in {"AccessDeniedException", "AccessDenied", "403"}, error
    assert "not authorized to perform: ssm:GetParameter" in str(info.value)


def test_denied_lookup_is_one_clear_config_error(local: Any, roles: dict[str, Any]) -> None:
    class AsRole:  # the backend, acting with the role's credentials
        url, region, scheme = local.url, local.region, local.scheme

        def client(self, service: str) -> Any:
            return local.client(service, roles["other"])

    with pytest.raises(ConfigError, match="access denied") as info:
        images.image_for(AsRole())
    assert "\n" not in str(info.value)


def test_api_alone_publishes_nothing_and_falls_back_to_a_listed_image() -> None:
    """moto://?instances=off: no real image, nothing published; instances there are rows in a
    table, so image_for takes the first listed image (in a subprocess: one API per process)."""
    code = ("from phoenixci.backends import get_backend\n"
            "from phoenixci import images\n"
            "with get_backend('moto://?instances=off') as b:\n"
            "    ssm = b.client('ssm')\n"
            "    names = [p['Name'] for p in ssm.get_parameters_by_path(Path='/aws/service/debian', "
            "Recursive=True)['Parameters']]\n"
            "    assert names == [], names\n"
            "    print(images.image_for(b))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("ami-"), proc.stdout
