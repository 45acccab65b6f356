"""infra/app-server.yaml: the app server a release gets, checked through the API."""
from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from phoenixci import stacks
from phoenixci.errors import StackError
from phoenixci.harness import Infrastructure
from phoenixci.templates import load_template

pytestmark = pytest.mark.integration

REVISION = "1234567890abcdef1234567890abcdef12345678"
SHA = "c" * 64


def params(infra: Infrastructure, **override: str) -> dict[str, str]:
    out, p = infra.stack.outputs, infra.stack.parameters
    values = {"Revision": REVISION, "RunId": infra.run_id, "ArtifactBucket": out["ArtifactBucket"],
              "ArtifactKey": f"app/{REVISION}/app-{REVISION}.tar.gz", "ArtifactSha256": SHA,
              "ImageId": p["ImageId"], "KeyName": p["KeyName"], "SubnetId": out["SubnetId"],
              "SecurityGroupId": out["AppSecurityGroupId"], "InstanceProfile": out["AppInstanceProfile"],
              "AwsEndpointUrl": "http://10.42.1.1:4566"}
    values.update(override)
    return values


@pytest.fixture(scope="module")
def app_stack(phoenix_backend: Any, scratch_infra: Infrastructure) -> Any:
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    with stacks.managed(cfn, s3, f"app-{REVISION}", load_template("app-server"), params(scratch_infra),
                        run_id=scratch_infra.run_id) as stack:
        yield stack
    assert stacks.describe(cfn, f"app-{REVISION}") is None


def _instance(phoenix_backend: Any, stack: Any) -> dict[str, Any]:
    ec2 = phoenix_backend.client("ec2")
    return dict(ec2.describe_instances(InstanceIds=[stack.output("InstanceId")])["Reservations"][0]["Instances"][0])


def test_instance_properties(phoenix_backend: Any, scratch_infra: Infrastructure, app_stack: Any) -> None:
    inst = _instance(phoenix_backend, app_stack)
    out = scratch_infra.stack.outputs
    assert inst["State"]["Name"] == "running"
    assert inst["SubnetId"] == out["SubnetId"]
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [out["AppSecurityGroupId"]]
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["IamInstanceProfile"]["Arn"].endswith("/" + out["AppInstanceProfile"])
    assert inst["KeyName"] == scratch_infra.key.name
    assert inst["PrivateIpAddress"] == app_stack.output("PrivateIp")
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["phoenixci:run-id"] == scratch_infra.run_id
    assert tags["phoenixci:revision"] == REVISION
    assert tags["Name"] == f"app-{REVISION}"
    assert app_stack.tags["phoenixci:run-id"] == scratch_infra.run_id


def test_user_data_fetches_verifies_then_starts(phoenix_backend: Any, app_stack: Any) -> None:
    ec2 = phoenix_backend.client("ec2")
    attr = ec2.describe_instance_attribute(InstanceId=app_stack.output("InstanceId"), Attribute="userData")
    text = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    files = {f["path"]: f["content"] for f in config["write_files"]}
    bootstrap = files["/usr/local/lib/phoenixapp/bootstrap.sh"]
    assert f"REVISION='{REVISION}'" in bootstrap and f"SHA256='{SHA}'" in bootstrap
    assert "ENDPOINT='http://10.42.1.1:4566'" in bootstrap
    fetch = bootstrap.index("fetch_artifact.py")
    assert fetch < bootstrap.index("systemctl enable --now --no-reload phoenixapp.service"), "verify before start"
    assert "/usr/local/lib/phoenixapp/fetch_artifact.py" in files
    assert config["runcmd"] == [["/usr/local/lib/phoenixapp/bootstrap.sh"]]


def test_launch_template_goes_with_the_stack(phoenix_backend: Any, scratch_infra: Infrastructure) -> None:
    cfn, s3, ec2 = (phoenix_backend.client(s) for s in ("cloudformation", "s3", "ec2"))
    name = "app-" + "9" * 40
    stack = stacks.create(cfn, s3, name, load_template("app-server"),
                          params(scratch_infra, Revision="9" * 40), run_id=scratch_infra.run_id)
    template_id = stack.physical_id("AppLaunchTemplate")
    assert ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"]
    stacks.delete(cfn, s3, name)
    remaining = [t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]]
    assert template_id not in remaining


def test_failure_names_the_stack_the_resource_and_the_reason(phoenix_backend: Any,
                                                             scratch_infra: Infrastructure) -> None:
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    name = "app-" + "e" * 40
    bad = params(scratch_infra, Revision="e" * 40, SubnetId="subnet-0000000000000dead")
    with pytest.raises(StackError) as info:
        stacks.create(cfn, s3, name, load_template("app-server"), bad, run_id=scratch_infra.run_id)
    err = info.value
    assert err.stack == name and err.resource == "AppServer"
    assert name in str(err) and "AppServer" in str(err) and "subnet-0000000000000dead" in str(err)
    assert any(e.get("ResourceStatus") == "CREATE_FAILED" for e in err.events)
    assert stacks.describe(cfn, name) is None, "a failed stack is removed, so the next run can retry"
