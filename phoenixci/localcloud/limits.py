"""Kernel limits that many instances on one machine need, checked when the local cloud starts.

Every instance is a system container whose processes all run as the host's root, so per-user
kernel limits are shared by every instance (and the host's own root processes). Measured here
(issue 9): at 50 instances, systemd in the instances ran out of inotify instances
(``fs.inotify.max_user_instances`` = 128, about 5 per booting instance) and exited at start; with
8192 all 50 booted. ``fs.inotify.max_user_watches`` is raised alongside (systemd and journald
watch many paths per instance). Both are plain counters: raising them costs nothing until used.

``ensure(...)`` raises a limit that is lower than wanted when it may (root, writable /proc/sys;
never lowers one), and otherwise returns the one line saying what to set. The read/write
functions take the sysctl root as a path so that tests use a temporary directory.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SYSCTL_ROOT = Path("/proc/sys")


@dataclass(frozen=True)
class Limit:
    key: str      # dotted sysctl name
    wanted: int   # raised to this when lower
    why: str


LIMITS = (
    Limit("fs.inotify.max_user_instances", 8192,
          "each instance's systemd and services hold inotify instances, all as root"),
    Limit("fs.inotify.max_user_watches", 524288, "each instance's systemd and journald watch paths, all as root"),
)


@dataclass(frozen=True)
class Check:
    """One limit as found and as left: ``after`` < ``wanted`` means it is still too low."""

    key: str
    before: int | None
    after: int | None
    wanted: int
    error: str = ""

    @property
    def raised(self) -> bool:
        return self.before is not None and self.after is not None and self.after > self.before

    @property
    def short(self) -> bool:
        return self.after is None or self.after < self.wanted


def sysctl_path(key: str, root: Path = SYSCTL_ROOT) -> Path:
    if not key or any(part in {"", ".", ".."} for part in key.split(".")) or "/" in key:
        raise ValueError(f"bad sysctl name {key!r}")
    return Path(root, *key.split("."))


def read_sysctl(key: str, root: Path = SYSCTL_ROOT) -> int | None:
    """The integer value of ``key``, or None if the kernel has no such setting (or it is unreadable)."""
    try:
        return int(sysctl_path(key, root).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_sysctl(key: str, value: int, root: Path = SYSCTL_ROOT) -> None:
    """Write ``value``; raises OSError (EACCES, EROFS, EPERM …) if the kernel refuses."""
    sysctl_path(key, root).write_text(f"{int(value)}\n")


def ensure(limits: Iterable[Limit] = LIMITS, root: Path = SYSCTL_ROOT, *, may_write: bool | None = None) -> list[Check]:
    """Raise every limit below its wanted value (only upwards), if ``may_write`` (default: we are root)."""
    if may_write is None:
        may_write = os.geteuid() == 0
    checks = []
    for limit in limits:
        before = read_sysctl(limit.key, root)
        after, error = before, ""
        if before is not None and before < limit.wanted:
            if not may_write:
                error = "not root"
            else:
                try:
                    write_sysctl(limit.key, limit.wanted, root)
                except OSError as e:
                    error = e.strerror or str(e)
                after = read_sysctl(limit.key, root)
                if after is not None and after > before:
                    log.info("raised %s from %d to %d (%s)", limit.key, before, after, limit.why)
        checks.append(Check(limit.key, before, after, limit.wanted, error))
    note = advice(checks)
    if note:
        log.warning("%s", note)
    return checks


def advice(checks: Iterable[Check]) -> str | None:
    """One line naming the limits still too low and the command that raises them; None if none."""
    short = [c for c in checks if c.short and c.after is not None]
    if not short:
        return None
    now = ", ".join(f"{c.key}={c.after}" for c in short)
    why = "; ".join(sorted({c.error for c in short if c.error}))
    setting = " ".join(f"{c.key}={c.wanted}" for c in short)
    return (f"kernel limits too low for many instances ({now}{'; could not raise: ' + why if why else ''}): "
            f"as root on the host run `sysctl -w {setting}`")


def inotify_in_use(proc: Path = Path("/proc"), uid: int = 0) -> int:
    """How many inotify instances processes of ``uid`` hold (what max_user_instances counts)."""
    count = 0
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if pid_dir.stat().st_uid != uid:
                continue
            for fd in (pid_dir / "fd").iterdir():
                try:
                    if os.readlink(fd) == "anon_inode:inotify":
                        count += 1
                except OSError:
                    continue
        except OSError:
            continue
    return count


def inotify_hint(root: Path = SYSCTL_ROOT, proc: Path = Path("/proc"), uid: int = 0) -> str | None:
    """A sentence for a failed start when root's inotify instances are (nearly) all used, else None."""
    limit = read_sysctl("fs.inotify.max_user_instances", root)
    if limit is None:
        return None
    used = inotify_in_use(proc, uid)
    if used < limit - 8:
        return None
    return (f"root holds {used} inotify instances of fs.inotify.max_user_instances={limit}: "
            f"systemd cannot start; raise it (sysctl -w fs.inotify.max_user_instances=8192)")


__all__ = ["LIMITS", "Check", "Limit", "advice", "ensure", "inotify_hint", "inotify_in_use", "read_sysctl",
           "sysctl_path", "write_sysctl"]
