"""Regions on the local cloud: zones kept to their region (patches/availability_zones.py), calls for
another region refused (patches/region_refusal.py), ``--region`` checked (regions.py).

The zone tests call the patched moto backends in this process, in an account no other test uses
(moto keeps its state per process; each test resets that account); the upstream probe makes the same
calls on plain moto in a subprocess. The refusal over HTTP, from a daemon, is in
tests/integration/localcloud/test_regions.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from test_cli import assert_one_line_error, run_cli

from phoenixci.errors import ConfigError
from phoenixci.localcloud import patches
from phoenixci.localcloud.patches.region_refusal import refusal
from phoenixci.localcloud.regions import check_region

pytestmark = pytest.mark.unit

ACCOUNT = "210987654321"  # only these tests use it
EU_ZONES = "eu-west-1a, eu-west-1b, eu-west-1c"
US_ZONES = "us-east-1a, us-east-1b, us-east-1c, us-east-1d, us-east-1e, us-east-1f"


def invalid_zone_message(value: str, zones: str) -> str:
    """EC2's CreateSubnet answer for a zone outside the region (quoted in the patch's docstring)."""
    return (f"Value ({value}) for parameter availabilityZone is invalid. Subnets can currently only be "
            f"created in the following availability zones: {zones}.")


@pytest.fixture
def backends() -> Iterator[Any]:
    from moto.cloudformation.models import cloudformation_backends
    from moto.ec2.models import ec2_backends

    patches.apply()
    yield lambda service, region: {"ec2": ec2_backends, "cfn": cloudformation_backends}[service][ACCOUNT][region]
    for backend_dict in (ec2_backends, cloudformation_backends):
        for region in ("eu-west-1", "us-east-1"):
            backend_dict[ACCOUNT][region].reset()


def vpc_id(ec2: Any) -> str:
    return str(ec2.create_vpc(cidr_block="10.9.0.0/16").id)


@pytest.mark.parametrize(("region", "zone", "zones"), [("eu-west-1", "us-east-1a", EU_ZONES),
                                                       ("us-east-1", "eu-west-1a", US_ZONES),
                                                       ("us-east-1", "us-east-1z", US_ZONES)])
def test_subnet_in_a_zone_outside_the_region_is_refused(backends: Any, region: str, zone: str,
                                                        zones: str) -> None:
    """AWS: InvalidParameterValue naming the zone and listing the region's zones."""
    ec2 = backends("ec2", region)
    with pytest.raises(Exception) as caught:
        ec2.create_subnet(vpc_id(ec2), "10.9.1.0/24", availability_zone=zone)
    assert caught.value.code == "InvalidParameterValue"  # type: ignore[attr-defined]
    assert caught.value.message == invalid_zone_message(zone, zones)  # type: ignore[attr-defined]


def test_subnet_zones_follow_the_region(backends: Any) -> None:
    """AWS: a zone of the region is taken as given; without one, the subnet still lies in the region."""
    ec2 = backends("ec2", "eu-west-1")
    vpc = vpc_id(ec2)
    assert ec2.create_subnet(vpc, "10.9.1.0/24", availability_zone="eu-west-1b").availability_zone == "eu-west-1b"
    assert ec2.create_subnet(vpc, "10.9.2.0/24").availability_zone == "eu-west-1a"


def stack_template(zone: Any) -> str:
    return json.dumps({"Resources": {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
        "Subnet": {"Type": "AWS::EC2::Subnet", "Properties": {
            "VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.9.1.0/24", "AvailabilityZone": zone}}},
        "Outputs": {"Zones": {"Value": {"Fn::Join": [",", {"Fn::GetAZs": ""}]}}}})


def test_get_azs_is_the_stacks_region(backends: Any) -> None:
    """AWS (Fn::GetAZs): an empty region means the stack's region; its zones, and no others."""
    stack = backends("cfn", "eu-west-1").create_stack(
        "zones", stack_template({"Fn::Select": ["0", {"Fn::GetAZs": {"Ref": "AWS::Region"}}]}), {})
    assert stack.status == "CREATE_COMPLETE"
    assert {o["OutputKey"]: o["OutputValue"] for o in stack.outputs or []} == {"Zones": EU_ZONES.replace(", ", ",")}
    assert [s.availability_zone for s in backends("ec2", "eu-west-1").describe_subnets(
        filters={"cidr-block": "10.9.1.0/24"})] == ["eu-west-1a"]


def test_template_pinning_another_regions_zone_fails_as_on_aws(backends: Any) -> None:
    """AWS: the subnet is CREATE_FAILED with EC2's message and the stack rolls back."""
    stack = backends("cfn", "us-east-1").create_stack("pinned", stack_template("eu-west-1a"), {})
    assert stack.status == "ROLLBACK_COMPLETE"
    failed = [e for e in stack.events if e.resource_status == "CREATE_FAILED"]
    assert [e.logical_resource_id for e in failed] == ["Subnet"]
    assert invalid_zone_message("eu-west-1a", US_ZONES) in failed[0].resource_status_reason


