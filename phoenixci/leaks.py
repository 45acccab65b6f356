"""Find what a run left behind, by its ``phoenixci:run-id`` tag, and sweep it.

Checked through the API, service by service: stacks, buckets, instances, Elastic IPs, key
pairs, VPCs, security groups, IAM roles and instance profiles.
"""
from __future__ import annotations

import contextlib
import logging

from botocore.exceptions import ClientError

from phoenixci import stacks
from phoenixci.backends import Backend
from phoenixci.errors import LeakError

log = logging.getLogger(__name__)

TAG = stacks.RUN_ID_TAG


def _tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _matches(tags: dict[str, str], run_id: str | None) -> bool:
    value = tags.get(TAG)
    return value is not None and (run_id is None or value == run_id)


def leftovers(backend: Backend, run_id: str | None = None) -> list[str]:
    """Everything tagged with ``run_id`` (any phoenixci run when None) that still exists."""
    cfn, ec2, s3, iam = (backend.client(s) for s in ("cloudformation", "ec2", "s3", "iam"))
    found = [f"stack {s.name} ({s.status})" for s in stacks.list_stacks(cfn)
             if _matches(s.tags, run_id)]
    for bucket in s3.list_buckets().get("Buckets", []):
        try:
            tags = _tags(s3.get_bucket_tagging(Bucket=bucket["Name"]).get("TagSet"))
        except ClientError:
            continue
        if _matches(tags, run_id):
            found.append(f"bucket s3://{bucket['Name']}")
    for res in ec2.describe_instances()["Reservations"]:
        for inst in res["Instances"]:
            if inst["State"]["Name"] != "terminated" and _matches(_tags(inst.get("Tags")), run_id):
                found.append(f"instance {inst['InstanceId']} ({inst['State']['Name']})")
    for addr in ec2.describe_addresses()["Addresses"]:
        if _matches(_tags(addr.get("Tags")), run_id):
            found.append(f"elastic-ip {addr.get('AllocationId')} {addr['PublicIp']}")
    for kp in ec2.describe_key_pairs()["KeyPairs"]:
        if _matches(_tags(kp.get("Tags")), run_id):
            found.append(f"key-pair {kp['KeyName']}")
    for vpc in ec2.describe_vpcs()["Vpcs"]:
        if _matches(_tags(vpc.get("Tags")), run_id):
            found.append(f"vpc {vpc['VpcId']}")
    for sg in ec2.describe_security_groups()["SecurityGroups"]:
        if _matches(_tags(sg.get("Tags")), run_id):
            found.append(f"security-group {sg['GroupId']}")
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            with contextlib.suppress(ClientError):
                tags = _tags(iam.list_role_tags(RoleName=role["RoleName"]).get("Tags"))
                if _matches(tags, run_id):
                    found.append(f"iam-role {role['RoleName']}")
    return found


def assert_no_leftovers(backend: Backend, run_id: str) -> None:
    """Raise LeakError listing what ``run_id`` left behind."""
    left = leftovers(backend, run_id)
    if left:
        raise LeakError(f"run {run_id} left {len(left)} resource(s): {'; '.join(left)}", leftovers=left)


def sweep(backend: Backend, run_id: str | None = None) -> list[str]:
    """Delete the stacks and key pairs of ``run_id`` (every phoenixci run when None).

    App stacks go first (they use the infrastructure's network), then the rest.
    Returns what was removed.
    """
    cfn, s3, ec2 = backend.client("cloudformation"), backend.client("s3"), backend.client("ec2")
    removed = []
    own = [s for s in stacks.list_stacks(cfn) if _matches(s.tags, run_id)]
    for stack in sorted(own, key=lambda s: not s.name.startswith("app-")):
        stacks.delete(cfn, s3, stack.name)
        removed.append(f"stack {stack.name}")
    for kp in ec2.describe_key_pairs()["KeyPairs"]:
        if _matches(_tags(kp.get("Tags")), run_id):
            ec2.delete_key_pair(KeyName=kp["KeyName"])
            removed.append(f"key-pair {kp['KeyName']}")
    log.info("swept %d resource(s)", len(removed))
    return removed
