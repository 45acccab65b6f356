"""Deploy, the phoenix way: a brand-new server per release, the old one retired only after
the new one serves.

1. create stack ``app-<revision>`` from ``infra/app-server.yaml`` and wait for it;
2. health-gate the new instance (``/health`` 200 and ``/version`` equal to the revision); the
   gate fails at once when the instance's console shows its bootstrap's ``FAILED`` line (the
   artifact did not verify, or the app keeps exiting) instead of waiting out the timeout;
3. move the app Elastic IP to it (and check the move in the API);
4. wait until the address itself serves the new revision (``address_check``: AWS applies an
   association with a delay): ``http`` polls ``/version`` through the public address until it
   names the revision (``address_timeout``); ``none`` trusts the API; ``auto`` (default) is
   ``none`` for an address in 127.0.0.0/8 — the local cloud's host-side listener, which it
   retargets before AssociateAddress returns, and which from inside an instance would be the
   instance's own loopback — and ``http`` otherwise;
5. drain: give the old server's open connections ``drain`` seconds to finish (like an ELB
   deregistration delay; skipped when no server held the address);
6. retire the older ``app-*`` stacks.

Any failure in 1–4 deletes the new stack and leaves the Elastic IP and the old server alone
(if the address had already moved, it is moved back). A failure in 6 is reported; the new
server keeps serving.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from phoenixci import stacks
from phoenixci.errors import ConfigError, DeployError, PhoenixError
from phoenixci.pipeline.clock import PhaseClock
from phoenixci.pipeline.health import (
    HealthCheck,
    Target,
    address_check_mode,
    http_health_check,
    wait_for_address,
)
from phoenixci.pipeline.retire import RetireError, app_stack_name, retire
from phoenixci.templates import Template, load_template

log = logging.getLogger(__name__)

_REVISION = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: seconds the old server keeps its open connections after the move (an ELB deregistration delay)
DEFAULT_DRAIN = 5.0
DEFAULT_ADDRESS_TIMEOUT = 120.0
_sleep = time.sleep  # the drain wait (tests replace it)


@dataclass(frozen=True)
class Environment:
    """Where app servers go: read from the infrastructure stack's outputs and parameters."""

    run_id: str
    artifact_bucket: str
    image_id: str
    key_name: str
    subnet_id: str
    security_group_id: str
    instance_profile: str
    eip_allocation_id: str
    instance_type: str = "t3.small"
    endpoint_url: str = ""
    app_port: int = 8080

    @classmethod
    def from_infra_stack(cls, stack: stacks.Stack, *, endpoint_url: str = "") -> Environment:
        params = stack.parameters
        return cls(run_id=stack.tags.get(stacks.RUN_ID_TAG) or params.get("RunId", ""),
                   artifact_bucket=stack.output("ArtifactBucket"),
                   image_id=params.get("ImageId", ""), key_name=params.get("KeyName", ""),
                   subnet_id=stack.output("SubnetId"),
                   security_group_id=stack.output("AppSecurityGroupId"),
                   instance_profile=stack.output("AppInstanceProfile"),
                   eip_allocation_id=stack.output("AppEipAllocationId"),
                   instance_type=params.get("InstanceType", "t3.small"),
                   endpoint_url=endpoint_url)


@dataclass
class DeployResult:
    revision: str
    stack: str
    instance_id: str
    address: str
    public_ip: str
    previous_instance_id: str | None
    retired: list[str] = field(default_factory=list)
    retire_error: str | None = None
    already_live: bool = False
    #: how the moved address was checked: "http" (probed until it served the revision) or "none"
    address_check: str = "none"
    #: seconds the old server was given to finish its open connections before retiring
    drained: float = 0.0
    #: seconds per phase: stack, health, move (and the address check), drain, retire
    timings: dict[str, float] = field(default_factory=dict)


