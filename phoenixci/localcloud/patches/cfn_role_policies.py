"""A CloudFormation role's inline ``Policies`` are stored as JSON policy documents.

AWS behaviour restored (AWS::IAM::Role, property Policies): each entry becomes an inline
policy of the role (PutRolePolicy), GetRolePolicy returns its document, and the role's
permissions include it. moto 5.2.5's ``Role.create_from_cloudformation_json`` stores the
parsed template fragment itself, so GetRolePolicy answered a Python repr and moto's IAM
evaluation, which parses the stored text as JSON, could not use it: a role whose permissions
were inline (the usual way templates written for AWS grant them) was allowed nothing.

A document given as a JSON string is kept as it is; a mapping is serialised as JSON (dates from
an unquoted YAML ``Version: 2012-10-17`` as ``YYYY-MM-DD``, as moto does for trust policies).
Hook: ``moto.iam.models.Role.create_from_cloudformation_json`` (wrapped).
"""
from __future__ import annotations

import copy
import datetime
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def _date(value: Any) -> str:
    if isinstance(value, datetime.date):
        return value.strftime("%Y-%m-%d")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def policies_as_json(cloudformation_json: dict[str, Any]) -> dict[str, Any]:
    """A copy of the role's resource JSON whose inline policy documents are JSON text."""
    props = cloudformation_json.get("Properties") or {}
    if not props.get("Policies"):
        return cloudformation_json
    fixed = copy.deepcopy(cloudformation_json)
    for policy in fixed["Properties"]["Policies"]:
        document = policy.get("PolicyDocument")
        if document is not None and not isinstance(document, str):
            policy["PolicyDocument"] = json.dumps(document, default=_date)
    return fixed


def check() -> None:
    from moto.iam.models import Role

    from phoenixci.localcloud.patches import require

    require(Role, "create_from_cloudformation_json")
    require(Role, "put_policy")


def install() -> None:
    from moto.iam.models import Role

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original = Role.__dict__["create_from_cloudformation_json"].__func__
    if is_patched(original):
        return

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        return original(cls, resource_name, policies_as_json(cloudformation_json), account_id,
                        region_name, **kwargs)

    replace(Role, "create_from_cloudformation_json", classmethod(mark(create_from_cloudformation_json)))
    log.debug("CloudFormation role inline policies as JSON installed")


__all__ = ["check", "install", "policies_as_json"]
