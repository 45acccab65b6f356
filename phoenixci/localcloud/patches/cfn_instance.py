"""CloudFormation instances get every property AWS honours, and launch templates their
metadata options.

moto 5.2.5's ``Instance.create_from_cloudformation_json`` passes on only ImageId, UserData,
SecurityGroups (names), InstanceType, SubnetId, KeyName, PrivateIpAddress, block devices,
Tags and IamInstanceProfile: ``SecurityGroupIds`` (the instance gets the VPC default group),
``NetworkInterfaces`` and ``LaunchTemplate`` are dropped. And ``run_instances`` with a launch
template ignores the template's ``MetadataOptions``, so ``HttpTokens: required`` is lost.

AWS behaviour restored:
- ``SecurityGroupIds`` / ``NetworkInterfaces[DeviceIndex 0].GroupSet`` decide the groups;
- ``LaunchTemplate`` is used (image, type, key, groups, block devices, metadata options);
- an instance launched from a launch template has the template's ``MetadataOptions`` unless
  the request gives its own.

Hooks: ``moto.ec2.models.instances.Instance.create_from_cloudformation_json`` (replaced) and
``moto.ec2.models.instances.InstanceBackend.run_instances`` (wrapped).
"""
from __future__ import annotations

import functools
from typing import Any

from phoenixci.localcloud.patches import require

MARK = "_phoenixci_cfn_instance"
DEFAULT_ROOT_GIB = 8


def _modules() -> tuple[Any, Any]:
    from moto.ec2.models import instances

    return instances.Instance, instances.InstanceBackend


def check() -> None:
    instance_cls, backend_cls = _modules()
    require(instance_cls, "create_from_cloudformation_json")
    require(backend_cls, "run_instances")
    require(backend_cls, "_get_template_from_args")


def _metadata_options(options: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation / launch-template values as the API's MetadataOptions parameters."""
    return {k: str(v) for k, v in options.items() if v is not None}


def _sized(mappings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Block devices with a size: AWS takes an omitted size from the AMI's snapshot (8 GiB
    for moto's images); moto refuses a volume with neither size nor snapshot."""
    sized = []
    for mapping in mappings:
        ebs = dict(mapping.get("Ebs") or {})
        if ebs and not ebs.get("VolumeSize") and not ebs.get("SnapshotId"):
            ebs["VolumeSize"] = DEFAULT_ROOT_GIB
        sized.append({**mapping, "Ebs": ebs} if ebs else dict(mapping))
    return sized


def _launch_template_arg(props: dict[str, Any]) -> dict[str, str] | None:
    spec = props.get("LaunchTemplate")
    if not spec:
        return None
    arg = {k: str(spec[k]) for k in ("LaunchTemplateId", "LaunchTemplateName") if spec.get(k)}
    if spec.get("Version") not in (None, "", "$Default"):
        version = str(spec["Version"])
        if version != "$Latest":
            arg["Version"] = version
    return arg


def _group_name(backend: Any, group: str) -> str:
    """``SecurityGroups`` may hold names or ids (moto's own code assumed ids)."""
    if group.startswith("sg-"):
        found = backend.get_security_group_from_id(group)
        if found is not None:
            return str(found.name)
    return group


def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                    account_id: str, region_name: str, **kwargs: Any) -> Any:
    from moto.ec2.models import ec2_backends

    props = cloudformation_json["Properties"]
    backend = ec2_backends[account_id][region_name]
    group_names = [_group_name(backend, g) for g in props.get("SecurityGroups", [])]
    group_ids = list(props.get("SecurityGroupIds", []))
    subnet_id = props.get("SubnetId")
    private_ip = props.get("PrivateIpAddress")
    for nic in props.get("NetworkInterfaces", []):
        if str(nic.get("DeviceIndex", "0")) == "0":
            subnet_id = nic.get("SubnetId", subnet_id)
            group_ids += list(nic.get("GroupSet", []))
            private_ip = nic.get("PrivateIpAddress", private_ip)
    run_kwargs: dict[str, Any] = {
        "instance_type": props.get("InstanceType", "m1.small"),
        "is_instance_type_default": not props.get("InstanceType"),
        "subnet_id": subnet_id,
        "key_name": props.get("KeyName"),
        "private_ip": private_ip,
        "security_group_ids": group_ids,
    }
    if "BlockDeviceMappings" in props:
        run_kwargs["block_device_mappings"] = props["BlockDeviceMappings"]
    launch_template = _launch_template_arg(props)
    if launch_template:
        run_kwargs["launch_template"] = launch_template
    reservation = backend.run_instances(image_id=props.get("ImageId"), count=1,
                                        user_data=props.get("UserData"),
                                        security_group_names=group_names, **run_kwargs)
    instance = reservation.instances[0]
    for tag in props.get("Tags", []):
        instance.add_tag(tag["Key"], tag["Value"])
    if props.get("IamInstanceProfile"):
        backend.associate_iam_instance_profile(instance_id=instance.id,
                                               iam_instance_profile_name=props["IamInstanceProfile"])
    return instance


def install() -> None:
    instance_cls, backend_cls = _modules()
    if getattr(backend_cls.run_instances, MARK, False):
        return
    original_run = backend_cls.run_instances

    @functools.wraps(original_run)
    def run_instances(self: Any, image_id: str, count: int, user_data: Any,
                      security_group_names: list[str], **kwargs: Any) -> Any:
        template_arg = kwargs.get("launch_template")
        if template_arg and not kwargs.get("metadata_options"):
            data = self._get_template_from_args(template_arg).data
            if data.get("MetadataOptions"):
                kwargs["metadata_options"] = _metadata_options(data["MetadataOptions"])
            if not image_id and data.get("ImageId"):
                image_id = data["ImageId"]
            if "block_device_mappings" not in kwargs and data.get("BlockDeviceMappings"):
                kwargs["block_device_mappings"] = _sized(data["BlockDeviceMappings"])
        return original_run(self, image_id, count, user_data, security_group_names, **kwargs)

    setattr(run_instances, MARK, True)
    backend_cls.run_instances = run_instances
    instance_cls.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)