def _check_inputs(revision: str, sha256: str, env: Environment) -> None:
    if not _REVISION.match(revision):
        raise ConfigError(f"revision {revision!r} is not a full 40-character git sha "
                          "(use `git rev-parse HEAD`)")
    if not _SHA256.match(sha256):
        raise ConfigError(f"artifact sha256 {sha256!r} is not 64 lowercase hex characters")
    missing = [k for k in ("run_id", "artifact_bucket", "image_id", "key_name", "subnet_id",
                           "security_group_id", "instance_profile", "eip_allocation_id")
               if not getattr(env, k)]
    if missing:
        raise ConfigError(f"deploy environment incomplete: {', '.join(missing)} missing "
                          "(is the infrastructure stack complete?)")


def eip_holder(ec2: Any, allocation_id: str) -> tuple[str | None, str]:
    """(instance id the app Elastic IP points to or None, its public address)."""
    try:
        addr = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]
    except (ClientError, IndexError) as e:
        raise DeployError(f"app Elastic IP {allocation_id} not found: {e}") from e
    return addr.get("InstanceId") or None, addr["PublicIp"]


def move_eip(ec2: Any, allocation_id: str, instance_id: str) -> None:
    """Associate the app Elastic IP with ``instance_id`` and check it points there."""
    try:
        ec2.associate_address(AllocationId=allocation_id, InstanceId=instance_id, AllowReassociation=True)
    except ClientError as e:
        err = e.response.get("Error", {})
        raise DeployError(f"cannot move Elastic IP {allocation_id} to {instance_id}: "
                          f"{err.get('Code')}: {err.get('Message')}") from e
    holder, _ = eip_holder(ec2, allocation_id)
    if holder != instance_id:
        raise DeployError(f"Elastic IP {allocation_id} points to {holder}, not {instance_id}, after the move")


def _instance_address(ec2: Any, instance_id: str) -> str:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instance = found[0]["Instances"][0]
    return str(instance.get("PrivateIpAddress") or "")


def deploy(cfn: Any, ec2: Any, s3: Any, env: Environment, *, revision: str, artifact_key: str,
           artifact_sha256: str, health_check: HealthCheck = http_health_check,
           health_timeout: float = 300.0, stack_timeout: float = stacks.DEFAULT_TIMEOUT,
           template: Template | None = None, address_check: str = "auto",
           address_timeout: float = DEFAULT_ADDRESS_TIMEOUT, drain: float = DEFAULT_DRAIN) -> DeployResult:
    """Release ``revision`` on a new server; see the module docstring for the steps.

    ``address_check`` ("auto" | "http" | "none"), ``address_timeout`` and ``drain`` (seconds)
    control steps 4 and 5.
    """
    _check_inputs(revision, artifact_sha256, env)
    if drain < 0 or address_timeout <= 0:
        raise ConfigError(f"drain ({drain:g}s) must be >= 0 and address timeout ({address_timeout:g}s) > 0")
    template = template or load_template("app-server")
    name = app_stack_name(revision)
    previous, public_ip = eip_holder(ec2, env.eip_allocation_id)
    check = address_check_mode(address_check, public_ip)

    existing = stacks.describe(cfn, name)
    if existing is not None and existing.status == "CREATE_COMPLETE" and previous is not None and \
            previous == existing.outputs.get("InstanceId"):
        log.info("%s already serves %s", name, revision)
        return DeployResult(revision, name, previous, _instance_address(ec2, previous), public_ip,
                            previous, already_live=True)
    if existing is not None:
        log.warning("removing leftover stack %s (%s) before redeploying", name, existing.status)
        stacks.delete(cfn, s3, name, timeout=stack_timeout)

    params = {"Revision": revision, "RunId": env.run_id, "ArtifactBucket": env.artifact_bucket,
              "ArtifactKey": artifact_key, "ArtifactSha256": artifact_sha256,
              "ImageId": env.image_id, "InstanceType": env.instance_type, "KeyName": env.key_name,
              "SubnetId": env.subnet_id, "SecurityGroupId": env.security_group_id,
              "InstanceProfile": env.instance_profile, "AwsEndpointUrl": env.endpoint_url,
              "AppPort": str(env.app_port)}
    moved = False
    clock = PhaseClock()
    try:
        stack = stacks.create(cfn, s3, name, template, params, run_id=env.run_id,
                              tags={"phoenixci:revision": revision}, timeout=stack_timeout)
    except PhoenixError as e:
        raise DeployError(f"deploy of {revision} failed, {previous or 'nothing'} keeps serving: {e}") from e
    instance_id = ""
    try:
        clock.lap("stack")
        instance_id = stack.output("InstanceId")
        address = _instance_address(ec2, instance_id)
        health_check(Target(instance_id, address, env.app_port, revision,
                            gave_up=bootstrap_failure(ec2, instance_id)), health_timeout)
        clock.lap("health")
        moved = True  # from here on the address may have moved, even if the call fails
        move_eip(ec2, env.eip_allocation_id, instance_id)
        if check == "http":
            wait_for_address(public_ip, env.app_port, revision, address_timeout)
        clock.lap("move")
    except (PhoenixError, ClientError, BotoCoreError) as e:
        console = console_tail(ec2, instance_id)  # the server is gone once its stack is deleted
        _undo(cfn, ec2, s3, env, name, previous, moved, stack_timeout)
        raise DeployError(f"deploy of {revision} failed, {previous or 'nothing'} keeps serving: {e}",
                          console=console) from e
    except BaseException:
        _undo(cfn, ec2, s3, env, name, previous, moved, stack_timeout)
        raise
    log.info("%s now serves %s at %s", instance_id, revision, public_ip)

    result = DeployResult(revision, name, instance_id, address, public_ip, previous, address_check=check)
    if previous is not None and drain > 0:
        log.info("draining %s for %gs before retiring it", previous, drain)
        _sleep(drain)
        result.drained = drain
    clock.lap("drain")
    try:
        result.retired = retire(cfn, s3, keep=name, run_id=env.run_id, timeout=stack_timeout).retired
    except RetireError as e:
        result.retire_error = str(e)
    clock.lap("retire")
    result.timings = clock.laps
    return result


