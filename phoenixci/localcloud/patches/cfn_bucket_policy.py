"""CloudFormation creates and deletes ``AWS::S3::BucketPolicy``.

AWS behaviour restored: a stack's bucket policy is put on the bucket
(GetBucketPolicy returns the template's document) and removed when the resource is
deleted. moto 5.2.5 has no model for the type: it logs "No Moto CloudFormation support
for AWS::S3::BucketPolicy" and the bucket has no policy.

moto 5.2.5 hook: a new ``moto.core.common_models.CloudFormationModel`` subclass (moto
finds models through ``CloudFormationModel.__subclasses__()``; the lookup caches
``moto.cloudformation.parsing.get_model_list`` / ``get_model_map`` / ``get_name_type_map``
are cleared).
The model calls ``moto.s3.models.S3Backend.put_bucket_policy`` / ``delete_bucket_policy``.

Because the bucket then really has a policy, its Conditions must mean something: moto
5.2.5 (``moto.s3.models.FakeBucket.get_permission``, used for every object request)
ignores the ``Bool`` operator, so the template's TLS-only ``Deny ... Condition Bool
aws:SecureTransport false`` denied *every* request. ``FakeBucket.get_permission`` is
replaced by an evaluation that applies a statement only when its condition holds
(every operator IAM documents, ``_conditions``; an unknown operator counts as met in a
Deny, i.e. a conditional Deny keeps denying, and as not met in an Allow). Request
context: the request being served (``_request_context``: source address, principal, S3
keys, object tags); ``aws:SecureTransport`` is whether that request came over TLS (the
``secure_transport`` patch installs the hook ``_request_context.set_secure_transport``; the
local cloud's API speaks HTTPS, with one plain-HTTP listener on loopback).
"""
from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

RESOURCE_TYPE = "AWS::S3::BucketPolicy"

_model: type | None = None
#: moto's cached views of ``CloudFormationModel.__subclasses__()``.
_CACHES = ("get_model_list", "get_model_map", "get_name_type_map")


def _clear_caches(parsing: Any) -> None:
    for name in _CACHES:
        getattr(parsing, name).cache_clear()


def _s3(account_id: str, region_name: str) -> Any:
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    return s3_backends[account_id][get_partition(region_name)]


def _document(properties: dict[str, Any]) -> bytes:
    document = properties.get("PolicyDocument")
    if document is None:
        raise ValueError("AWS::S3::BucketPolicy needs PolicyDocument")
    text = document if isinstance(document, str) else json.dumps(document)
    return text.encode("utf-8")


def model_class() -> type:
    """The CloudFormation model for AWS::S3::BucketPolicy (defined once, on first use)."""
    global _model
    if _model is not None:
        return _model
    from moto.core.common_models import CloudFormationModel

    class BucketPolicy(CloudFormationModel):
        """A bucket's policy as a stack resource; its physical id is the bucket name."""

        def __init__(self, bucket_name: str, account_id: str, region_name: str) -> None:
            self.bucket_name = bucket_name
            self.account_id = account_id
            self.region_name = region_name

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return RESOURCE_TYPE

        @property
        def physical_resource_id(self) -> str:
            return self.bucket_name

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return False

        @classmethod
        def create_from_cloudformation_json(
                cls, resource_name: str, cloudformation_json: Any, account_id: str,
                region_name: str, **kwargs: Any) -> BucketPolicy:
            properties = cloudformation_json.get("Properties") or {}
            bucket_name = str(properties["Bucket"])
            _s3(account_id, region_name).put_bucket_policy(bucket_name, _document(properties))
            return cls(bucket_name, account_id, region_name)

        @classmethod
        def update_from_cloudformation_json(
                cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                account_id: str, region_name: str) -> BucketPolicy:
            properties = cloudformation_json.get("Properties") or {}
            if str(properties.get("Bucket")) != original_resource.bucket_name:
                original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(
                new_resource_name, cloudformation_json, account_id, region_name)

        @classmethod
        def delete_from_cloudformation_json(
                cls, resource_name: str, cloudformation_json: Any, account_id: str,
                region_name: str) -> None:
            cls(resource_name, account_id, region_name).delete(account_id, region_name)

        def delete(self, account_id: str, region_name: str) -> None:
            backend = _s3(account_id, region_name)
            if self.bucket_name in backend.buckets:
                backend.delete_bucket_policy(self.bucket_name)

    _model = BucketPolicy
    return _model


