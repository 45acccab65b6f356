"""images.image_for (the Debian 12 AMI from its public SSM parameter) and the AWS cost gate.

image_for runs against real botocore clients whose answers are stubbed (botocore's Stubber:
nothing leaves the process), on backends that look like aws:// and like the emulators.
"""
from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from phoenixci import costs, images
from phoenixci.errors import ConfigError
from phoenixci.templates import load_template

pytestmark = pytest.mark.unit

NAME = images.DEBIAN_12_PARAMETER


class StubBackend:
    """Just what image_for uses of a backend: url, scheme, region and stubbed clients."""

    def __init__(self, scheme: str = "aws", region: str = "eu-west-1") -> None:
        self.scheme, self.region, self.url = scheme, region, f"{scheme}://?region={region}"
        session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name=region)
        self.clients = {name: session.client(name, endpoint_url="http://127.0.0.1:9") for name in ("ssm", "ec2")}
        self.stubs = {name: Stubber(c) for name, c in self.clients.items()}
        for stub in self.stubs.values():
            stub.activate()

    def client(self, service: str) -> Any:
        return self.clients[service]


def test_the_parameter_is_debians_bookworm_amd64_latest() -> None:
    assert NAME == "/aws/service/debian/release/bookworm/latest/amd64"


def test_image_for_returns_the_published_ami() -> None:
    backend = StubBackend()
    backend.stubs["ssm"].add_response("get_parameter", {"Parameter": {"Name": NAME, "Value": "ami-0abc", "Type": "String"}},
                                      {"Name": NAME})
    assert images.image_for(backend) == "ami-0abc"
    backend.stubs["ssm"].assert_no_pending_responses()


def test_missing_parameter_on_aws_is_one_clear_error() -> None:
    backend = StubBackend("aws", "ap-east-2")
    backend.stubs["ssm"].add_client_error("get_parameter", "ParameterNotFound", http_status_code=400)
    with pytest.raises(ConfigError) as info:
        images.image_for(backend)
    message = str(info.value)
    assert f"no Debian 12 image is published in ap-east-2 under {NAME}" in message
    assert "pass an image id / choose another region" in message
    assert "\n" not in message
    backend.stubs["ec2"].assert_no_pending_responses()  # never guesses an image on AWS


def test_access_denied_is_one_clear_error() -> None:
    backend = StubBackend()
    backend.stubs["ssm"].add_client_error("get_parameter", "AccessDeniedException", http_status_code=400,
                                          service_message="not authorized to perform: ssm:GetParameter")
    with pytest.raises(ConfigError, match="access denied .*ssm:GetParameter"):
        images.image_for(backend)


def test_a_403_the_client_could_not_parse_is_access_denied_too() -> None:
    backend = StubBackend()  # an XML denial for a JSON service: botocore's code is the status
    backend.stubs["ssm"].add_client_error("get_parameter", "403", http_status_code=403)
    with pytest.raises(ConfigError, match="access denied"):
        images.image_for(backend)


def test_a_value_that_is_no_ami_is_refused() -> None:
    backend = StubBackend()
    backend.stubs["ssm"].add_response("get_parameter", {"Parameter": {"Name": NAME, "Value": "oops"}}, {"Name": NAME})
    with pytest.raises(ConfigError, match="not an AMI id"):
        images.image_for(backend)


@pytest.mark.parametrize("scheme", ["moto", "localstack"])
def test_emulators_without_a_published_image_fall_back_to_a_listed_one(scheme: str) -> None:
    backend = StubBackend(scheme, "us-east-1")
    backend.stubs["ssm"].add_client_error("get_parameter", "ParameterNotFound", http_status_code=400)
    backend.stubs["ec2"].add_response("describe_images", {"Images": [{"ImageId": "ami-2"}, {"ImageId": "ami-1"}]},
                                      {"Owners": ["self", "amazon"]})
    assert images.image_for(backend) == "ami-1"


# -- costs ------------------------------------------------------------------------------------
def _default_type(template: str) -> str:
    return str(load_template(template).parameters["InstanceType"]["Default"])


def test_estimate_takes_types_and_counts_from_the_templates() -> None:
    found = costs.estimate("up", "eu-west-1")
    ci, app = _default_type("infrastructure"), _default_type("app-server")
    assert found.ci_types == (ci, ci)
    assert found.app_type == app
    assert found.elastic_ips == 2
    assert found.public_ipv4 == 3  # two Elastic IPs and the CI agent's launch address
    expected = 2 * costs.INSTANCE_USD_PER_HOUR[ci] + costs.INSTANCE_USD_PER_HOUR[app]
    assert expected < found.usd_per_hour < expected + 0.05


def test_estimate_text_states_what_when_and_how_approximate() -> None:
    text = costs.estimate("demo", "eu-west-1").text()
    for fragment in ("`phoenixci demo`", "eu-west-1", "t3.small", "~30 min", "us-east-1",
                     costs.PRICES_AS_OF, "approximate", "Elastic IPs", "S3"):
        assert fragment in text, fragment
    up = costs.estimate("up").text()
    assert "~15 min" in up and "until `phoenixci down`" in up and "/day" in up


def test_a_pytest_session_counts_its_own_infrastructure_stack_too() -> None:
    up, session = costs.estimate("up"), costs.estimate("pytest")
    assert session.usd_per_hour > up.usd_per_hour
    assert "5 × t3.small" in session.text()


def test_aws_without_acknowledgement_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        costs.require_acknowledgement("aws://?region=eu-west-1&profile=ci", False, command="up")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("aws:// creates billable resources: `phoenixci up` runs 3 × t3.small")
    assert "eu-west-1" in message and "$" in message and costs.PRICES_AS_OF in message
    assert message.endswith("acknowledge the cost with --accept-aws-cost or PHOENIXCI_ACCEPT_AWS_COST=1")


def test_aws_with_acknowledgement_returns_the_estimate() -> None:
    text = costs.require_acknowledgement("aws://?region=eu-west-1", True, command="demo")
    assert text == costs.estimate("demo", "eu-west-1").text()


@pytest.mark.parametrize("url", ["moto://", "moto://?instances=off", "localstack://127.0.0.1:4566"])
def test_other_backends_need_no_acknowledgement(url: str) -> None:
    assert costs.require_acknowledgement(url, False) is None


def test_an_unknown_command_has_no_estimate() -> None:
    with pytest.raises(ConfigError, match="no cost estimate for 'nope'"):
        costs.estimate("nope")
