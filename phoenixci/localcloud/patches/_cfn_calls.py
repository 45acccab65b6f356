"""The API calls CloudFormation makes for a stack resource, so they can be authorised as the caller.

On AWS a stack created without a service role performs each resource operation with the
permissions of the principal who called CreateStack/DeleteStack (aws:ViaAWSService true,
aws:CalledVia cloudformation.amazonaws.com). For each resource type our templates and
typical templates use, :func:`create_calls` / :func:`delete_calls` list the calls
(service, API action, resource ARNs, parameters in the API's query form, extra context
keys). EC2 calls carry ``TagSpecification.N`` so that tag-on-create (``ec2:CreateTags`` with
``ec2:CreateAction``) is checked like a direct call. Types not listed here are not checked.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from phoenixci.localcloud.patches.resource_arns import partition_for, resource_arns


@dataclass(frozen=True)
class Call:
    service: str
    action: str
    arns: list[str]
    params: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Where:
    region: str
    account: str
    stack_tags: Mapping[str, str] = field(default_factory=dict)

    def ec2(self, kind: str, ident: Any = "*") -> str:
        return f"arn:{partition_for(self.region)}:ec2:{self.region}:{self.account}:{kind}/{ident or '*'}"

    def iam(self, kind: str, name: str, path: Any = "/") -> str:
        path = str(path or "/")
        return f"arn:{partition_for(self.region)}:iam::{self.account}:{kind}{path}{name}"

    def s3(self, bucket: str) -> str:
        return f"arn:{partition_for(self.region)}:s3:::{bucket}"


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _tags(props: Mapping[str, Any], where: Where) -> dict[str, str]:
    tags = {k: v for k, v in where.stack_tags.items() if not k.startswith("aws:")}
    for tag in _list(props.get("Tags")):
        if isinstance(tag, Mapping) and "Key" in tag:
            tags[str(tag["Key"])] = str(tag.get("Value", ""))
    return tags


def tag_spec(params: dict[str, str], n: int, kind: str, tags: Mapping[str, str]) -> dict[str, str]:
    if tags:
        params[f"TagSpecification.{n}.ResourceType"] = kind
        for i, (key, value) in enumerate(tags.items(), start=1):
            params[f"TagSpecification.{n}.Tag.{i}.Key"] = key
            params[f"TagSpecification.{n}.Tag.{i}.Value"] = value
    return params


def _ec2_create(kind: str, action: str, *parents: tuple[str, Any]) -> Callable[..., list[Call]]:
    def calls(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
        arns = [where.ec2(kind)] + [where.ec2(pkind, props.get(prop)) for pkind, prop in parents if props.get(prop)]
        return [Call("ec2", action, arns, tag_spec({}, 1, kind, _tags(props, where)))]

    return calls


def _instance(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    p: dict[str, str] = {}
    for prop in ("ImageId", "InstanceType", "KeyName", "SubnetId"):
        if props.get(prop):
            p[prop] = str(props[prop])
    groups = _list(props.get("SecurityGroupIds"))
    for nic in _list(props.get("NetworkInterfaces")):
        if str(nic.get("DeviceIndex", "0")) == "0":
            p["SubnetId"] = str(nic.get("SubnetId", p.get("SubnetId", "")))
            groups += _list(nic.get("GroupSet"))
    for i, group in enumerate(groups, start=1):
        p[f"SecurityGroupId.{i}"] = str(group)
    profile = props.get("IamInstanceProfile")
    if profile:
        p["IamInstanceProfile.Arn" if str(profile).startswith("arn:") else "IamInstanceProfile.Name"] = str(profile)
    template = props.get("LaunchTemplate") or {}
    for key in ("LaunchTemplateId", "LaunchTemplateName", "Version"):
        if template.get(key) not in (None, ""):
            p[f"LaunchTemplate.{key}"] = str(template[key])
    tag_spec(p, 1, "instance", _tags(props, where))
    return [Call("ec2", "RunInstances", resource_arns("ec2", "RunInstances", p, where.region, where.account) or [], p)]


def _launch_template(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    tags = {k: v for k, v in where.stack_tags.items() if not k.startswith("aws:")}
    for spec in _list(props.get("TagSpecifications")):
        if spec.get("ResourceType") == "launch-template":
            tags.update({str(t["Key"]): str(t.get("Value", "")) for t in _list(spec.get("Tags"))})
    params = tag_spec({"LaunchTemplateName": str(props.get("LaunchTemplateName") or name)}, 1,
                      "launch-template", tags)
    return [Call("ec2", "CreateLaunchTemplate", [where.ec2("launch-template")], params)]


def _security_group(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    calls = _ec2_create("security-group", "CreateSecurityGroup", ("vpc", "VpcId"))(props, name, where)
    for rules, action in (("SecurityGroupIngress", "AuthorizeSecurityGroupIngress"),
                          ("SecurityGroupEgress", "AuthorizeSecurityGroupEgress")):
        if props.get(rules):
            calls.append(Call("ec2", action, [where.ec2("security-group")]))
    return calls


def _eip(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    calls = _ec2_create("elastic-ip", "AllocateAddress")(props, name, where)
    if props.get("InstanceId"):
        calls.append(Call("ec2", "AssociateAddress", [where.ec2("elastic-ip"), where.ec2("instance", props["InstanceId"])]))
    return calls


def _simple(service: str, action: str, arn: Callable[[Mapping[str, Any], str, Where], list[str]]) -> Callable[..., list[Call]]:
    return lambda props, name, where: [Call(service, action, arn(props, name, where))]


def _bucket(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    arn = [where.s3(str(props.get("BucketName") or name))]
    calls = [Call("s3", "CreateBucket", arn)]
    for prop, action in (("VersioningConfiguration", "PutBucketVersioning"),
                         ("BucketEncryption", "PutEncryptionConfiguration"),
                         ("PublicAccessBlockConfiguration", "PutBucketPublicAccessBlock"),
                         ("OwnershipControls", "PutBucketOwnershipControls"), ("Tags", "PutBucketTagging")):
        if props.get(prop):
            calls.append(Call("s3", action, arn))
    return calls


def _role(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    arn = [where.iam("role", str(props.get("RoleName") or name), props.get("Path"))]
    params = {f"Tags.member.{i}.{f}": v for i, (k, val) in enumerate(_tags(props, where).items(), start=1)
              for f, v in (("Key", k), ("Value", val))}
    extra = {"iam:PermissionsBoundary": str(props["PermissionsBoundary"])} if props.get("PermissionsBoundary") else {}
    calls = [Call("iam", "CreateRole", arn, params, extra)]
    calls += [Call("iam", "PutRolePolicy", arn) for _ in _list(props.get("Policies"))[:1]]
    calls += [Call("iam", "AttachRolePolicy", arn, extra={"iam:PolicyARN": str(p)})
              for p in _list(props.get("ManagedPolicyArns"))]
    return calls


def _inline_policy(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    return ([Call("iam", "PutRolePolicy", [where.iam("role", str(r))]) for r in _list(props.get("Roles"))]
            + [Call("iam", "PutUserPolicy", [where.iam("user", str(u))]) for u in _list(props.get("Users"))]
            + [Call("iam", "PutGroupPolicy", [where.iam("group", str(g))]) for g in _list(props.get("Groups"))])


def _instance_profile(props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    arn = [where.iam("instance-profile", str(props.get("InstanceProfileName") or name), props.get("Path"))]
    calls = [Call("iam", "CreateInstanceProfile", arn)]
    for role in _list(props.get("Roles")):
        calls += [Call("iam", "AddRoleToInstanceProfile", arn),
                  Call("iam", "PassRole", [where.iam("role", str(role))])]
    return calls


CREATE: dict[str, Callable[[Mapping[str, Any], str, Where], list[Call]]] = {
    "AWS::EC2::Instance": _instance,
    "AWS::EC2::LaunchTemplate": _launch_template,
    "AWS::EC2::VPC": _ec2_create("vpc", "CreateVpc"),
    "AWS::EC2::Subnet": _ec2_create("subnet", "CreateSubnet", ("vpc", "VpcId")),
    "AWS::EC2::InternetGateway": _ec2_create("internet-gateway", "CreateInternetGateway"),
    "AWS::EC2::VPCGatewayAttachment": _simple("ec2", "AttachInternetGateway", lambda p, n, w: [
        w.ec2("internet-gateway", p.get("InternetGatewayId")), w.ec2("vpc", p.get("VpcId"))]),
    "AWS::EC2::RouteTable": _ec2_create("route-table", "CreateRouteTable", ("vpc", "VpcId")),
    "AWS::EC2::Route": _simple("ec2", "CreateRoute", lambda p, n, w: [w.ec2("route-table", p.get("RouteTableId"))]),
    "AWS::EC2::SubnetRouteTableAssociation": _simple("ec2", "AssociateRouteTable", lambda p, n, w: [
        w.ec2("route-table", p.get("RouteTableId")), w.ec2("subnet", p.get("SubnetId"))]),
    "AWS::EC2::SecurityGroup": _security_group,
    "AWS::EC2::SecurityGroupIngress": _simple("ec2", "AuthorizeSecurityGroupIngress",
                                              lambda p, n, w: [w.ec2("security-group", p.get("GroupId"))]),
    "AWS::EC2::SecurityGroupEgress": _simple("ec2", "AuthorizeSecurityGroupEgress",
                                             lambda p, n, w: [w.ec2("security-group", p.get("GroupId"))]),
    "AWS::EC2::EIP": _eip,
    "AWS::EC2::EIPAssociation": _simple("ec2", "AssociateAddress", lambda p, n, w: [
        w.ec2("elastic-ip", p.get("AllocationId")), w.ec2("instance", p.get("InstanceId"))]),
    "AWS::EC2::KeyPair": _simple("ec2", "CreateKeyPair", lambda p, n, w: [w.ec2("key-pair", p.get("KeyName") or n)]),
    "AWS::EC2::Volume": _ec2_create("volume", "CreateVolume"),
    "AWS::EC2::NetworkAcl": _ec2_create("network-acl", "CreateNetworkAcl", ("vpc", "VpcId")),
    "AWS::EC2::NetworkAclEntry": _simple("ec2", "CreateNetworkAclEntry",
                                         lambda p, n, w: [w.ec2("network-acl", p.get("NetworkAclId"))]),
    "AWS::EC2::SubnetNetworkAclAssociation": _simple("ec2", "ReplaceNetworkAclAssociation", lambda p, n, w: [
        w.ec2("network-acl", p.get("NetworkAclId")), w.ec2("subnet", p.get("SubnetId"))]),
    "AWS::S3::Bucket": _bucket,
    "AWS::S3::BucketPolicy": _simple("s3", "PutBucketPolicy", lambda p, n, w: [w.s3(str(p.get("Bucket")))]),
    "AWS::IAM::Role": _role,
    "AWS::IAM::Policy": _inline_policy,
    "AWS::IAM::ManagedPolicy": _simple("iam", "CreatePolicy", lambda p, n, w: [
        w.iam("policy", str(p.get("ManagedPolicyName") or n), p.get("Path"))]),
    "AWS::IAM::InstanceProfile": _instance_profile,
    "AWS::IAM::User": _simple("iam", "CreateUser", lambda p, n, w: [w.iam("user", str(p.get("UserName") or n), p.get("Path"))]),
    "AWS::IAM::AccessKey": _simple("iam", "CreateAccessKey", lambda p, n, w: [w.iam("user", str(p.get("UserName")))]),
}


def create_calls(resource_type: str, props: Mapping[str, Any], name: str, where: Where) -> list[Call]:
    """The calls that create a ``resource_type`` with (resolved) ``props`` named ``name``."""
    maker = CREATE.get(resource_type)
    return maker(props or {}, name, where) if maker else []


#: (service, action, ARN kind) per type for deletion; the ARN names the physical id
DELETE: dict[str, tuple[str, str, str]] = {
    "AWS::EC2::Instance": ("ec2", "TerminateInstances", "instance"),
    "AWS::EC2::LaunchTemplate": ("ec2", "DeleteLaunchTemplate", "launch-template"),
    "AWS::EC2::VPC": ("ec2", "DeleteVpc", "vpc"),
    "AWS::EC2::Subnet": ("ec2", "DeleteSubnet", "subnet"),
    "AWS::EC2::InternetGateway": ("ec2", "DeleteInternetGateway", "internet-gateway"),
    "AWS::EC2::RouteTable": ("ec2", "DeleteRouteTable", "route-table"),
    "AWS::EC2::SecurityGroup": ("ec2", "DeleteSecurityGroup", "security-group"),
    "AWS::EC2::EIP": ("ec2", "ReleaseAddress", "elastic-ip"),
    "AWS::EC2::KeyPair": ("ec2", "DeleteKeyPair", "key-pair"),
    "AWS::EC2::Volume": ("ec2", "DeleteVolume", "volume"),
    "AWS::EC2::NetworkAcl": ("ec2", "DeleteNetworkAcl", "network-acl"),
    "AWS::S3::Bucket": ("s3", "DeleteBucket", "bucket"),
    "AWS::S3::BucketPolicy": ("s3", "DeleteBucketPolicy", "bucket"),
    "AWS::IAM::Role": ("iam", "DeleteRole", "role"),
    "AWS::IAM::InstanceProfile": ("iam", "DeleteInstanceProfile", "instance-profile"),
    "AWS::IAM::User": ("iam", "DeleteUser", "user"),
    "AWS::IAM::ManagedPolicy": ("iam", "DeletePolicy", "policy"),
}


def delete_calls(resource_type: str, physical_id: str, where: Where) -> list[Call]:
    """The call that deletes the ``resource_type`` whose physical id is ``physical_id``."""
    found = DELETE.get(resource_type)
    if not found or not physical_id:
        return []
    service, action, kind = found
    if physical_id.startswith("arn:"):
        arn = physical_id
    elif service == "ec2":
        arn = where.ec2(kind, physical_id)
    elif service == "s3":
        arn = where.s3(physical_id)
    else:
        arn = where.iam(kind, physical_id.rsplit("/", 1)[-1])
    return [Call(service, action, [arn])]
