"""Trust-policy matching and the moto version pin (phoenixci.localcloud.patches)."""
from __future__ import annotations

import pytest

from phoenixci.errors import PhoenixError
from phoenixci.localcloud import patches
from phoenixci.localcloud.patches.trust import aws_principal_matches, trust_allows

pytestmark = pytest.mark.unit

A = "123456789012"
USER = f"arn:aws:iam::{A}:user/dev"
SESSION = f"arn:aws:sts::{A}:assumed-role/deployer/i-1"


def doc(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def stmt(principal: object, effect: str = "Allow", **extra: object) -> dict:
    return {"Effect": effect, "Principal": principal, "Action": "sts:AssumeRole", **extra}


@pytest.mark.parametrize(("expected", "caller", "ok"), [
    ("*", USER, True),
    (f"arn:aws:iam::{A}:root", USER, True),
    (A, SESSION, True),
    ("arn:aws:iam::999999999999:root", USER, False),
    (USER, USER, True),
    (f"arn:aws:iam::{A}:user/other", USER, False),
    (f"arn:aws:iam::{A}:role/deployer", SESSION, True),
    (f"arn:aws:iam::{A}:role/path/deployer", SESSION, True),
    (f"arn:aws:iam::{A}:role/other", SESSION, False),
])
def test_aws_principal_matching(expected: str, caller: str, ok: bool) -> None:
    assert aws_principal_matches(expected, caller) is ok


def test_service_only_trust_is_neutral_for_users() -> None:
    policy = doc(stmt({"Service": "ec2.amazonaws.com"}))
    assert not trust_allows(policy, caller_arn=USER)
    assert trust_allows(policy, service="ec2.amazonaws.com")
    assert not trust_allows(policy, service="lambda.amazonaws.com")


def test_non_matching_statement_is_neutral_not_deny() -> None:
    policy = doc(stmt({"AWS": f"arn:aws:iam::{A}:user/other"}), stmt({"AWS": USER}))
    assert trust_allows(policy, caller_arn=USER)


def test_explicit_deny_wins() -> None:
    policy = doc(stmt({"AWS": f"arn:aws:iam::{A}:root"}), stmt({"AWS": USER}, effect="Deny"))
    assert not trust_allows(policy, caller_arn=USER)
    assert trust_allows(policy, caller_arn=f"arn:aws:iam::{A}:user/ok")


def test_external_id_condition() -> None:
    policy = doc(stmt({"AWS": "*"}, Condition={"StringEquals": {"sts:ExternalId": "xyz"}}))
    assert trust_allows(policy, caller_arn=USER, condition_values={"sts:ExternalId": "xyz"})
    assert not trust_allows(policy, caller_arn=USER, condition_values={"sts:ExternalId": "no"})


def test_other_actions_are_not_trusted() -> None:
    assert not trust_allows(doc(stmt({"AWS": "*"})), "sts:TagSession", caller_arn=USER)


@pytest.mark.parametrize("version", ["5.2.4", "5.3.0", "6.0.0", "4.2.14"])
def test_moto_version_pin_rejects(version: str) -> None:
    with pytest.raises(patches.MotoCompatError, match=version) as err:
        patches.check_moto_version(version)
    assert isinstance(err.value, PhoenixError)


@pytest.mark.parametrize("version", ["5.2.5", "5.2.9", "5.2.10.dev3"])
def test_moto_version_pin_accepts(version: str) -> None:
    assert patches.check_moto_version(version) == version


def test_missing_symbol_is_a_compat_error() -> None:
    class Thing:
        pass

    with pytest.raises(patches.MotoCompatError, match=r"Thing\.gone"):
        patches.require(Thing, "gone")


def test_apply_is_idempotent() -> None:
    from moto.iam.access_control import IAMRequestBase

    patches.apply()
    first = IAMRequestBase.check_action_permitted
    patches.apply()
    assert patches.is_applied() and IAMRequestBase.check_action_permitted is first