UPSTREAM_PROBE = """
import json
from moto.cloudformation.models import cloudformation_backends
from moto.ec2.models import ec2_backends
ec2 = ec2_backends["210987654321"]["eu-west-1"]
vpc = ec2.create_vpc(cidr_block="10.9.0.0/16").id
out = {"foreign_zone": ec2.create_subnet(vpc, "10.9.1.0/24", availability_zone="us-east-1a").availability_zone,
       "default_zone": ec2.create_subnet(vpc, "10.9.2.0/24").availability_zone}
template = {"Resources": {"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.8.0.0/16"}}},
            "Outputs": {"Zones": {"Value": {"Fn::Join": [",", {"Fn::GetAZs": ""}]}}}}
stack = cloudformation_backends["210987654321"]["eu-west-1"].create_stack("p", json.dumps(template), {})
out["get_azs"] = stack.outputs[0]["OutputValue"]
print(json.dumps(out))
"""


def test_upstream_availability_zones_still_needed() -> None:
    """Plain moto: another region's zone accepted, us-east-1a by default, GetAZs '' = us-east-1."""
    done = subprocess.run([sys.executable, "-c", UPSTREAM_PROBE], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    upstream = json.loads(done.stdout.strip().splitlines()[-1])
    fixed = (upstream["foreign_zone"] != "us-east-1a" and upstream["default_zone"].startswith("eu-west-1")
             and upstream["get_azs"].startswith("eu-west-1"))
    assert not fixed, f"upstream moto keeps zones to their region ({upstream}): remove patches/availability_zones.py"


@pytest.mark.parametrize(("service", "json_protocol", "status", "code"), [
    ("ec2", False, 401, "AuthFailure"),
    ("cloudformation", False, 403, "InvalidClientTokenId"),
    ("sts", False, 403, "InvalidClientTokenId"),
    ("ssm", True, 400, "UnrecognizedClientException"),
])
def test_another_region_gets_the_disabled_region_answer(service: str, json_protocol: bool, status: int,
                                                        code: str) -> None:
    error = refusal(service, "us-west-2", "eu-west-1", json_protocol)
    assert error is not None and (error.code, error.error_type) == (status, code)
    assert "serves eu-west-1 only" in error.message
    assert "phoenixci cloud start --region us-west-2" in error.message


@pytest.fixture
def serving_eu_west_1() -> Iterator[None]:
    from phoenixci.localcloud.patches import region_refusal

    patches.apply()
    before = region_refusal.serving()
    region_refusal.serve_only("eu-west-1")
    yield
    region_refusal.serve_only(before)


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


@pytest.mark.parametrize(("service", "body", "headers", "status", "fragment"), [
    ("ec2", "Action=DescribeInstances&Version=2016-11-15", FORM, 401, "<Code>AuthFailure</Code>"),
    ("cloudformation", "Action=DescribeStacks&Version=2010-05-15", FORM, 403, "<Code>InvalidClientTokenId</Code>"),
    ("ssm", '{"Name": "x"}', {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.GetParameter"},
     400, '"__type": "UnrecognizedClientException"'),
])
def test_moto_answers_a_request_for_another_region_with_the_refusal(
        serving_eu_west_1: None, service: str, body: str, headers: dict[str, str], status: int, fragment: str) -> None:
    """Through moto's own request handling (its WSGI app, no socket), signed for us-west-2."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.test import Client

    request = AWSRequest(method="POST", url="http://127.0.0.1/", data=body, headers=headers)
    SigV4Auth(Credentials("AKIAREGIONTEST", "secret"), service, "us-west-2").add_auth(request)
    answer = Client(DomainDispatcherApplication(create_backend_app)).post(
        "/", data=request.body, headers=dict(request.headers.items()))
    text = answer.get_data(as_text=True)
    assert answer.status_code == status and fragment in text, text
    assert "serves eu-west-1 only" in text and "phoenixci cloud start --region us-west-2" in text


@pytest.mark.parametrize(("service", "asked", "served"), [
    ("ec2", "eu-west-1", "eu-west-1"),    # its own region
    ("ec2", "us-west-2", None),           # the API alone answers for every region
    ("iam", "us-east-1", "eu-west-1"),    # global services
    ("sts", "us-east-1", "eu-west-1"),    # STS's global endpoint
    ("s3", "us-west-2", "eu-west-1"),     # bucket names are global
])
def test_calls_that_are_not_refused(service: str, asked: str, served: str | None) -> None:
    assert refusal(service, asked, served, json_protocol=False) is None


def test_region_check() -> None:
    assert check_region("eu-west-1") == "eu-west-1"
    with pytest.raises(ConfigError, match="unknown region 'eu-west-9': a local cloud serves one of .*eu-west-1"):
        check_region("eu-west-9")


def test_cloud_start_with_an_unknown_region_is_one_line(tmp_path: Any) -> None:
    proc = run_cli("cloud", "start", "--region", "mars-1", "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(proc, "unknown region 'mars-1'")
    assert not (tmp_path / "state").exists()
