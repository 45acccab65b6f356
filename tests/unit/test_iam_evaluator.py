"""The IAM policy evaluator beyond the documented examples (phoenixci.localcloud.patches._conditions,
_policy_eval): one case per operator family, keys and variables, failing closed, NotResource/NotAction,
a context per resource."""
from __future__ import annotations

import pytest

from phoenixci.localcloud.patches._conditions import UnknownOperator, evaluate_condition, parse_date
from phoenixci.localcloud.patches._policy_eval import evaluate

ALLOW_ALL = {"Effect": "Allow", "Action": "*", "Resource": "*"}


def allow(action: object, resource: object, condition: dict[str, object]) -> dict[str, object]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, "Condition": condition}


@pytest.mark.parametrize(("operator", "wanted", "actual", "holds"), [
    ("StringEqualsIgnoreCase", "Prod", "PROD", True),
    ("StringNotEqualsIgnoreCase", "Prod", "PROD", False),
    ("StringNotLike", "app-*", "ci-server", True),
    ("StringLike", "i-????", "i-12345", False),  # ? is one character
    ("NumericNotEquals", "3", "3.0", False),
    ("NumericGreaterThanEquals", "10", "ten", False),  # not a number: no match
    ("DateLessThanEquals", "2020-01-01T00:00:00Z", "1577836800", True),  # epoch seconds
    ("DateNotEquals", "2020-01-01", "2020-01-01T00:00:00Z", False),
    ("Bool", "true", "TRUE", True),
    ("BinaryEquals", "QmluYXJ5VmFsdWVJbkJhc2U2NA==", "BinaryValueInBase64", True),
    ("NotIpAddress", "10.0.0.0/8", "10.1.2.3", False),
    ("IpAddress", "203.0.113.7", "203.0.113.7", True),  # a bare address is /32
    ("ArnNotLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::123456789012:role/ci", True),
])
def test_operator_families(operator: str, wanted: str, actual: str, holds: bool) -> None:
    """One row per operator family (OPERATORS page tables)."""
    assert evaluate_condition({operator: {"k": wanted}}, {"k": actual}) is holds
    assert evaluate_condition({f"{operator}IfExists": {"k": wanted}}, {}) is True


def test_keys_are_case_insensitive_values_are_not() -> None:
    assert evaluate_condition({"StringEquals": {"AWS:ResourceTag/Role": "app"}}, {"aws:ResourceTag/Role": "app"})
    assert not evaluate_condition({"StringEquals": {"aws:ResourceTag/Role": "App"}}, {"aws:ResourceTag/Role": "app"})


def test_policy_variables_with_defaults_and_special_characters() -> None:
    assert evaluate_condition({"StringEquals": {"k": "${aws:username, 'nobody'}"}}, {"k": "nobody"})
    assert evaluate_condition({"StringLike": {"k": "${*}literal"}}, {"k": "*literal"})
    # an unresolvable variable matches nothing
    assert not evaluate_condition({"StringEquals": {"k": "${aws:username}"}}, {"k": "${aws:username}"})


def test_an_unknown_operator_fails_closed() -> None:
    with pytest.raises(UnknownOperator):
        evaluate_condition({"StringEqualz": {"k": "v"}}, {"k": "v"})
    policy = {"Statement": [ALLOW_ALL, {"Effect": "Deny", "Action": "*", "Resource": "*",
                                        "Condition": {"StringEqualz": {"k": "v"}}}]}
    assert not evaluate([policy], "s3:GetObject", "*", context={})
    assert not evaluate([{"Statement": [allow("*", "*", {"StringEqualz": {"k": "v"}})]}], "s3:GetObject", "*",
                        context={"k": "v"})


def test_not_resource_and_not_action() -> None:
    policy = {"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret*",
                             "Resource": "ignored"}]}
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::public/x")
    assert not evaluate([policy], "s3:GetObject", "arn:aws:s3:::secret/x")
    assert not evaluate([policy], "iam:CreateUser", "*")


def test_context_per_resource() -> None:
    """Every resource of a request must be allowed with its own tags (TerminateInstances of two)."""
    policy = {"Statement": [allow("ec2:TerminateInstances", "*", {"StringEquals": {"aws:ResourceTag/role": "app"}})]}
    tags = {"i-app": {"aws:ResourceTag/role": "app"}, "i-ci": {"aws:ResourceTag/role": "ci"}}
    decision = evaluate([policy], "ec2:TerminateInstances", ["i-app", "i-ci"], context=lambda r: tags[r])
    assert not decision and decision.resource == "i-ci"
    assert evaluate([policy], "ec2:TerminateInstances", ["i-app"], context=lambda r: tags[r])


def test_w3c_date_forms() -> None:
    assert parse_date("2017") is not None and parse_date("2017-07") is not None
    assert parse_date("2017-07-01T10:00+02:00") == parse_date("2017-07-01T08:00:00Z")
    assert parse_date("yesterday") is None
