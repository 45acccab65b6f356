"""A local cloud answers for its own region only, as an AWS account with one Region enabled.

A local cloud boots instances for one region (``phoenixci cloud start --region R``); moto itself
serves every region, so RunInstances or CreateStack signed for another region would leave rows
with no server behind them. Instead such a call gets the answer AWS gives for a Region that is
not enabled for the account — an authentication failure, before any authorization:

- EC2: HTTP 401 ``AuthFailure`` "AWS was not able to validate the provided access credentials"
  (AWS re:Post Knowledge Center, "Why did I get the IAM error 'AWS was not able to validate the
  provided access credentials' in some AWS Regions?",
  https://repost.aws/knowledge-center/iam-validate-access-credentials: a call to a Region the
  account has not activated);
- the other query-protocol services (CloudFormation, a regional STS endpoint): HTTP 403
  ``InvalidClientTokenId`` "The security token included in the request is invalid." (same page:
  "If you don't activate the Region in both accounts, then you receive the 'InvalidClientTokenId'
  error"; IAM User Guide, "Manage AWS STS in an AWS Region");
- JSON-protocol services (SSM, …): HTTP 400 ``UnrecognizedClientException`` with the same text
  (their form of an access key the Region does not know).

Each message then names the region this cloud serves and how to start one for the asked region.
Global services answer whatever the signing region: IAM, Route 53, CloudFront, Organizations, and
STS's global endpoint (signed for us-east-1). S3 is not checked (bucket names are global; its
requests are authorised on their own path).

Off until ``serve_only(region)`` (the LocalCloud sets it while it runs; the API alone,
``moto://?instances=off``, has no servers behind any region and keeps answering for all).

moto 5.2.5 hook: ``ActionAuthenticatorMixin._authenticate_and_authorize_normal_action``,
installed outermost (after resource_arns and passrole), so it decides before them.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from moto.core.exceptions import JsonRESTError, _RESTError

log = logging.getLogger(__name__)

GLOBAL_SERVICES = frozenset({"iam", "route53", "cloudfront", "organizations"})
GLOBAL_SIGNING_REGION = {"sts": "us-east-1"}  # the global endpoint sts.amazonaws.com signs for us-east-1
TOKEN_INVALID = "The security token included in the request is invalid."
EC2_AUTH_FAILURE = "AWS was not able to validate the provided access credentials"
_MARK = "__phoenixci_region_refusal__"

_serving: str | None = None


def serve_only(region: str | None) -> None:
    """Refuse calls for any region but ``region`` (None: answer for every region)."""
    global _serving
    _serving = region


def serving() -> str | None:
    return _serving


class RegionAuthFailure(_RESTError):
    """EC2's answer in a Region the account has not enabled (HTTP 401)."""

    code = 401


class RegionTokenInvalid(_RESTError):
    """A query-protocol service's answer in a Region the account has not enabled (HTTP 403)."""

    code = 403


class RegionClientUnrecognized(JsonRESTError):
    """A JSON-protocol service's answer in a Region the account has not enabled (HTTP 400)."""

    code = 400


def hint(asked: str, served: str) -> str:
    return (f"(this local cloud serves {served} only, as an account with only that Region enabled; "
            f"for {asked} start a cloud with `phoenixci cloud start --region {asked} --state-dir DIR`)")


def refusal(service: str, asked: str, served: str | None, json_protocol: bool) -> _RESTError | None:
    """The error for a call to ``service`` signed for ``asked`` on a cloud serving ``served``
    (None: every region), or None if it may go on."""
    if served is None or asked == served or service in GLOBAL_SERVICES or service == "s3":
        return None
    if GLOBAL_SIGNING_REGION.get(service) == asked:
        return None
    if service == "ec2":
        return RegionAuthFailure("AuthFailure", f"{EC2_AUTH_FAILURE} {hint(asked, served)}")
    if json_protocol:
        return RegionClientUnrecognized("UnrecognizedClientException", f"{TOKEN_INVALID} {hint(asked, served)}")
    return RegionTokenInvalid("InvalidClientTokenId", f"{TOKEN_INVALID} {hint(asked, served)}")


def check() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    from phoenixci.localcloud.patches import require

    require(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action")


def install() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    from phoenixci.localcloud.patches._caller import mark, replace

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def authorize(self: Any, resource: Any = "*") -> None:
        served = _serving
        if served is not None:
            headers = getattr(self, "headers", None) or {}
            error = refusal(str(getattr(self, "service_name", "")), str(getattr(self, "region", "")), served,
                            json_protocol="X-Amz-Target" in headers)
            if error is not None:
                raise error
        original(self, resource)

    setattr(authorize, _MARK, True)
    replace(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action", mark(authorize))
    log.debug("other regions refused while a local cloud serves one")
