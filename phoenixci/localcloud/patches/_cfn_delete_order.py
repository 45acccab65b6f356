"""``cfn_delete``'s order and failures: which resource DeleteStack deletes when, and what a failure says.

``ordered_delete`` replaces ``ResourceMap.delete``: a resource only after everything whose
template refers to it (``references``: Ref, Fn::GetAtt, Fn::Sub, DependsOn) is gone, Retain
policies kept, a reference cycle in moto's "try everything" order; the resources that could not
be deleted are raised together as ``StackDeleteFailed`` (one ``ResourceDeleteFailure`` each).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from phoenixci.errors import PhoenixError

log = logging.getLogger("phoenixci.localcloud.patches.cfn_delete")  # cfn_delete's log lines, as before


@dataclass(frozen=True)
class ResourceDeleteFailure:
    logical_id: str
    resource_type: str
    physical_id: str
    reason: str


class StackDeleteFailed(PhoenixError):
    """Some resources of a stack could not be deleted."""

    def __init__(self, failures: list[ResourceDeleteFailure]) -> None:
        self.failures = failures
        self.stack: Any = None
        super().__init__(stack_failure_reason(failures))


def stack_failure_reason(failures: Iterable[ResourceDeleteFailure]) -> str:
    names = ", ".join(sorted(f.logical_id for f in failures))
    return f"The following resource(s) failed to delete: [{names}]. "


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    code = getattr(exc, "error_type", None)
    text = str(message) if message else str(exc) or type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text


# --------------------------------------------------------------------- template references
def references(node: Any, names: set[str]) -> set[str]:
    """Logical ids of ``names`` that ``node`` (a raw template fragment) refers to."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str) and value in names:
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) and value else value
                if isinstance(target, str):
                    target = target.split(".", 1)[0]
                    if target in names:
                        found.add(target)
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) and value else value
                if isinstance(text, str):
                    found |= _sub_references(text, names)
                if isinstance(value, list) and len(value) > 1:
                    found |= references(value[1], names)
                continue
            elif key == "DependsOn":
                targets = [value] if isinstance(value, str) else value or []
                found |= {t for t in targets if isinstance(t, str) and t in names}
                continue
            found |= references(value, names)
    elif isinstance(node, list):
        for item in node:
            found |= references(item, names)
    return found


def _sub_references(text: str, names: set[str]) -> set[str]:
    found: set[str] = set()
    start = text.find("${")
    while start != -1:
        end = text.find("}", start)
        if end == -1:
            break
        target = text[start + 2:end].split(".", 1)[0]
        if not target.startswith("!") and target in names:
            found.add(target)
        start = text.find("${", end)
    return found


# --------------------------------------------------------------------- the order
def ordered_delete(self: Any) -> None:
    """ResourceMap.delete: dependants first, failures collected into StackDeleteFailed."""
    json_map: dict[str, dict[str, Any]] = self._resource_json_map
    names = set(json_map)
    needs = {lid: references(rj, names) - {lid} for lid, rj in json_map.items()}
    remaining = {lid for lid, rj in json_map.items()
                 if rj.get("DeletionPolicy") not in ("Retain", "RetainExceptOnCreate")}
    errors: dict[str, BaseException] = {}
    while remaining:
        ready = sorted(lid for lid in remaining
                       if not any(lid in needs[other] for other in remaining if other != lid))
        if not ready:
            if errors.keys() & remaining:
                break  # everything left waits on a resource that failed
            ready = sorted(remaining)  # a reference cycle: moto's "try everything" order
        progress = False
        for lid in ready:
            parsed = self._parsed_resources.get(lid)
            if parsed is None or isinstance(parsed, str):  # never created
                remaining.discard(lid)
                progress = True
                continue
            try:
                self._delete_resource(parsed, json_map[lid])
            except Exception as exc:  # noqa: BLE001 - reported as DELETE_FAILED
                errors[lid] = exc
                log.debug("deleting %s failed: %s", lid, exc)
            else:
                errors.pop(lid, None)
                self._parsed_resources.pop(lid, None)
                remaining.discard(lid)
                progress = True
        if not progress:
            break
    failed = [lid for lid in sorted(remaining) if lid in errors]
    if failed:
        raise StackDeleteFailed([
            ResourceDeleteFailure(
                logical_id=lid, resource_type=json_map[lid].get("Type", ""),
                physical_id=str(getattr(self._parsed_resources.get(lid), "physical_resource_id", "")),
                reason=_reason(errors[lid]))
            for lid in failed])

