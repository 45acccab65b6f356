"""AWS's documented outcomes of IAM Conditions, as a table (phoenixci.localcloud.patches._conditions
and _policy_eval, which the local cloud uses for identity and bucket policies).

Each row: the AWS documentation page it comes from, the policy (the page's example), the request
(action, resource, context keys) and the documented outcome (allowed or not). Deny examples that
"do not allow any actions" are paired with an Allow of everything, as the pages ask.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from phoenixci.localcloud.patches._policy_eval import evaluate

OPERATORS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html"
MULTIPLE = ("https://docs.aws.amazon.com/IAM/latest/UserGuide/"
            "reference_policies_condition-logic-multiple-context-keys-or-values.html")
SINGLE_VS_MULTI = ("https://docs.aws.amazon.com/IAM/latest/UserGuide/"
                   "reference_policies_condition-single-vs-multi-valued-context-keys.html")
MULTI_EXAMPLES = ("https://docs.aws.amazon.com/IAM/latest/UserGuide/"
                  "reference_policies_condition_examples-multi-valued-context-keys.html")
EC2_EXAMPLES = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html"
EC2_TAG_ON_CREATE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html"
EC2_OWNER = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_examples_ec2_tag-owner.html"
PASSROLE = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_examples_iam-passrole-service.html"
DATES = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_examples_aws-dates.html"
DENY_IP = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_examples_aws_deny-ip.html"

ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}
INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
NEW_INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/*"
IMAGE = "arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0"
BUCKET = "arn:aws:s3:::example_bucket"


def allow(action: Any, resource: Any, condition: dict[str, Any]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, "Condition": condition}


def deny(action: Any, resource: Any, condition: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"Effect": "Deny", "Action": action, "Resource": resource, "Condition": condition}, ALLOW_ALL]


class Row(NamedTuple):
    source: str
    statements: Any  # one statement or a list
    action: str
    resource: str
    context: dict[str, Any]
    allowed: bool


PRINCIPAL_TAG = allow("iam:*AccessKey*", "arn:aws:iam::123456789012:user/*",
                      {"StringEquals": {"aws:PrincipalTag/job-category": "iamuser-admin"}})
HOME_PREFIX = allow("s3:ListBucket", "arn:aws:s3:::BUCKET-NAME",
                    {"StringLike": {"s3:prefix": ["", "home/", "home/${aws:username}/"]}})
MAX_KEYS = allow("s3:ListBucket", BUCKET, {"NumericLessThanEquals": {"s3:max-keys": "10"}})
FRESH_TOKENS = allow("iam:*AccessKey*", "arn:aws:iam::123456789012:user/*",
                     {"DateGreaterThan": {"aws:TokenIssueTime": "2020-01-01T00:00:01Z"}})
TLS_ONLY = deny("s3:*", ["arn:aws:s3:::DOC-EXAMPLE-BUCKET", "arn:aws:s3:::DOC-EXAMPLE-BUCKET/*"],
                {"Bool": {"aws:SecureTransport": "false"}})
SOURCE_IP = allow("iam:*AccessKey*", "arn:aws:iam::123456789012:user/*",
                  {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}})
MIXED_IP = allow("someservice:*", "*", {"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:DB8:1234:5678::/64"]}})
SNS_TOPIC = allow("SQS:SendMessage", "arn:aws:sqs:REGION:123456789012:QUEUE-ID",
                  {"ArnEquals": {"aws:SourceArn": "arn:aws:sns:REGION:123456789012:TOPIC-ID"}})
CROSS_COLON = "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt"
TYPES_IF_EXISTS = allow("ec2:RunInstances", "*", {"StringLikeIfExists": {"ec2:InstanceType": ["t1.*", "t2.*", "m3.*"]}})
TYPES_NOT_WORKING = allow("ec2:RunInstances", "*", {"StringLike": {"ec2:InstanceType": ["t1.*", "t2.*", "m3.*"]}})
LONG_TERM_KEYS = allow("ec2:*", "*", {"Null": {"aws:TokenIssueTime": "true"}})
DEPARTMENT = allow("s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", {
    "StringEquals": {"aws:PrincipalTag/department": ["finance", "hr", "legal"],
                     "aws:PrincipalTag/role": ["audit", "security"]},
    "ArnLike": {"aws:PrincipalArn": ["arn:aws:iam::222222222222:user/Ana", "arn:aws:iam::222222222222:user/Mary"]}})
NOT_ROLE = allow("s3:ListBucket", "*", {"StringNotEquals": {"aws:PrincipalTag/role": ["audit", "security"]}})
ANY_TAG_KEY = allow("ec2:CreateTags", "*", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["DataClass", "Owner"]}})
ONLY_TAG_KEYS = allow("ec2:CreateTags", "*", {"ForAllValues:StringEquals": {"aws:TagKeys": ["DataClass", "Owner"]}})
KEY1_ONLY = deny(["iam:Tag*", "iam:UnTag*"], "*", {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}})
RESTRICTED_PREFIXES = deny(["iam:Tag*", "iam:UnTag*"], "*", {
    "Null": {"aws:TagKeys": "false"}, "ForAllValues:StringLike": {"aws:TagKeys": ["key1*", "key2*", "key3*"]}})
SNAPSHOT_TAGS = deny("ec2:CreateSnapshot", "*", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment", "webserver"]}})
LAUNCH_WITH_TAGS = [
    {"Effect": "Allow", "Action": "ec2:RunInstances",
     "Resource": ["arn:aws:ec2:us-east-1::image/*", "arn:aws:ec2:us-east-1:123456789012:subnet/*"]},
    allow("ec2:RunInstances", ["arn:aws:ec2:us-east-1:123456789012:volume/*", NEW_INSTANCE],
          {"StringEquals": {"aws:RequestTag/environment": "production", "aws:RequestTag/purpose": "webserver"}}),
    allow("ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:*/*",
          {"StringEquals": {"ec2:CreateAction": "RunInstances"}})]
AT_LEAST_ONE_TAG = allow("ec2:RunInstances", NEW_INSTANCE,
                         {"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment", "webserver"]}})
ONLY_PURPOSE_TEST = allow("ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:*/*", {
    "StringEquals": {"aws:RequestTag/purpose": "test", "ec2:CreateAction": "RunInstances"},
    "ForAllValues:StringEquals": {"aws:TagKeys": "purpose"}})
TAG_PRODUCTION = allow("ec2:CreateTags", "arn:aws:ec2:region:account:instance/*", {
    "StringEquals": {"aws:RequestTag/environment": "production"},
    "ForAllValues:StringEquals": {"aws:TagKeys": ["environment"]}})
TAG_OWNED = allow("ec2:CreateTags", "arn:aws:ec2:region:account:*/*", {
    "StringEquals": {"aws:RequestTag/environment": ["test", "prod"], "ec2:ResourceTag/owner": "${aws:username}"}})
DELETE_TAGS = allow("ec2:DeleteTags", "arn:aws:ec2:us-east-1:123456789012:volume/*",
                    {"ForAllValues:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}})
ROLE_BY_DEPARTMENT = allow(["ec2:AssociateIamInstanceProfile", "ec2:ReplaceIamInstanceProfileAssociation"],
                           "arn:aws:ec2:region:account:instance/*",
                           {"StringEquals": {"ec2:ResourceTag/department": "test"}})
OWNER = allow(["ec2:StartInstances", "ec2:StopInstances"], "arn:aws:ec2:*:*:instance/*",
              {"StringEquals": {"ec2:ResourceTag/Owner": "${aws:username}"}})
TO_CLOUDWATCH = allow("iam:PassRole", "*", {"StringEquals": {"iam:PassedToService": "cloudwatch.amazonaws.com"}})
SECOND_HALF_2017 = allow("service-prefix:action-name", "*", {
    "DateGreaterThan": {"aws:CurrentTime": "2017-07-01T00:00:00Z"},
    "DateLessThan": {"aws:CurrentTime": "2017-12-31T23:59:59Z"}})
COMPANY_IPS = deny("*", "*", {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "203.0.113.0/24"]}})
ROLE = "arn:aws:iam::123456789012:role/service-role"
VOLUME = "arn:aws:ec2:us-east-1:123456789012:volume/vol-0123456789abcdef0"

ROWS = [
    # "If the key ... is not present in the request context, the values do not match"
    Row(OPERATORS, PRINCIPAL_TAG, "iam:CreateAccessKey", "arn:aws:iam::123456789012:user/bob",
        {"aws:PrincipalTag/job-category": "iamuser-admin"}, True),
    Row(OPERATORS, PRINCIPAL_TAG, "iam:CreateAccessKey", "arn:aws:iam::123456789012:user/bob", {}, False),
    Row(OPERATORS, PRINCIPAL_TAG, "iam:CreateAccessKey", "arn:aws:iam::123456789012:user/bob",
        {"aws:PrincipalTag/job-category": "IAMUSER-ADMIN"}, False),  # StringEquals is case sensitive
    Row(OPERATORS, HOME_PREFIX, "s3:ListBucket", "arn:aws:s3:::BUCKET-NAME",
        {"aws:username": "bob", "s3:prefix": "home/bob/"}, True),
    Row(OPERATORS, HOME_PREFIX, "s3:ListBucket", "arn:aws:s3:::BUCKET-NAME",
        {"aws:username": "bob", "s3:prefix": ""}, True),
    Row(OPERATORS, HOME_PREFIX, "s3:ListBucket", "arn:aws:s3:::BUCKET-NAME",
        {"aws:username": "bob", "s3:prefix": "home/alice/"}, False),
    Row(OPERATORS, MAX_KEYS, "s3:ListBucket", BUCKET, {"s3:max-keys": "10"}, True),
    Row(OPERATORS, MAX_KEYS, "s3:ListBucket", BUCKET, {"s3:max-keys": "11"}, False),
    Row(OPERATORS, FRESH_TOKENS, "iam:ListAccessKeys", "arn:aws:iam::123456789012:user/bob",
        {"aws:TokenIssueTime": "2020-03-01T10:00:00Z"}, True),
    # "if an IAM user attempts to view or edit an access key, the request is denied"
    Row(OPERATORS, FRESH_TOKENS, "iam:ListAccessKeys", "arn:aws:iam::123456789012:user/bob", {}, False),
    Row(OPERATORS, TLS_ONLY, "s3:GetObject", "arn:aws:s3:::DOC-EXAMPLE-BUCKET/x", {"aws:SecureTransport": "false"}, False),
    Row(OPERATORS, TLS_ONLY, "s3:GetObject", "arn:aws:s3:::DOC-EXAMPLE-BUCKET/x", {"aws:SecureTransport": "true"}, True),
    Row(OPERATORS, SOURCE_IP, "iam:ListAccessKeys", "arn:aws:iam::123456789012:user/bob",
        {"aws:SourceIp": "203.0.113.200"}, True),
    Row(OPERATORS, SOURCE_IP, "iam:ListAccessKeys", "arn:aws:iam::123456789012:user/bob",
        {"aws:SourceIp": "198.51.100.7"}, False),
    # "except when the requester uses a VPC endpoint ... the condition returns false"
    Row(OPERATORS, SOURCE_IP, "iam:ListAccessKeys", "arn:aws:iam::123456789012:user/bob", {}, False),
    Row(OPERATORS, MIXED_IP, "someservice:Get", "*", {"aws:SourceIp": "2001:db8:1234:5678::1"}, True),
    Row(OPERATORS, MIXED_IP, "someservice:Get", "*", {"aws:SourceIp": "2001:db8:1234:5679::1"}, False),
    Row(OPERATORS, SNS_TOPIC, "sqs:SendMessage", "arn:aws:sqs:REGION:123456789012:QUEUE-ID",
        {"aws:SourceArn": "arn:aws:sns:REGION:123456789012:TOPIC-ID"}, True),
    # "If an IAM user attempts to perform this operation directly, the condition returns false"
    Row(OPERATORS, SNS_TOPIC, "sqs:SendMessage", "arn:aws:sqs:REGION:123456789012:QUEUE-ID", {}, False),
    # "With a StringLike condition, the match succeeds ... With an ArnLike condition ... fails"
    Row(OPERATORS, allow("x:Y", "*", {"StringLike": {"aws:SourceArn": "arn:aws:someservice:*:111122223333:finance/*"}}),
        "x:Y", "*", {"aws:SourceArn": CROSS_COLON}, True),
    Row(OPERATORS, allow("x:Y", "*", {"ArnLike": {"aws:SourceArn": "arn:aws:someservice:*:111122223333:finance/*"}}),
        "x:Y", "*", {"aws:SourceArn": CROSS_COLON}, False),
    # ...IfExists: the image has no ec2:InstanceType; without IfExists "THISPOLICYDOESNOTWORK"
    Row(OPERATORS, TYPES_IF_EXISTS, "ec2:RunInstances", NEW_INSTANCE, {"ec2:InstanceType": "t2.micro"}, True),
    Row(OPERATORS, TYPES_IF_EXISTS, "ec2:RunInstances", IMAGE, {}, True),
    Row(OPERATORS, TYPES_IF_EXISTS, "ec2:RunInstances", NEW_INSTANCE, {"ec2:InstanceType": "m5.large"}, False),
    Row(OPERATORS, TYPES_NOT_WORKING, "ec2:RunInstances", IMAGE, {}, False),
    Row(OPERATORS, LONG_TERM_KEYS, "ec2:DescribeInstances", "*", {}, True),
    Row(OPERATORS, LONG_TERM_KEYS, "ec2:DescribeInstances", "*", {"aws:TokenIssueTime": "2024-01-01T00:00:00Z"}, False),
    # several operators AND, several keys AND, several values OR
    Row(MULTIPLE, DEPARTMENT, "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket",
        {"aws:PrincipalTag/department": "hr", "aws:PrincipalTag/role": "audit",
         "aws:PrincipalArn": "arn:aws:iam::222222222222:user/Mary"}, True),
    Row(MULTIPLE, DEPARTMENT, "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket",
        {"aws:PrincipalTag/department": "hr", "aws:PrincipalArn": "arn:aws:iam::222222222222:user/Mary"}, False),
    Row(MULTIPLE, DEPARTMENT, "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket",
        {"aws:PrincipalTag/department": "hr", "aws:PrincipalTag/role": "audit",
         "aws:PrincipalArn": "arn:aws:iam::222222222222:user/Bob"}, False),
    # a negated operator with several values: NOR
    Row(MULTIPLE, NOT_ROLE, "s3:ListBucket", "*", {"aws:PrincipalTag/role": "audit"}, False),
    Row(MULTIPLE, NOT_ROLE, "s3:ListBucket", "*", {"aws:PrincipalTag/role": "security"}, False),
    Row(MULTIPLE, NOT_ROLE, "s3:ListBucket", "*", {"aws:PrincipalTag/role": "dev"}, True),
    Row(OPERATORS, NOT_ROLE, "s3:ListBucket", "*", {}, True),  # negated operator, key absent: true
    # set operators on a multivalued key
    Row(SINGLE_VS_MULTI, ANY_TAG_KEY, "ec2:CreateTags", "*", {"aws:TagKeys": ["DataClass", "Dept"]}, True),
    Row(SINGLE_VS_MULTI, ANY_TAG_KEY, "ec2:CreateTags", "*", {"aws:TagKeys": ["Dept", "SIC"]}, False),
    Row(SINGLE_VS_MULTI, ANY_TAG_KEY, "ec2:CreateTags", "*", {}, False),
    Row(SINGLE_VS_MULTI, ONLY_TAG_KEYS, "ec2:CreateTags", "*", {"aws:TagKeys": ["DataClass", "Owner"]}, True),
    Row(SINGLE_VS_MULTI, ONLY_TAG_KEYS, "ec2:CreateTags", "*", {"aws:TagKeys": ["DataClass", "Dept"]}, False),
    Row(SINGLE_VS_MULTI, ONLY_TAG_KEYS, "ec2:CreateTags", "*", {}, True),  # "also returns true if ... no keys"
    Row(MULTI_EXAMPLES, KEY1_ONLY, "iam:TagUser", "*", {"aws:TagKeys": ["key1:legal"]}, True),
    Row(MULTI_EXAMPLES, KEY1_ONLY, "iam:TagUser", "*", {"aws:TagKeys": ["key1:hr", "key1:personnel"]}, True),
    Row(MULTI_EXAMPLES, KEY1_ONLY, "iam:TagUser", "*", {"aws:TagKeys": ["key2:audit"]}, False),
    Row(MULTI_EXAMPLES, KEY1_ONLY, "iam:TagUser", "*", {}, False),  # no aws:TagKeys: "Match" (denied)
    Row(MULTI_EXAMPLES, RESTRICTED_PREFIXES, "iam:TagRole", "*", {"aws:TagKeys": ["key1:a", "key3:b"]}, False),
    Row(MULTI_EXAMPLES, RESTRICTED_PREFIXES, "iam:TagRole", "*", {"aws:TagKeys": ["key1:a", "key4:b"]}, True),
    Row(MULTI_EXAMPLES, RESTRICTED_PREFIXES, "iam:TagRole", "*", {}, True),  # Null false: missing key not denied
    Row(MULTI_EXAMPLES, SNAPSHOT_TAGS, "ec2:CreateSnapshot", "*", {"aws:TagKeys": ["webserver", "owner"]}, False),
    Row(MULTI_EXAMPLES, SNAPSHOT_TAGS, "ec2:CreateSnapshot", "*", {"aws:TagKeys": ["owner"]}, True),
    Row(MULTI_EXAMPLES, SNAPSHOT_TAGS, "ec2:CreateSnapshot", "*", {}, True),
    # EC2: tags on creation, tagging, resource tags
    Row(EC2_EXAMPLES, LAUNCH_WITH_TAGS, "ec2:RunInstances", NEW_INSTANCE,
        {"aws:RequestTag/environment": "production", "aws:RequestTag/purpose": "webserver"}, True),
    Row(EC2_EXAMPLES, LAUNCH_WITH_TAGS, "ec2:RunInstances", NEW_INSTANCE,
        {"aws:RequestTag/environment": "production"}, False),  # "If users don't pass these specific tags"
    Row(EC2_EXAMPLES, LAUNCH_WITH_TAGS, "ec2:RunInstances", IMAGE, {}, True),
    Row(EC2_TAG_ON_CREATE, LAUNCH_WITH_TAGS, "ec2:CreateTags", NEW_INSTANCE, {"ec2:CreateAction": "RunInstances"}, True),
    Row(EC2_TAG_ON_CREATE, LAUNCH_WITH_TAGS, "ec2:CreateTags", INSTANCE, {}, False),  # no tagging of existing resources
    Row(EC2_EXAMPLES, AT_LEAST_ONE_TAG, "ec2:RunInstances", NEW_INSTANCE, {"aws:TagKeys": ["environment", "owner"]}, True),
    Row(EC2_EXAMPLES, AT_LEAST_ONE_TAG, "ec2:RunInstances", NEW_INSTANCE, {}, False),
    Row(EC2_EXAMPLES, ONLY_PURPOSE_TEST, "ec2:CreateTags", NEW_INSTANCE,
        {"ec2:CreateAction": "RunInstances", "aws:RequestTag/purpose": "test", "aws:TagKeys": ["purpose"]}, True),
    Row(EC2_EXAMPLES, ONLY_PURPOSE_TEST, "ec2:CreateTags", NEW_INSTANCE,
        {"ec2:CreateAction": "RunInstances", "aws:RequestTag/purpose": "test", "aws:RequestTag/owner": "x",
         "aws:TagKeys": ["purpose", "owner"]}, False),
    Row(EC2_EXAMPLES, TAG_PRODUCTION, "ec2:CreateTags", "arn:aws:ec2:region:account:instance/i-1",
        {"aws:RequestTag/environment": "production", "aws:TagKeys": ["environment"]}, True),
    Row(EC2_EXAMPLES, TAG_PRODUCTION, "ec2:CreateTags", "arn:aws:ec2:region:account:instance/i-1",
        {"aws:RequestTag/environment": "production", "aws:TagKeys": ["environment", "owner"]}, False),
    Row(EC2_EXAMPLES, TAG_PRODUCTION, "ec2:CreateTags", "arn:aws:ec2:region:account:volume/vol-1",
        {"aws:RequestTag/environment": "production", "aws:TagKeys": ["environment"]}, False),
    Row(EC2_EXAMPLES, TAG_OWNED, "ec2:CreateTags", "arn:aws:ec2:region:account:volume/vol-1",
        {"aws:RequestTag/environment": "test", "ec2:ResourceTag/owner": "bob", "aws:username": "bob"}, True),
    Row(EC2_EXAMPLES, TAG_OWNED, "ec2:CreateTags", "arn:aws:ec2:region:account:volume/vol-1",
        {"aws:RequestTag/environment": "test", "ec2:ResourceTag/owner": "alice", "aws:username": "bob"}, False),
    Row(EC2_EXAMPLES, DELETE_TAGS, "ec2:DeleteTags", VOLUME, {"aws:TagKeys": ["environment"]}, True),
    Row(EC2_EXAMPLES, DELETE_TAGS, "ec2:DeleteTags", VOLUME, {"aws:TagKeys": ["environment", "owner"]}, False),
    Row(EC2_EXAMPLES, ROLE_BY_DEPARTMENT, "ec2:AssociateIamInstanceProfile", "arn:aws:ec2:region:account:instance/i-1",
        {"ec2:ResourceTag/department": "test"}, True),
    Row(EC2_EXAMPLES, ROLE_BY_DEPARTMENT, "ec2:AssociateIamInstanceProfile", "arn:aws:ec2:region:account:instance/i-1",
        {"ec2:ResourceTag/department": "prod"}, False),
    Row(EC2_OWNER, OWNER, "ec2:StopInstances", INSTANCE, {"ec2:ResourceTag/Owner": "bob", "aws:username": "bob"}, True),
    Row(EC2_OWNER, OWNER, "ec2:StopInstances", INSTANCE, {"ec2:ResourceTag/Owner": "alice", "aws:username": "bob"}, False),
    Row(EC2_OWNER, OWNER, "ec2:StopInstances", INSTANCE, {"aws:username": "bob"}, False),
    Row(EC2_OWNER, OWNER, "ec2:TerminateInstances", INSTANCE, {"ec2:ResourceTag/Owner": "bob", "aws:username": "bob"},
        False),  # the action is not in the statement
    Row(PASSROLE, TO_CLOUDWATCH, "iam:PassRole", ROLE, {"iam:PassedToService": "cloudwatch.amazonaws.com"}, True),
    Row(PASSROLE, TO_CLOUDWATCH, "iam:PassRole", ROLE, {"iam:PassedToService": "ec2.amazonaws.com"}, False),
    Row(DATES, SECOND_HALF_2017, "service-prefix:action-name", "*", {"aws:CurrentTime": "2017-09-14T12:00:00Z"}, True),
    Row(DATES, SECOND_HALF_2017, "service-prefix:action-name", "*", {"aws:CurrentTime": "2018-01-01T00:00:00Z"}, False),
    Row(DENY_IP, COMPANY_IPS, "ec2:RunInstances", NEW_INSTANCE, {"aws:SourceIp": "192.0.2.17"}, True),
    Row(DENY_IP, COMPANY_IPS, "ec2:RunInstances", NEW_INSTANCE, {"aws:SourceIp": "198.51.100.1"}, False),
    # "It denies access to an AWS service, such as AWS CloudFormation, even when it makes calls on your behalf"
    Row(DENY_IP, COMPANY_IPS, "ec2:RunInstances", NEW_INSTANCE, {"aws:ViaAWSService": "true"}, False),
]


@pytest.mark.parametrize("row", ROWS, ids=[f"{i:02d}-{r.source.rsplit('/', 1)[-1].split('.')[0]}"
                                           for i, r in enumerate(ROWS)])
def test_documented_outcome(row: Row) -> None:
    statements = row.statements if isinstance(row.statements, list) else [row.statements]
    decision = evaluate([{"Version": "2012-10-17", "Statement": statements}], row.action, row.resource,
                        context=row.context)
    assert bool(decision) is row.allowed, f"{row.source}: {row}"


def test_every_row_cites_an_aws_documentation_page() -> None:
    assert all(r.source.startswith("https://docs.aws.amazon.com/") for r in ROWS)
