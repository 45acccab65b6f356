"""Stack create/delete/wait with outputs, events and tags, and guaranteed teardown.

Every stack is tagged ``phoenixci:run-id``. Deleting a stack empties its buckets first
(every object version) and then checks the buckets are really gone, because moto reports a
stack with a non-empty bucket as deleted and leaves the bucket behind.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from phoenixci.errors import ConfigError, LeakError, StackError, TemplateError
from phoenixci.templates import Template

log = logging.getLogger(__name__)

RUN_ID_TAG = "phoenixci:run-id"
DEFAULT_TIMEOUT = 900.0


@dataclass
class Stack:
    """A created stack: its identity, outputs and physical resources."""

    name: str
    stack_id: str
    status: str
    outputs: dict[str, str] = field(default_factory=dict)
    resources: list[dict[str, str]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    created: Any = None  # datetime of CreationTime, when the API gave one

    def output(self, key: str) -> str:
        try:
            return self.outputs[key]
        except KeyError:
            raise StackError(f"stack {self.name} has no output {key!r} (outputs: "
                             f"{', '.join(sorted(self.outputs)) or 'none'})", stack=self.name) from None

    def physical_id(self, logical_id: str) -> str:
        for res in self.resources:
            if res["LogicalResourceId"] == logical_id:
                return res["PhysicalResourceId"]
        raise StackError(f"stack {self.name} has no resource {logical_id!r}", stack=self.name)


def _error_message(e: ClientError) -> str:
    err = e.response.get("Error", {})
    return f"{err.get('Code', 'Error')}: {err.get('Message', str(e))}"


def describe(cfn: Any, name: str, *, resources: bool = True) -> Stack | None:
    """The stack named ``name`` (not deleted), or None; ``resources=False`` skips listing them."""
    try:
        found = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as e:
        if "does not exist" in e.response.get("Error", {}).get("Message", ""):
            return None
        raise StackError(f"cannot describe stack {name}: {_error_message(e)}", stack=name) from e
    live = [s for s in found if s["StackStatus"] != "DELETE_COMPLETE"]
    if not live:
        return None
    s = live[0]
    stack = Stack(name=s["StackName"], stack_id=s["StackId"], status=s["StackStatus"],
                  outputs={o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])},
                  tags={t["Key"]: t["Value"] for t in s.get("Tags", [])},
                  parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in s.get("Parameters", [])},
                  created=s.get("CreationTime"))
    if not resources:
        return stack
    with contextlib.suppress(ClientError):
        stack.resources = [
            {k: r.get(k, "") for k in ("LogicalResourceId", "PhysicalResourceId", "ResourceType",
                                       "ResourceStatus")}
            for r in cfn.describe_stack_resources(StackName=s["StackId"])["StackResources"]]
    return stack


def events(cfn: Any, name: str) -> list[dict[str, Any]]:
    """The stack's events, oldest first (empty when they cannot be read)."""
    try:
        pages = cfn.get_paginator("describe_stack_events").paginate(StackName=name)
        found = [e for page in pages for e in page["StackEvents"]]
    except (ClientError, BotoCoreError):
        return []
    return sorted(found, key=lambda e: e.get("Timestamp", 0))


def _failure(cfn: Any, name: str, status: str, verb: str) -> StackError:
    evs = events(cfn, name)
    failed = [e for e in evs if e.get("ResourceStatus", "").endswith("FAILED")
              and e.get("LogicalResourceId") != name]
    resource = failed[0]["LogicalResourceId"] if failed else None
    reason = (failed[0].get("ResourceStatusReason") if failed else None) or \
        next((e.get("ResourceStatusReason") for e in reversed(evs) if e.get("ResourceStatusReason")), None)
    msg = f"stack {name} failed to {verb} ({status})"
    if resource:
        msg += f": resource {resource} failed"
    if reason:
        msg += f": {reason}"
    return StackError(msg, stack=name, events=evs, resource=resource, status=status)


def wait(cfn: Any, name: str, *, until: set[str], timeout: float = DEFAULT_TIMEOUT,
         interval: float = 1.0) -> str:
    """Wait until the stack leaves its *_IN_PROGRESS state; return the final status."""
    deadline = time.monotonic() + timeout
    while True:
        stack = describe(cfn, name, resources=False)
        status = stack.status if stack else "DELETE_COMPLETE"
        if not status.endswith("_IN_PROGRESS") or status in until:
            return status
        if time.monotonic() >= deadline:
            raise StackError(f"stack {name} still {status} after {timeout:g}s", stack=name,
                             events=events(cfn, name), status=status)
        time.sleep(interval)


