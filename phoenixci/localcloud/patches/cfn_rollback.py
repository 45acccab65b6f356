"""A stack whose resource fails to create rolls back to ROLLBACK_COMPLETE.

AWS behaviour restored: when CloudFormation cannot create a resource (here: the
caller may not iam:PassRole the instance profile's role), the resource is
CREATE_FAILED with a reason, resources already made are deleted and the stack ends
ROLLBACK_COMPLETE with no outputs or exports. moto 5.2.5 lets the exception escape
``create_stack``: HTTP 500 and a stack stuck in CREATE_IN_PROGRESS.

Failures raised as :class:`ResourceCreateFailed` (by our own checks) roll back, and so
does any error a resource's creation raises while CreateStack runs (a subnet that does
not exist, a bad property): AWS reports those as CREATE_FAILED on the resource, not as an
error of the CreateStack call. Template errors found before any resource is created keep
their API error responses.

moto 5.2.5 hooks: ``moto.cloudformation.models.CloudFormationBackend.create_stack`` and
``moto.cloudformation.parsing.parse_and_create_resource``.
"""
from __future__ import annotations

import contextvars
import functools
import logging
from typing import Any

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

#: True while a CreateStack call runs in this context (thread).
_creating: contextvars.ContextVar[bool] = contextvars.ContextVar("phoenixci_cfn_creating", default=False)


class ResourceCreateFailed(PhoenixError):
    """A stack resource could not be created; carries what CloudFormation reports."""

    def __init__(self, reason: str, *, logical_id: str, resource_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.logical_id = logical_id
        self.resource_type = resource_type


def _resource_event(stack: Any, failure: ResourceCreateFailed, status: str) -> None:
    from moto.cloudformation.models import Event

    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name,
        logical_resource_id=failure.logical_id, physical_resource_id="",
        resource_type=failure.resource_type, resource_status=status,
        resource_status_reason=failure.reason, resource_properties=None))


def roll_back(backend: Any, stack: Any, failure: ResourceCreateFailed) -> None:
    """Turn a half-created ``stack`` into a ROLLBACK_COMPLETE one, as AWS would."""
    from moto.cloudformation.parsing import OutputMap

    _resource_event(stack, failure, "CREATE_FAILED")
    stack.status = "ROLLBACK_IN_PROGRESS"
    stack._add_stack_event(
        "ROLLBACK_IN_PROGRESS",
        resource_status_reason=f"The following resource(s) failed to create: "
                               f"[{failure.logical_id}]. Rollback requested by user.")
    try:
        stack.resource_map.delete()
    except Exception:  # keep rolling back; the leak check will report leftovers
        log.exception("rollback of stack %s could not delete every resource", stack.name)
    # moto creates resources lazily on access: forget the template's resources so that
    # DescribeStackResources / DeleteStack / outputs never create them after the fact.
    stack.resource_map._resource_json_map = {}
    stack.output_map = OutputMap(stack.resource_map, {}, stack.stack_id)
    for name, export in list(backend.exports.items()):
        if getattr(export, "exporting_stack_id", None) == stack.stack_id:
            del backend.exports[name]
    stack.status = "ROLLBACK_COMPLETE"
    stack._add_stack_event("ROLLBACK_COMPLETE")
    log.info("stack %s rolled back: %s", stack.name, failure.reason)


def check() -> None:
    from moto.cloudformation import parsing
    from moto.cloudformation.models import CloudFormationBackend, Event, Stack
    from moto.cloudformation.parsing import OutputMap, ResourceMap

    from phoenixci.localcloud.patches import require

    require(CloudFormationBackend, "create_stack")
    require(parsing, "parse_and_create_resource")
    require(ResourceMap, "delete")
    require(Stack, "_add_stack_event")
    require(Event, "__init__")
    assert OutputMap is not None


def install() -> None:
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import CloudFormationBackend

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original = CloudFormationBackend.create_stack
    if is_patched(original):
        return

    @functools.wraps(original)
    def create_stack(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        token = _creating.set(True)
        try:
            return original(self, name, *args, **kwargs)
        except ResourceCreateFailed as failure:
            stack = next((s for s in self.stacks.values()
                          if s.name == name and s.status in ("CREATE_PENDING", "CREATE_IN_PROGRESS")),
                         None)
            if stack is None:  # failed while moto was still building the stack object
                raise ValidationError(name, message=failure.reason) from failure
            roll_back(self, stack, failure)
            return stack
        finally:
            _creating.reset(token)

    replace(CloudFormationBackend, "create_stack", mark(create_stack))
    _install_resource_failures()
    log.debug("CloudFormation rollback on resource failure installed")


def _reason(error: Exception) -> str:
    code = getattr(error, "error_type", None) or getattr(error, "code", None) or type(error).__name__
    message = getattr(error, "message", None) or str(error)
    return f"{code}: {message}" if code and not str(code).isdigit() else str(message)


def _install_resource_failures() -> None:
    """A resource whose creation raises during CreateStack becomes ResourceCreateFailed."""
    from moto.cloudformation import parsing

    from phoenixci.localcloud.patches._caller import is_patched, mark

    original: Any = parsing.parse_and_create_resource
    if is_patched(original):
        return

    @functools.wraps(original)
    def parse_and_create_resource(logical_id: str, resource_json: dict[str, Any], *args: Any,
                                  **kwargs: Any) -> Any:
        try:
            return original(logical_id, resource_json, *args, **kwargs)
        except ResourceCreateFailed:
            raise
        except Exception as error:
            if not _creating.get():
                raise
            raise ResourceCreateFailed(_reason(error), logical_id=logical_id,
                                       resource_type=str(resource_json.get("Type", ""))) from error

    parsing.parse_and_create_resource = mark(parse_and_create_resource)
