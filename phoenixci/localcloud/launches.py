"""Instances that fail to start: why, how often to retry, and how the API shows the end.

A start fails when the runtime raises (network plumbing, systemd never became PID 1) or when the
container exits before the instance was ever ready (systemd's fatal errors at start, e.g. out of
inotify instances: limits.py). The reconciler counts such failures per instance and asks
``StartPolicy`` what next: retry after a growing delay, or give up.

Giving up follows EC2: an instance that cannot be launched goes from ``pending`` to
``terminated`` with the state reason ``Server.InternalError`` — "An internal error caused the
instance to terminate during launch" (EC2 API Reference, StateReason,
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html). DescribeInstances
then shows ``StateReason`` {Code: Server.InternalError, Message: "Server.InternalError: Internal
error on launch (…local detail…)"} and the same ``StateTransitionReason``; ``cloud status`` shows
the whole reason, and the instance's console (GetConsoleOutput) keeps its last output followed by
the reason, also after the container is gone.

Test-only hook: ``PHOENIXCI_TEST_FAIL_START=<regex>`` — a started instance whose
"<instance id> <private ip>" matches is killed right after systemd became PID 1, the way systemd
exits at start when the host runs out of a kernel resource.
"""
from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenixci.localcloud import limits
from phoenixci.localcloud.console import console_text

log = logging.getLogger(__name__)

TEST_HOOK = "PHOENIXCI_TEST_FAIL_START"
REASON_CODE = "Server.InternalError"
REASON_MESSAGE = "Server.InternalError: Internal error on launch"
CONSOLE_LINES = 5


@dataclass(frozen=True)
class StartPolicy:
    """``attempts`` starts in all; the n-th failure waits ``delay * factor**(n-1)`` (≤ ``cap``) s."""

    attempts: int = 3
    delay: float = 1.0
    factor: float = 2.0
    cap: float = 30.0

    def delay_after(self, failures: int) -> float | None:
        """Seconds before the next start after ``failures`` failed ones; None: give up."""
        if failures >= self.attempts:
            return None
        return float(min(self.cap, self.delay * self.factor ** max(0, failures - 1)))


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the container ended (exit status unknown)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the container was killed by {name}"
    if returncode == 255:
        return "the container exited with status 255 (systemd's exit on a fatal error at start)"
    return f"the container exited with status {returncode}"


def last_lines(text: str, n: int = CONSOLE_LINES) -> str:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def compose(exit_text: str, console: str, hint: str | None) -> str:
    """The one-line reason of a failed start: how it ended, its console's last lines, a hint."""
    parts = [exit_text + " before the instance was ready"]
    tail = last_lines(console)
    parts.append(f"console: {tail}" if tail else "console empty")
    if hint:
        parts.append(hint)
    return "; ".join(parts)


def mark_failed(ec2: Any, instance_id: str, reason: str) -> None:
    """pending → terminated with EC2's launch-failure state reason (see the module docstring)."""
    inst = ec2.get_instance(instance_id)
    if inst.state in {"shutting-down", "terminated"}:
        return
    ec2.terminate_instances([instance_id])
    from moto.ec2.models.instances import StateReason

    message = f"{REASON_MESSAGE} ({reason[:200]})"
    inst.state_reason = StateReason(message, REASON_CODE)
    inst._reason = message  # StateTransitionReason


class Launches:
    """The local cloud's side of failed starts: the reason, the API's state, the kept console."""

    def __init__(self, runtime: Any, ec2: Callable[[], Any], *, sysctl_root: Path = limits.SYSCTL_ROOT) -> None:
        self.runtime, self._ec2, self._sysctl_root = runtime, ec2, sysctl_root
        self._consoles: dict[str, str] = {}  # instance id → console kept when it failed

    def _idir(self, instance_id: str) -> Path:
        return Path(self.runtime.state_dir) / "instances" / instance_id

    def start(self, spec: Any, image: Any, **options: Any) -> None:
        """runtime.start(spec, image, **options), then the test hook (see the module docstring)."""
        self.runtime.start(spec, image, **options)
        pattern = os.environ.get(TEST_HOOK)
        if pattern and re.search(pattern, f"{spec.instance_id} {spec.private_ip}"):
            pid = self.runtime.init_pid(spec.instance_id)
            with open(self._idir(spec.instance_id) / "console.log", "a") as console:
                console.write(f"phoenixci test hook {TEST_HOOK}: killing PID 1 {pid} at start\n")
            if pid:
                os.kill(pid, signal.SIGKILL)

    def exit_reason(self, instance_id: str) -> str:
        """Why ``instance_id``'s container ended at start: exit status, last console lines, a hint."""
        proc = getattr(self.runtime, "_procs", {}).get(instance_id)  # the runtime's nsenter/unshare
        code = proc.poll() if proc is not None else None
        console = console_text(self._idir(instance_id)) or ""
        hint = limits.inotify_hint(self._sysctl_root)
        return compose(describe_exit(code), console, hint)

    def fail(self, instance_id: str, reason: str) -> None:
        """Give up: the reason to the console, the instance terminated in the API."""
        idir = self._idir(instance_id)
        if idir.is_dir():
            with open(idir / "console.log", "a") as console:
                console.write(f"phoenixci: instance failed to start: {reason}\n")
        self._consoles[instance_id] = console_text(idir) or f"phoenixci: instance failed to start: {reason}\n"
        mark_failed(self._ec2(), instance_id, reason)

    def console(self, instance_id: str) -> str | None:
        """GetConsoleOutput: the live console, else the one kept when the start failed."""
        return console_text(self._idir(instance_id)) or self._consoles.get(instance_id)


__all__ = ["REASON_CODE", "TEST_HOOK", "Launches", "StartPolicy", "compose", "describe_exit", "mark_failed"]
