"""Service condition keys a request carries, per request and per resource it touches.

Request keys (the same for every resource of the request):
- tags in the request: ``aws:RequestTag/*`` and ``aws:TagKeys`` (EC2 ``CreateTags``/
  ``DeleteTags`` ``Tag.N``, CloudFormation/IAM/STS ``Tags.member.N``, IAM ``Untag*``
  ``TagKeys.member.N``);
- EC2 ``ec2:Region``; CloudFormation ``cloudformation:TemplateUrl``, ``…:RoleArn``,
  ``…:StackPolicyUrl``, ``…:ResourceTypes``; IAM ``iam:PolicyARN``, ``iam:PermissionsBoundary``,
  ``iam:AWSServiceName``; STS ``sts:RoleSessionName``, ``sts:ExternalId``,
  ``sts:SourceIdentity``, ``sts:TransitiveTagKeys``; S3 ``s3:prefix``, ``s3:delimiter``,
  ``s3:max-keys``, ``s3:versionid``, ``s3:x-amz-*`` headers, ``s3:RequestObjectTag/*``,
  ``s3:authType``, ``s3:signatureversion``.
Resource keys (per ARN):
- an existing EC2 resource: ``aws:ResourceTag/*`` and ``ec2:ResourceTag/*`` (its tags), and for
  an instance ``ec2:InstanceType``, ``ec2:InstanceProfile``, ``ec2:Subnet``, ``ec2:Vpc``,
  ``ec2:AvailabilityZone``, ``ec2:MetadataHttpTokens``, ``ec2:Tenancy``, ``ec2:RootDeviceType``;
- a resource the request creates (``instance/*``, ``volume/*`` …): ``aws:RequestTag/*`` and
  ``aws:TagKeys`` from the ``TagSpecification`` of its type (for RunInstances also the launch
  template's), and the new instance's ``ec2:InstanceType``, ``ec2:InstanceProfile``,
  ``ec2:LaunchTemplate``, ``ec2:MetadataHttpTokens``;
- a stack, role, user or instance profile: ``aws:ResourceTag/*`` (IAM also ``iam:ResourceTag/*``);
  an S3 object: ``s3:ExistingObjectTag/*``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from phoenixci.localcloud.patches._request_context import Request, _tag_map, tag_keys

_INDEXED_TAG = re.compile(r"^(?P<prefix>.*?)(?:Tag|Tags\.member)\.(?P<n>\d+)\.(?P<field>Key|Value)$")


def _indexed(params: Mapping[str, str], prefix: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)$")
    found = [(int(m.group(1)), v) for k, v in params.items() if (m := pattern.match(k))]
    return [v for _, v in sorted(found)]


def tags_in(params: Mapping[str, str], prefix: str = "") -> dict[str, str]:
    """``{prefix}Tag.N.Key/Value`` or ``{prefix}Tags.member.N.Key/Value`` as {key: value}."""
    keys: dict[tuple[str, str], str] = {}
    values: dict[tuple[str, str], str] = {}
    for name, value in params.items():
        m = _INDEXED_TAG.match(name)
        if not m or m.group("prefix") != prefix:
            continue
        (keys if m.group("field") == "Key" else values)[(m.group("n"), name.rsplit(".", 2)[0])] = value
    return {k: values.get(idx, "") for idx, k in sorted(keys.items(), key=lambda kv: int(kv[0][0]))}


def request_tag_keys(tags: Mapping[str, str]) -> dict[str, Any]:
    if not tags:
        return {}
    return {**tag_keys("aws:RequestTag", tags), "aws:TagKeys": list(tags)}


def tag_specifications(params: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """EC2 ``TagSpecification.N``: resource type -> tags."""
    found: dict[str, dict[str, str]] = {}
    numbers = sorted({m.group(1) for k in params if (m := re.match(r"^TagSpecification\.(\d+)\.", k))}, key=int)
    for n in numbers:
        kind = params.get(f"TagSpecification.{n}.ResourceType", "")
        found.setdefault(kind, {}).update(tags_in(params, f"TagSpecification.{n}."))
    return found


# --------------------------------------------------------------------- request keys
def request_keys(request: Request) -> dict[str, Any]:
    p = request.params
    keys: dict[str, Any] = {}
    if request.service == "ec2":
        keys["ec2:Region"] = request.region
        if request.action in ("CreateTags", "DeleteTags"):
            tags = tags_in(p)
            keys.update(request_tag_keys({k: v for k, v in tags.items()
                                          if request.action == "CreateTags" or v}))
            if tags:
                keys["aws:TagKeys"] = list(tags)
    elif request.service in ("cloudformation", "iam", "sts"):
        keys.update(request_tag_keys(tags_in(p)))
        if _indexed(p, "TagKeys.member"):
            keys["aws:TagKeys"] = _indexed(p, "TagKeys.member")
        names = {"cloudformation": {"TemplateURL": "cloudformation:TemplateUrl", "RoleARN": "cloudformation:RoleArn",
                                    "StackPolicyURL": "cloudformation:StackPolicyUrl",
                                    "ChangeSetName": "cloudformation:ChangeSetName"},
                 "iam": {"PolicyArn": "iam:PolicyARN", "PermissionsBoundary": "iam:PermissionsBoundary",
                         "AWSServiceName": "iam:AWSServiceName"},
                 "sts": {"RoleSessionName": "sts:RoleSessionName", "ExternalId": "sts:ExternalId",
                         "SourceIdentity": "sts:SourceIdentity"}}[request.service]
        keys.update({key: p[param] for param, key in names.items() if p.get(param)})
        if _indexed(p, "ResourceTypes.member"):
            keys["cloudformation:ResourceTypes"] = _indexed(p, "ResourceTypes.member")
        if _indexed(p, "TransitiveTagKeys.member"):
            keys["sts:TransitiveTagKeys"] = _indexed(p, "TransitiveTagKeys.member")
    elif request.service == "s3":
        keys.update(_s3_request_keys(request))
    return keys


def _s3_request_keys(request: Request) -> dict[str, Any]:
    p, h = request.params, request.headers
    keys: dict[str, Any] = {"s3:signatureversion": "AWS4-HMAC-SHA256",
                            "s3:authType": "REST-QUERY-STRING" if p.get("X-Amz-Signature") else "REST-HEADER"}
    for param, key in (("prefix", "s3:prefix"), ("delimiter", "s3:delimiter"),
                       ("max-keys", "s3:max-keys"), ("versionId", "s3:versionid")):
        if param in p:
            keys[key] = p[param]
    for name, value in h.items():
        if name.startswith("x-amz-") and name not in ("x-amz-date", "x-amz-security-token", "x-amz-tagging"):
            keys[f"s3:{name}"] = value
    if h.get("x-amz-tagging"):
        tags = dict(parse_qsl(h["x-amz-tagging"], keep_blank_values=True))
        keys.update(tag_keys("s3:RequestObjectTag", tags))
        keys["s3:RequestObjectTagKeys"] = list(tags)
    return keys


# --------------------------------------------------------------------- resource keys
def split_arn(arn: str) -> tuple[str, str, str, str, str] | None:
    """(partition, service, region, account, resource) of an ARN, None for ``*`` and non-ARNs."""
    parts = arn.split(":", 5)
    return (parts[1], parts[2], parts[3], parts[4], parts[5]) if len(parts) == 6 and parts[0] == "arn" else None


def resource_keys(request: Request, resource: str) -> dict[str, Any]:
    parts = split_arn(resource)
    if parts is None:
        return {}
    _, service, region, account, rest = parts
    account = account or request.account
    region = region or request.region
    if service == "ec2":
        kind, _, ident = rest.partition("/")
        if ident == "*":
            return _created_ec2_keys(request, kind)
        return _existing_ec2_keys(account, region, kind, ident)
    if service == "cloudformation" and rest.startswith("stack/"):
        return _stack_keys(account, region, rest)
    if service == "iam":
        return _iam_keys(account, resource, rest)
    if service == "s3" and "/" in rest:
        return _object_keys(request, rest)
    return {}


def _ec2(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def _created_ec2_keys(request: Request, kind: str) -> dict[str, Any]:
    specs = tag_specifications(request.params)
    template = _launch_template_data(request) if request.action == "RunInstances" else {}
    tags: dict[str, str] = {}
    for spec in template.get("TagSpecifications") or []:
        if spec.get("ResourceType") == kind:
            tags.update(_tag_map(spec.get("Tags") or []))
    tags.update(specs.get(kind, {}))
    keys = request_tag_keys(tags)
    p = request.params
    if request.action == "RunInstances" and kind == "instance":
        keys["ec2:InstanceType"] = p.get("InstanceType") or template.get("InstanceType") or "m1.small"
        keys.update({"ec2:Tenancy": p.get("Placement.Tenancy", "default"), "ec2:RootDeviceType": "ebs",
                     "ec2:InstanceMarketType": "spot" if p.get("InstanceMarketOptions.MarketType") == "spot"
                     else "on-demand"})
        tokens = p.get("MetadataOptions.HttpTokens") or (template.get("MetadataOptions") or {}).get("HttpTokens")
        keys["ec2:MetadataHttpTokens"] = tokens or "optional"
        profile = _profile_arn(request, p.get("IamInstanceProfile.Arn") or p.get("IamInstanceProfile.Name"))
        if profile:
            keys["ec2:InstanceProfile"] = profile
        if template.get("_arn"):
            keys["ec2:LaunchTemplate"] = template["_arn"]
    if kind == "network-interface" and p.get("SubnetId"):
        keys["ec2:Subnet"] = _arn(request.region, request.account, "subnet", p["SubnetId"])
    return keys


def _arn(region: str, account: str, kind: str, ident: str) -> str:
    from phoenixci.localcloud.patches.resource_arns import partition_for

    return f"arn:{partition_for(region)}:ec2:{region}:{account}:{kind}/{ident}"


def _launch_template_data(request: Request) -> dict[str, Any]:
    p = request.params
    ident, name = p.get("LaunchTemplate.LaunchTemplateId"), p.get("LaunchTemplate.LaunchTemplateName")
    if not ident and not name:
        return {}
    backend = _ec2(request.account, request.region)
    try:
        template = backend.get_launch_template(ident) if ident else backend.get_launch_template_by_name(name)
        version = p.get("LaunchTemplate.Version", "$Default")
        chosen = (template.latest_version() if version == "$Latest" else template.default_version()
                  if version in ("", "$Default") else template.get_version(int(version)))
        data = dict(chosen.data)
    except Exception:  # noqa: BLE001 - EC2 itself reports a bad launch template
        return {}
    data["_arn"] = _arn(request.region, request.account, "launch-template", str(template.id))
    return data


def _profile_arn(request: Request, profile: str | None) -> str | None:
    if not profile or profile.startswith("arn:"):
        return profile
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    try:
        return str(iam_backends[request.account][get_partition(request.region)].get_instance_profile(profile).arn)
    except Exception:  # noqa: BLE001 - unknown profiles are EC2's error to report
        return None


def _existing_ec2_keys(account: str, region: str, kind: str, ident: str) -> dict[str, Any]:
    backend = _ec2(account, region)
    resource_id = ident
    if kind == "key-pair":
        resource_id = next((k.id for k in backend.key_pairs.values() if k.key_name == ident), ident)
    tags = dict(backend.tags.get(resource_id, {}))
    keys: dict[str, Any] = {**tag_keys("aws:ResourceTag", tags), **tag_keys("ec2:ResourceTag", tags)}
    if kind == "instance":
        keys.update(_instance_keys(backend, account, region, ident))
    return keys


def _instance_keys(backend: Any, account: str, region: str, instance_id: str) -> dict[str, Any]:
    instance = backend.get_instance_by_id(instance_id)
    if instance is None:
        return {}
    keys: dict[str, Any] = {"ec2:InstanceType": str(instance.instance_type), "ec2:Tenancy": "default",
                            "ec2:RootDeviceType": "ebs", "ec2:InstanceMarketType": "on-demand",
                            "ec2:MetadataHttpTokens": str(instance.metadata_options.http_tokens)}
    if instance.placement.zone:
        keys["ec2:AvailabilityZone"] = str(instance.placement.zone)
    if instance.subnet_id:
        keys["ec2:Subnet"] = _arn(region, account, "subnet", str(instance.subnet_id))
    if instance.vpc_id:
        keys["ec2:Vpc"] = _arn(region, account, "vpc", str(instance.vpc_id))
    association = backend.iam_instance_profile_associations.get(instance_id)
    if association is not None:
        keys["ec2:InstanceProfile"] = str(association.iam_instance_profile.arn)
    return keys


def _stack_keys(account: str, region: str, rest: str) -> dict[str, Any]:
    from moto.cloudformation.models import cloudformation_backends

    name = rest.split("/")[1] if rest.count("/") >= 1 else ""
    for stack in cloudformation_backends[account][region].stacks.values():
        if (stack.name == name or stack.stack_id.endswith(rest)) and stack.status != "DELETE_COMPLETE":
            return tag_keys("aws:ResourceTag", _tag_map(stack.tags or {}))
    return {}


def _iam_keys(account: str, resource: str, rest: str) -> dict[str, Any]:
    from moto.iam.models import iam_backends

    backend = iam_backends[account][resource.split(":")[1]]
    kind, _, path_name = rest.partition("/")
    name = path_name.rsplit("/", 1)[-1]
    try:
        if kind == "role":
            tags = _tag_map(backend.get_role(name).tags)
        elif kind == "user":
            tags = _tag_map(backend.list_user_tags(name))
        elif kind == "instance-profile":
            tags = _tag_map(getattr(backend.get_instance_profile(name), "tags", {}) or {})
        else:
            return {}
    except Exception:  # noqa: BLE001 - a resource that does not exist has no tags
        return {}
    return {**tag_keys("aws:ResourceTag", tags), **tag_keys("iam:ResourceTag", tags)}


def _object_keys(request: Request, rest: str) -> dict[str, Any]:
    from moto.s3.models import s3_backends

    bucket, _, key = rest.partition("/")
    try:
        backend = s3_backends[request.account]["aws"]
        found = backend.get_object(bucket, key)
        tags = _tag_map(backend.get_object_tagging(found)) if found is not None else {}
    except Exception:  # noqa: BLE001 - a missing object has no tags
        return {}
    return tag_keys("s3:ExistingObjectTag", tags)
