"""The request context the local cloud builds for IAM conditions, and the calls a stack makes as its
caller (the pure parts of patches/_context_keys.py, _request_context.py, _cfn_calls.py, cfn_caller.py)."""
from __future__ import annotations

import datetime

from phoenixci.localcloud.patches._cfn_calls import Where, create_calls, delete_calls
from phoenixci.localcloud.patches._context_keys import request_keys, tag_specifications, tags_in
from phoenixci.localcloud.patches._request_context import CLOUDFORMATION, Request, global_keys
from phoenixci.localcloud.patches.cfn_caller import denial_reason

ACCOUNT, REGION = "123456789012", "us-east-1"


def request(service: str, action: str, params: dict[str, str] | None = None, **kw: object) -> Request:
    return Request(service=service, action=action, params=params or {}, region=REGION, account=ACCOUNT,
                   **kw)  # type: ignore[arg-type]


def test_tags_in_the_query_forms() -> None:
    assert tags_in({"Tag.1.Key": "a", "Tag.1.Value": "1", "Tag.2.Key": "b"}) == {"a": "1", "b": ""}
    assert tags_in({"Tags.member.1.Key": "k", "Tags.member.1.Value": "v"}) == {"k": "v"}
    params = {"TagSpecification.1.ResourceType": "instance", "TagSpecification.1.Tag.1.Key": "role",
              "TagSpecification.1.Tag.1.Value": "app", "TagSpecification.2.ResourceType": "volume",
              "TagSpecification.2.Tag.1.Key": "run", "TagSpecification.2.Tag.1.Value": "r1"}
    assert tag_specifications(params) == {"instance": {"role": "app"}, "volume": {"run": "r1"}}
    assert tags_in(params) == {}  # TagSpecification tags are not the request's Tag.N


def test_request_keys_per_service() -> None:
    tags = request_keys(request("ec2", "CreateTags", {"ResourceId.1": "i-1", "Tag.1.Key": "role",
                                                     "Tag.1.Value": "app"}))
    assert tags["aws:RequestTag/role"] == "app" and tags["aws:TagKeys"] == ["role"]
    assert tags["ec2:Region"] == REGION
    untag = request_keys(request("ec2", "DeleteTags", {"Tag.1.Key": "role"}))
    assert untag["aws:TagKeys"] == ["role"] and "aws:RequestTag/role" not in untag
    stack = request_keys(request("cloudformation", "CreateStack", {
        "Tags.member.1.Key": "phoenixci:run-id", "Tags.member.1.Value": "r1", "RoleARN": "arn:aws:iam::1:role/x",
        "ResourceTypes.member.1": "AWS::EC2::Instance"}))
    assert stack["aws:RequestTag/phoenixci:run-id"] == "r1"
    assert stack["cloudformation:RoleArn"] == "arn:aws:iam::1:role/x"
    assert stack["cloudformation:ResourceTypes"] == ["AWS::EC2::Instance"]
    assume = request_keys(request("sts", "AssumeRole", {"RoleSessionName": "s", "ExternalId": "e"}))
    assert assume == {"sts:RoleSessionName": "s", "sts:ExternalId": "e"}
    attach = request_keys(request("iam", "AttachRolePolicy", {"PolicyArn": "arn:aws:iam::aws:policy/X"}))
    assert attach == {"iam:PolicyARN": "arn:aws:iam::aws:policy/X"}
    put = request_keys(request("s3", "PutObject", {"prefix": "app/"}, headers={
        "x-amz-server-side-encryption": "AES256", "x-amz-tagging": "a=1&b=2", "authorization": "AWS4-HMAC-SHA256 …"}))
    assert put["s3:x-amz-server-side-encryption"] == "AES256" and put["s3:prefix"] == "app/"
    assert put["s3:RequestObjectTag/a"] == "1" and put["s3:RequestObjectTagKeys"] == ["a", "b"]
    assert put["s3:authType"] == "REST-HEADER"


