"""Find what a run left behind, by its ``phoenixci:run-id`` tag, and sweep it.

Checked through the API, service by service: stacks, buckets, instances, Elastic IPs, key
pairs, VPCs, security groups, IAM roles and instance profiles.
"""
from __future__ import annotations

import contextlib
import datetime
import logging

from botocore.exceptions import ClientError

from phoenixci import stacks
from phoenixci.backends import Backend
from phoenixci.errors import ConfigError, LeakError

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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` → seconds; ConfigError for anything else."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        seconds = float(value) * _UNITS[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"--older-than {text!r} is not a duration: use a number and a unit, "
                          "e.g. 90s, 30m, 2h or 1d") from None
    if seconds < 0:
        raise ConfigError(f"--older-than {text!r} is negative")
    return seconds


def run_ages(backend: Backend) -> dict[str, float]:
    """Run id → seconds since its oldest stack or key pair was created (what the tags can see)."""
    cfn, ec2 = backend.client("cloudformation"), backend.client("ec2")
    now = datetime.datetime.now(datetime.UTC)
    ages: dict[str, float] = {}

    def seen(run: str | None, created: datetime.datetime | None) -> None:
        if run and created is not None:
            ages[run] = max(ages.get(run, 0.0), (now - created).total_seconds())

    for stack in stacks.list_stacks(cfn):
        seen(stack.tags.get(TAG), stack.created)
    for kp in ec2.describe_key_pairs()["KeyPairs"]:
        seen(_tags(kp.get("Tags")).get(TAG), kp.get("CreateTime"))
    return ages


def old_runs(backend: Backend, seconds: float, run_id: str | None = None) -> list[str]:
    """The runs (or ``run_id``) whose resources are at least ``seconds`` old."""
    return sorted(run for run, age in run_ages(backend).items() if age >= seconds and run_id in (None, run))


def sweep_older_than(backend: Backend, seconds: float, run_id: str | None = None) -> list[str]:
    """Sweep every run (or ``run_id``) whose resources are at least ``seconds`` old."""
    return [item for run in old_runs(backend, seconds, run_id) for item in sweep(backend, run)]


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
