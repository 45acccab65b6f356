"""Retire: delete the app stacks older than the one now serving."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from phoenixci import stacks
from phoenixci.errors import DeployError, PhoenixError

log = logging.getLogger(__name__)

APP_STACK_PREFIX = "app-"


class RetireError(DeployError):
    """Some old app stacks could not be deleted; the new server keeps serving."""

    def __init__(self, message: str, *, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass
class RetireResult:
    kept: str
    retired: list[str] = field(default_factory=list)


def app_stack_name(revision: str) -> str:
    return f"{APP_STACK_PREFIX}{revision}"


def retire(cfn: Any, s3: Any, *, keep: str, run_id: str,
           timeout: float = stacks.DEFAULT_TIMEOUT) -> RetireResult:
    """Delete every ``app-*`` stack of ``run_id`` except ``keep``.

    Each deletion is attempted even when an earlier one fails; RetireError lists the failures.
    """
    result = RetireResult(kept=keep)
    failed: dict[str, str] = {}
    for stack in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=run_id):
        if stack.name == keep:
            continue
        try:
            stacks.delete(cfn, s3, stack.name, timeout=timeout)
        except PhoenixError as e:
            failed[stack.name] = str(e)
            log.error("retire %s failed: %s", stack.name, e)
            continue
        result.retired.append(stack.name)
        log.info("retired %s", stack.name)
    if failed:
        raise RetireError(f"could not retire {', '.join(sorted(failed))} "
                          f"({'; '.join(failed.values())}); {keep} keeps serving", failed=failed)
    return result