def create(cfn: Any, s3: Any, name: str, template: Template, parameters: dict[str, str], *,
           run_id: str, tags: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Stack:
    """Create ``name`` and wait for CREATE_COMPLETE.

    On failure the half-made stack is deleted (so the next run does not trip over a
    ROLLBACK_COMPLETE leftover) and StackError names the failing resource and the events.
    """
    template.check_parameters(parameters)
    all_tags = {RUN_ID_TAG: run_id, **(tags or {})}
    try:
        cfn.create_stack(
            StackName=name, TemplateBody=template.body,
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
            Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
            OnFailure="ROLLBACK", TimeoutInMinutes=max(1, int(timeout // 60)))
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "AlreadyExistsException":
            raise StackError(f"stack {name} already exists: delete it first "
                             f"(phoenixci clean) or choose another name", stack=name) from e
        if code == "ValidationError":
            raise TemplateError(f"stack {name}: template {template.path.name} rejected: "
                                f"{e.response['Error'].get('Message')}") from e
        raise StackError(f"cannot create stack {name}: {_error_message(e)}", stack=name) from e
    except BotoCoreError as e:
        raise StackError(f"cannot create stack {name}: {e}", stack=name) from e
    log.info("stack %s: create requested", name)
    status = wait(cfn, name, until={"CREATE_COMPLETE"}, timeout=timeout)
    if status != "CREATE_COMPLETE":
        error = _failure(cfn, name, status, "create")
        with contextlib.suppress(StackError, LeakError):
            delete(cfn, s3, name, timeout=timeout)
        raise error
    stack = describe(cfn, name)
    if stack is None:
        raise StackError(f"stack {name} vanished right after creation", stack=name)
    log.info("stack %s: %s", name, stack.status)
    return stack


def empty_bucket(s3: Any, bucket: str) -> int:
    """Delete every object version and delete marker in ``bucket``; return how many."""
    removed = 0
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                     for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for i in range(0, len(batch), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i:i + 1000], "Quiet": True})
            removed += len(batch)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in {"NoSuchBucket", "404"}:
            return removed
        raise
    return removed


def bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket", "NotFound"}:
            return False
        raise
    return True


def delete(cfn: Any, s3: Any, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Delete ``name`` (emptying its buckets first) and verify its buckets are gone."""
    stack = describe(cfn, name)
    if stack is None:
        return
    buckets = [r["PhysicalResourceId"] for r in stack.resources
               if r["ResourceType"] == "AWS::S3::Bucket" and r["PhysicalResourceId"]]
    for bucket in buckets:
        n = empty_bucket(s3, bucket)
        log.info("stack %s: emptied bucket %s (%d object versions)", name, bucket, n)
    try:
        cfn.delete_stack(StackName=stack.stack_id)
    except ClientError as e:
        raise StackError(f"cannot delete stack {name}: {_error_message(e)}", stack=name) from e
    status = wait(cfn, stack.stack_id, until={"DELETE_COMPLETE"}, timeout=timeout)
    if status != "DELETE_COMPLETE":
        raise _failure(cfn, stack.stack_id, status, "delete")
    left = [b for b in buckets if bucket_exists(s3, b)]
    if left:
        raise LeakError(f"stack {name} was deleted but its bucket(s) {', '.join(left)} remain",
                        leftovers=[f"s3://{b}" for b in left])
    log.info("stack %s: deleted", name)


@contextlib.contextmanager
def managed(cfn: Any, s3: Any, name: str, template: Template, parameters: dict[str, str], *,
            run_id: str, keep: str = "never", timeout: float = DEFAULT_TIMEOUT) -> Iterator[Stack]:
    """Create a stack, yield it, and delete it afterwards.

    ``keep``: ``never`` (default) deletes always; ``on-failure`` keeps it when the body raised;
    ``always`` keeps it.
    """
    if keep not in {"never", "on-failure", "always"}:
        raise ConfigError(f"keep={keep!r}: use never, on-failure or always")
    stack = create(cfn, s3, name, template, parameters, run_id=run_id, timeout=timeout)
    failed = False
    try:
        yield stack
    except BaseException:
        failed = True
        raise
    finally:
        if keep == "never" or (keep == "on-failure" and not failed):
            delete(cfn, s3, name, timeout=timeout)
        else:
            log.warning("keeping stack %s (keep=%s)", name, keep)


def list_stacks(cfn: Any, *, prefix: str = "", run_id: str | None = None) -> list[Stack]:
    """Live stacks whose name starts with ``prefix`` (and tagged with ``run_id`` if given).

    Uses ListStacks (allowed on ``*``) and then describes each match by name, so a caller
    whose DescribeStacks is scoped to ``stack/app-*/*`` can still list its own stacks.
    """
    live = [status for status in _ALL_STATUSES if status != "DELETE_COMPLETE"]
    names = []
    for page in cfn.get_paginator("list_stacks").paginate(StackStatusFilter=live):
        names += [s["StackName"] for s in page["StackSummaries"]
                  if s["StackName"].startswith(prefix) and s["StackStatus"] != "DELETE_COMPLETE"]
    found = []
    for name in sorted(set(names)):
        stack = describe(cfn, name, resources=False)
        if stack is None or (run_id is not None and stack.tags.get(RUN_ID_TAG) != run_id):
            continue
        found.append(stack)
    return found


_ALL_STATUSES = [
    "CREATE_IN_PROGRESS", "CREATE_FAILED", "CREATE_COMPLETE", "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_FAILED", "ROLLBACK_COMPLETE", "DELETE_IN_PROGRESS", "DELETE_FAILED", "DELETE_COMPLETE",
    "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE",
    "UPDATE_FAILED", "UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE",
    "REVIEW_IN_PROGRESS", "IMPORT_IN_PROGRESS", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_IN_PROGRESS",
    "IMPORT_ROLLBACK_FAILED", "IMPORT_ROLLBACK_COMPLETE",
]
