"""What templates written for AWS rely on, in CloudFormation (patches/cfn_yaml_dates.py,
cfn_role_policies.py, cfn_vpc_attributes.py): an unquoted ``Version: 2012-10-17`` is a string, a
role's inline ``Policies`` are JSON policy documents, a VPC's DNS attributes are the template's.

Each scenario runs in a subprocess on moto with the patches (AWS's behaviour) and without them
(plain moto: when that starts to pass, upstream fixed it and the patch can go). The whole
template, enforcement included, runs in test_foreign_template.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.integration  # moto in subprocesses (~3 s each)

TEMPLATE = """
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.77.0.0/16, EnableDnsSupport: true, EnableDnsHostnames: true}
  QuietVpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.78.0.0/16, EnableDnsSupport: false}
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: 2012-10-17
        Statement: [{Effect: Allow, Principal: {Service: [ec2.amazonaws.com]}, Action: ['sts:AssumeRole']}]
      Policies:
        - PolicyName: Inline
          PolicyDocument:
            Version: 2012-10-17
            Statement: [{Effect: Allow, Action: 's3:GetObject', Resource: 'arn:aws:s3:::b/*'}]
  Attached:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: Attached
      Roles: [!Ref Role]
      PolicyDocument:
        Version: 2012-10-17
        Statement: [{Effect: Allow, Action: 'ec2:DescribeInstances', Resource: '*'}]
Outputs:
  Role: {Value: !Ref Role}
  Vpc: {Value: !Ref Vpc}
  QuietVpc: {Value: !Ref QuietVpc}
"""

SCENARIO = """
import json, logging, os, sys, warnings
logging.disable(logging.CRITICAL); warnings.simplefilter("ignore")
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
if sys.argv[1] == "patched":
    from phoenixci.localcloud import patches; patches.apply()
import boto3
from moto import mock_aws
from moto.iam.models import iam_backends
with mock_aws():
    cfn, ec2, iam = boto3.client("cloudformation"), boto3.client("ec2"), boto3.client("iam")
    try:
        cfn.create_stack(StackName="s", TemplateBody=sys.stdin.read(), Capabilities=["CAPABILITY_IAM"])
    except Exception as error:  # plain moto lets the resource's error escape
        print(json.dumps({"status": type(error).__name__ + ": " + str(error)[:200]}))
        sys.exit(0)
    stack = cfn.describe_stacks(StackName="s")["Stacks"][0]
    out = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    got = {"status": stack["StackStatus"], "vpc": {}, "policies": {}}
    for key in ("Vpc", "QuietVpc"):
        if key in out:
            got["vpc"][key] = [ec2.describe_vpc_attribute(VpcId=out[key], Attribute=a)[k]["Value"]
                               for a, k in (("enableDnsSupport", "EnableDnsSupport"),
                                            ("enableDnsHostnames", "EnableDnsHostnames"))]
    if "Role" in out:
        stored = iam_backends["123456789012"]["aws"].get_role(out["Role"]).policies
        for name in iam.list_role_policies(RoleName=out["Role"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=out["Role"], PolicyName=name)["PolicyDocument"]
            text = stored.get(name)
            try:
                parsed = json.loads(text) if isinstance(text, str) else None
            except ValueError:
                parsed = None
            got["policies"][name] = [isinstance(document, dict), parsed == document]
print(json.dumps(got))
"""


def _run(patched: bool, template: str = TEMPLATE) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", SCENARIO, "patched" if patched else "plain"], input=template,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def patched() -> dict[str, Any]:
    return _run(patched=True)


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    return _run(patched=False)


@pytest.fixture(scope="module")
def plain_quoted() -> dict[str, Any]:
    """Plain moto with the versions quoted, so that the stack gets made at all."""
    return _run(patched=False, template=TEMPLATE.replace("Version: 2012-10-17", "Version: '2012-10-17'"))


def test_unquoted_policy_versions_are_strings(patched: dict[str, Any]) -> None:
    assert patched["status"] == "CREATE_COMPLETE"


def test_inline_role_policies_are_json_documents(patched: dict[str, Any]) -> None:
    """Stored as JSON text moto's IAM evaluation parses, and returned as the document."""
    assert patched["policies"] == {"Inline": [True, True], "Attached": [True, True]}


def test_vpc_dns_attributes_follow_the_template(patched: dict[str, Any]) -> None:
    assert patched["vpc"] == {"Vpc": [True, True], "QuietVpc": [False, False]}


def test_upstream_moto_still_needs_cfn_yaml_dates(plain: dict[str, Any]) -> None:
    assert plain["status"] != "CREATE_COMPLETE", \
        "upstream moto now keeps unquoted YAML dates as strings: remove patches/cfn_yaml_dates.py"


def test_upstream_moto_still_needs_cfn_role_policies(plain_quoted: dict[str, Any]) -> None:
    assert plain_quoted["status"] == "CREATE_COMPLETE"
    assert plain_quoted["policies"]["Inline"] != [True, True], \
        "upstream moto now stores AWS::IAM::Role Policies as JSON: remove patches/cfn_role_policies.py"


def test_upstream_moto_still_needs_cfn_vpc_attributes(plain_quoted: dict[str, Any]) -> None:
    assert plain_quoted["vpc"]["Vpc"] != [True, True], \
        "upstream moto now applies AWS::EC2::VPC EnableDnsHostnames: remove patches/cfn_vpc_attributes.py"