#: what the app server's bootstrap (infra/app-server.yaml) prints to the console when it gives up
BOOTSTRAP_FAILED = "phoenixapp-bootstrap: FAILED: "


def bootstrap_failure(ec2: Any, instance_id: str, *, every: float = 3.0) -> Callable[[], str]:
    """A ``Target.gave_up`` that reads the instance's console at most every ``every`` seconds and
    returns what its bootstrap's FAILED line says ("" until there is one). On AWS the console
    lags by minutes, so there the health timeout decides; the local cloud's is live."""
    next_read = 0.0

    def gave_up() -> str:
        nonlocal next_read
        if time.monotonic() < next_read:
            return ""
        next_read = time.monotonic() + every
        text = _console(ec2, instance_id, quiet=True)
        failed = [line.split(BOOTSTRAP_FAILED, 1)[1].strip() for line in text.splitlines() if BOOTSTRAP_FAILED in line]
        return f"its bootstrap failed: {failed[-1]}" if failed else ""

    return gave_up


def console_tail(ec2: Any, instance_id: str, lines: int = 60) -> str:
    """The last ``lines`` of an instance's console (cloud-init's output), or "" if unreadable."""
    return "\n".join(_console(ec2, instance_id).splitlines()[-lines:]) if instance_id else ""


def _console(ec2: Any, instance_id: str, *, quiet: bool = False) -> str:
    """The instance's console output, "" if unreadable (said in the log unless ``quiet``)."""
    try:
        return str(ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or "")
    except (ClientError, BotoCoreError) as e:
        if not quiet:
            log.warning("console of %s unreadable: %s", instance_id, e)
        return ""


def _undo(cfn: Any, ec2: Any, s3: Any, env: Environment, name: str, previous: str | None,
          moved: bool, timeout: float) -> None:
    """Put things back as they were: the address on the old server, the new stack gone."""
    if moved:
        with contextlib.suppress(PhoenixError, ClientError, BotoCoreError):
            if previous:
                move_eip(ec2, env.eip_allocation_id, previous)
            else:
                addr = ec2.describe_addresses(AllocationIds=[env.eip_allocation_id])["Addresses"][0]
                if addr.get("AssociationId"):
                    ec2.disassociate_address(AssociationId=addr["AssociationId"])
    try:
        stacks.delete(cfn, s3, name, timeout=timeout)
    except PhoenixError as e:
        log.error("could not delete failed stack %s: %s", name, e)
