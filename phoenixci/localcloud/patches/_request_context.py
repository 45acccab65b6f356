"""The request context IAM conditions are evaluated against, built per request and resource.

Global keys (IAM User Guide, "AWS global condition context keys"): ``aws:CurrentTime``,
``aws:EpochTime``, ``aws:SecureTransport``, ``aws:SourceIp`` (absent when a service acts
for the caller), ``aws:RequestedRegion``, ``aws:ViaAWSService``, ``aws:CalledVia*``;
principal keys: ``aws:PrincipalArn`` (the role's ARN for a role session),
``aws:PrincipalAccount``, ``aws:PrincipalType``, ``aws:userid``, ``aws:username`` (IAM
users), ``aws:PrincipalTag/*``, ``aws:MultiFactorAuthPresent`` (temporary credentials),
``ec2:SourceInstanceARN`` (instance-role sessions, named after their instance);
service keys come from :mod:`_context_keys` (tags of the resource, tags of the request …).

``aws:SecureTransport`` is pluggable: :func:`set_secure_transport` installs the function
that decides it from the HTTP request (default: ``cfn_bucket_policy.LOCAL_TRANSPORT_IS_SECURE``).

The request being served is captured from ``BaseResponse.setup_class`` (every service,
S3 included, passes there before any authorization) into a context variable.
"""
from __future__ import annotations

import contextvars
import datetime
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

CLOUDFORMATION = "cloudformation.amazonaws.com"
_GLOBAL_SERVICES = ("iam", "sts", "s3")  # their region is not a request choice: us-east-1 unless given


@dataclass(frozen=True)
class Request:
    """One API request as IAM sees it (or one call a service makes for the caller)."""

    service: str
    action: str  # the API operation, e.g. "RunInstances"
    params: Mapping[str, str]
    region: str
    account: str
    source_ip: str | None = None
    secure: bool | None = None  # None: decided by the secure-transport hook
    headers: Mapping[str, str] = field(default_factory=dict)
    via: str | None = None  # the service acting for the caller (CloudFormation)
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys already known (ec2:CreateAction …)

    def with_extra(self, **keys: Any) -> Request:
        return replace(self, extra={**self.extra, **keys})


#: the moto response object serving the current request (set in setup_class)
_CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("phoenixci_request", default=None)


def capture(response: Any) -> None:
    _CURRENT.set(response)


def _default_secure_transport(http_request: Any) -> bool:
    from phoenixci.localcloud.patches.cfn_bucket_policy import LOCAL_TRANSPORT_IS_SECURE

    return bool(LOCAL_TRANSPORT_IS_SECURE)


_secure_transport: Callable[[Any], bool] = _default_secure_transport


def set_secure_transport(decide: Callable[[Any], bool] | None) -> None:
    """Install how ``aws:SecureTransport`` is decided from the HTTP request (None: default)."""
    global _secure_transport
    _secure_transport = decide or _default_secure_transport


def secure_transport(http_request: Any) -> bool:
    return _secure_transport(http_request)


def current_request() -> Request | None:
    """The request being served, as a :class:`Request` (None outside a request)."""
    response = _CURRENT.get()
    if response is None:
        return None
    from phoenixci.localcloud.patches.resource_arns import flat_params

    http = getattr(response, "normalized_request", None)
    try:
        action = str(response._get_action())
    except Exception:  # noqa: BLE001 - S3 names its actions elsewhere
        action = ""
    headers = {str(k).lower(): str(v) for k, v in dict(getattr(response, "headers", {}) or {}).items()}
    return Request(service=str(getattr(response, "service_name", "") or ""), action=action,
                   params=flat_params(getattr(response, "querystring", {}) or {}),
                   region=str(getattr(response, "region", "") or "us-east-1"),
                   account=str(getattr(response, "current_account", "") or ""),
                   source_ip=getattr(http, "remote_addr", None), secure=secure_transport(http),
                   headers=headers)


# --------------------------------------------------------------------- key groups
def global_keys(request: Request, now: datetime.datetime | None = None) -> dict[str, Any]:
    now = now or datetime.datetime.now(datetime.UTC)
    secure = request.secure if request.secure is not None else secure_transport(None)
    keys: dict[str, Any] = {
        "aws:CurrentTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:EpochTime": str(int(now.timestamp())),
        "aws:SecureTransport": "true" if secure else "false",
        "aws:RequestedRegion": request.region or "us-east-1",
        "aws:ViaAWSService": "true" if request.via else "false",
    }
    if request.via:
        keys.update({"aws:CalledVia": [request.via], "aws:CalledViaFirst": request.via,
                     "aws:CalledViaLast": request.via})
    elif request.source_ip:
        keys["aws:SourceIp"] = request.source_ip
    return keys


def _tag_map(tags: Any) -> dict[str, str]:
    """moto keeps tags as {k: v}, {k: {"Key", "Value"}}, [{"Key", "Value"}] or {"Tags": [...]}."""
    if isinstance(tags, Mapping) and "Tags" in tags and isinstance(tags["Tags"], list):
        tags = tags["Tags"]
    if isinstance(tags, Mapping):
        return {str(k): str(v.get("Value", "")) if isinstance(v, Mapping) else str(v) for k, v in tags.items()}
    found: dict[str, str] = {}
    for tag in tags or []:
        if isinstance(tag, Mapping):
            found[str(tag.get("Key", tag.get("key", "")))] = str(tag.get("Value", tag.get("value", "")))
    return found