#: ``aws:SecureTransport`` before the ``secure_transport`` patch installs its hook.
LOCAL_TRANSPORT_IS_SECURE = True


def request_context(resource: str = "*") -> dict[str, Any]:
    """The context bucket-policy Conditions see: the request being served (its transport,
    source address, principal, S3 keys, the object's tags), else ``aws:SecureTransport`` alone."""
    from phoenixci.localcloud.patches._request_context import (
        access_key_of,
        build_context,
        current_request,
        secure_transport,
    )

    request = current_request()
    if request is None:
        return {"aws:SecureTransport": "true" if secure_transport(None) else "false"}
    return build_context(request, access_key_of(request), resource)


def condition_holds(condition: dict[str, Any] | None, context: dict[str, Any], effect: str = "Allow") -> bool:
    """True when a statement's Condition block holds for ``context`` (``_conditions``); an
    operator IAM does not define counts as met in a Deny and as not met in an Allow."""
    from phoenixci.localcloud.patches._policy_eval import condition_applies

    return condition_applies({"Condition": condition or {}, "Effect": effect}, context)


def bucket_permission(policy_text: str, action: str, resource: str,
                      context: dict[str, str] | None = None) -> Any:
    """moto's PermissionResult of a bucket policy, with Conditions evaluated."""
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    context = request_context(resource) if context is None else context
    statements = json.loads(policy_text).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    permitted = False
    for statement in statements:
        if not condition_holds(statement.get("Condition"), context, str(statement.get("Effect", ""))):
            continue
        plain = {k: v for k, v in statement.items() if k != "Condition"}
        result = IAMPolicyStatement(plain).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            return result
        if result == PermissionResult.PERMITTED:
            permitted = True
    return PermissionResult.PERMITTED if permitted else PermissionResult.NEUTRAL


def _get_permission(self: Any, action: str, resource: str) -> Any:
    from moto.iam.access_control import PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    policy = self.policy.decode() if isinstance(self.policy, bytes) else str(self.policy)
    return bucket_permission(policy, action, resource)


def upstream_supports_it() -> bool:
    """True when moto itself (not this patch) models AWS::S3::BucketPolicy."""
    from moto.cloudformation.parsing import get_model_map

    model = get_model_map().get(RESOURCE_TYPE)
    return model is not None and model is not _model


def check() -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.s3.models import S3Backend

    from phoenixci.localcloud.patches import require

    for name in _CACHES:
        require(require(parsing, name), "cache_clear")
    require(CloudFormationModel, "__subclasses__")
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult
    from moto.s3.models import FakeBucket

    require(FakeBucket, "get_permission")
    require(IAMPolicyStatement, "is_action_permitted")
    require(PermissionResult, "DENIED")
    require(S3Backend, "put_bucket_policy")
    require(S3Backend, "delete_bucket_policy")


def install() -> None:
    from moto.cloudformation import parsing
    from moto.s3.models import FakeBucket

    from phoenixci.localcloud.patches._caller import is_patched, mark

    if not is_patched(FakeBucket.get_permission):
        FakeBucket.get_permission = mark(_get_permission)
    if _model is not None:
        return
    _clear_caches(parsing)
    if upstream_supports_it():
        log.info("moto models %s itself; not installing ours", RESOURCE_TYPE)
        return
    model_class()
    _clear_caches(parsing)
    log.debug("CloudFormation %s installed", RESOURCE_TYPE)