def test_global_keys_direct_and_through_cloudformation() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    direct = global_keys(request("ec2", "RunInstances", source_ip="127.0.0.1", secure=False), now)
    assert direct["aws:SourceIp"] == "127.0.0.1" and direct["aws:SecureTransport"] == "false"
    assert direct["aws:CurrentTime"] == "2026-01-02T03:04:05Z" and direct["aws:EpochTime"] == str(int(now.timestamp()))
    assert direct["aws:ViaAWSService"] == "false" and "aws:CalledVia" not in direct
    via = global_keys(request("ec2", "RunInstances", source_ip="127.0.0.1", secure=True, via=CLOUDFORMATION), now)
    assert "aws:SourceIp" not in via  # the calling service's address, not the user's
    assert via["aws:ViaAWSService"] == "true" and via["aws:CalledVia"] == [CLOUDFORMATION]


def test_a_stack_instance_is_run_instances_with_its_tags_and_the_stacks() -> None:
    where = Where(REGION, ACCOUNT, {"phoenixci:run-id": "r1", "aws:cloudformation:stack-name": "app-x"})
    calls = create_calls("AWS::EC2::Instance", {
        "ImageId": "ami-1", "SubnetId": "subnet-1", "SecurityGroupIds": ["sg-1"], "KeyName": "k",
        "IamInstanceProfile": "app-profile", "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "1"},
        "Tags": [{"Key": "phoenixci:role", "Value": "app"}]}, "app-x-Server-ABC", where)
    assert [(c.service, c.action) for c in calls] == [("ec2", "RunInstances")]
    arns, params = calls[0].arns, calls[0].params
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
    assert {f"{ec2}:instance/*", f"arn:aws:ec2:{REGION}::image/ami-1", f"{ec2}:subnet/subnet-1",
            f"{ec2}:security-group/sg-1", f"{ec2}:key-pair/k", f"{ec2}:launch-template/lt-1"} <= set(arns)
    assert tag_specifications(params) == {"instance": {"phoenixci:run-id": "r1", "phoenixci:role": "app"}}
    assert params["IamInstanceProfile.Name"] == "app-profile" and params["LaunchTemplate.Version"] == "1"


def test_other_stack_resources_map_to_their_api_calls() -> None:
    where = Where(REGION, ACCOUNT)
    role = create_calls("AWS::IAM::Role", {"Path": "/ci/", "ManagedPolicyArns": ["arn:aws:iam::aws:policy/P"],
                                           "Tags": [{"Key": "t", "Value": "v"}]}, "stack-Role-1", where)
    assert [c.action for c in role] == ["CreateRole", "AttachRolePolicy"]
    assert role[0].arns == [f"arn:aws:iam::{ACCOUNT}:role/ci/stack-Role-1"]
    assert role[0].params == {"Tags.member.1.Key": "t", "Tags.member.1.Value": "v"}
    assert role[1].extra == {"iam:PolicyARN": "arn:aws:iam::aws:policy/P"}
    bucket = create_calls("AWS::S3::Bucket", {"VersioningConfiguration": {"Status": "Enabled"}}, "b-1", where)
    assert [c.action for c in bucket] == ["CreateBucket", "PutBucketVersioning"] and bucket[0].arns == ["arn:aws:s3:::b-1"]
    profile = create_calls("AWS::IAM::InstanceProfile", {"Roles": ["r"]}, "p", where)
    assert [c.action for c in profile] == ["CreateInstanceProfile", "AddRoleToInstanceProfile", "PassRole"]
    assert create_calls("AWS::CloudFormation::WaitConditionHandle", {}, "w", where) == []
    terminate = delete_calls("AWS::EC2::Instance", "i-1", where)
    assert [(c.action, c.arns) for c in terminate] == [("TerminateInstances", [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1"])]
    assert delete_calls("AWS::IAM::Role", "ci-role", where)[0].arns == [f"arn:aws:iam::{ACCOUNT}:role/ci-role"]


def test_denial_reasons_look_like_aws() -> None:
    ec2 = denial_reason("arn:aws:sts::1:assumed-role/agent/i-1", "ec2:RunInstances", "arn:aws:ec2:r:1:instance/*", False)
    assert ec2.startswith("API: ec2:RunInstances You are not authorized to perform this operation. User: ")
    assert "is not authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:r:1:instance/*" in ec2
    iam = denial_reason("arn:aws:iam::1:user/u", "iam:CreateRole", "arn:aws:iam::1:role/x", True)
    assert iam.endswith("with an explicit deny in an identity-based policy (Service: Iam, Status Code: 403)")