def tag_keys(prefix: str, tags: Mapping[str, str]) -> dict[str, str]:
    return {f"{prefix}/{k}": v for k, v in tags.items()}


def principal_keys(access_key: Any, region: str = "us-east-1") -> dict[str, Any]:
    """Keys describing who calls, from moto's access key (user or assumed-role session)."""
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    account = str(getattr(access_key, "account_id", ""))
    partition = str(getattr(access_key, "partition", "") or get_partition(region))
    backend = iam_backends[account][partition]
    keys: dict[str, Any] = {"aws:PrincipalAccount": account}
    user = getattr(access_key, "_owner_user_name", None)
    role_name = getattr(access_key, "_owner_role_name", None)
    try:
        if user:
            found = backend.get_user(user)
            keys.update({"aws:PrincipalArn": str(access_key.arn), "aws:PrincipalType": "User",
                         "aws:username": user, "aws:userid": str(found.id)})
            keys.update(tag_keys("aws:PrincipalTag", _tag_map(backend.list_user_tags(user))))
        elif role_name:
            session = str(getattr(access_key, "_session_name", ""))
            role = backend.get_role(role_name)
            keys.update({"aws:PrincipalArn": str(role.arn), "aws:PrincipalType": "AssumedRole",
                         "aws:userid": f"{role.id}:{session}", "aws:MultiFactorAuthPresent": "false"})
            keys.update(tag_keys("aws:PrincipalTag", _tag_map(role.tags)))
            if re.fullmatch(r"i-[0-9a-f]{8,17}", session):
                keys["ec2:SourceInstanceARN"] = f"arn:{partition}:ec2:{region}:{account}:instance/{session}"
    except Exception:  # noqa: BLE001 - a principal moto cannot describe keeps the keys found so far
        log.debug("principal keys of %s incomplete", getattr(access_key, "arn", "?"), exc_info=True)
    return keys


def build_context(request: Request, access_key: Any, resource: str,
                  now: datetime.datetime | None = None,
                  principal: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full context for ``request`` by ``access_key`` on ``resource`` (an ARN or ``*``);
    ``principal`` = the principal's keys when already known."""
    from phoenixci.localcloud.patches import _context_keys

    context = global_keys(request, now)
    if principal is not None:
        context.update(principal)
    elif access_key is not None:
        context.update(principal_keys(access_key, request.region))
    try:
        context.update(_context_keys.request_keys(request))
        context.update(_context_keys.resource_keys(request, resource))
    except Exception:  # noqa: BLE001 - never turn a request into a 500; conditions see fewer keys
        log.exception("context keys of %s:%s on %s", request.service, request.action, resource)
    context.update(request.extra)
    return context


def context_source(access_key: Any, action: str) -> Callable[[str], dict[str, Any]] | None:
    """resource -> context for the request being served (None outside a request)."""
    request = current_request()
    if request is None:
        return None
    service, _, name = action.partition(":")
    if name:  # IAM's name of the action (S3's differ from its operations)
        request = replace(request, service=service, action=name)
    if request.service in _GLOBAL_SERVICES and not request.region:
        request = replace(request, region="us-east-1")
    return _per_resource(request, access_key)


def _per_resource(request: Request, access_key: Any) -> Callable[[str], dict[str, Any]]:
    """resource -> context, the principal's keys looked up once for all resources."""
    principal: list[Mapping[str, Any]] = []

    def context(resource: str) -> dict[str, Any]:
        if not principal:
            principal.append(principal_keys(access_key, request.region) if access_key is not None else {})
        return build_context(request, access_key, resource, principal=principal[0])

    return context


def passrole_context(access_key: Any, service: str = "ec2.amazonaws.com") -> Callable[[str], dict[str, Any]]:
    """Context of the iam:PassRole check when a role is handed to ``service`` (EC2), directly
    or by a stack (then through CloudFormation: no source IP, aws:CalledVia)."""
    request = current_request() or Request(service="iam", action="PassRole", params={},
                                           region="us-east-1", account=str(getattr(access_key, "account_id", "")))
    via = CLOUDFORMATION if request.service == "cloudformation" else request.via
    passing = replace(request, service="iam", action="PassRole", params={}, via=via,
                      extra={"iam:PassedToService": service})
    return _per_resource(passing, access_key)


def access_key_of(request: Request) -> Any:
    """moto's access key named in the request's Authorization header (the signature is checked
    by the identity-policy step); None when unsigned or unknown."""
    from moto.iam.access_control import CreateAccessKeyFailure, create_access_key
    from moto.utilities.utils import get_partition

    found = re.search(r"Credential=([^/,\s]+)/", request.headers.get("authorization", ""))
    key_id = found.group(1) if found else request.params.get("X-Amz-Credential", "").split("/")[0]
    if not key_id:
        return None
    headers = {"X-Amz-Security-Token": request.headers["x-amz-security-token"]} \
        if "x-amz-security-token" in request.headers else {}
    try:
        return create_access_key(account_id=request.account, partition=get_partition(request.region),
                                 access_key_id=key_id, headers=headers)
    except (CreateAccessKeyFailure, KeyError):
        return None
