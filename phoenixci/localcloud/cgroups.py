"""cgroup v2 helpers: one cgroup per instance (and per dnsmasq) so that kill = ``cgroup.kill``.

This machine has a hybrid layout (v2 at /sys/fs/cgroup/unified); a pure v2 host has it at
/sys/fs/cgroup. Memory accounting lives in v1 there, so usage is measured from the processes.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)


class CgroupError(PhoenixError):
    """A cgroup could not be created, killed or removed."""


def root() -> Path:
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    raise CgroupError("no cgroup v2 hierarchy found (need /sys/fs/cgroup/unified or /sys/fs/cgroup)")


def create(name: str) -> Path:
    path = root() / name
    path.mkdir(exist_ok=True)
    if not (path / "cgroup.kill").exists():
        raise CgroupError(f"{path} has no cgroup.kill (kernel older than 5.14?)")
    return path


def pids(path: Path) -> list[int]:
    """Every process in the cgroup and its descendants."""
    out: list[int] = []
    for dirpath, _dirs, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                out += [int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()]
            except OSError:
                continue
    return out


def populated(path: Path) -> bool:
    try:
        return "populated 1" in (path / "cgroup.events").read_text()
    except OSError:
        return False


def kill(path: Path, timeout: float = 2.0) -> None:
    """SIGKILL every process in the subtree and wait until it is empty (reaped)."""
    if not path.exists():
        return
    (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while populated(path):
        if time.monotonic() > deadline:
            raise CgroupError(f"{path} still has processes {pids(path)} after cgroup.kill")
        time.sleep(0.005)


def remove(path: Path) -> None:
    """Kill, then rmdir the subtree depth first (systemd inside makes children)."""
    if not path.exists():
        return
    kill(path)
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -len(t[0])):
        for attempt in range(50):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if attempt == 49:
                    raise CgroupError(f"cannot remove cgroup {dirpath}: {e.strerror}") from e
                time.sleep(0.01)


def memory_bytes(path: Path) -> dict[str, int]:
    """RSS and PSS summed over the cgroup's processes (v2 memory.current when it exists)."""
    rss = pss = 0
    for pid in pids(path):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    out = {"rss": rss, "pss": pss}
    current = path / "memory.current"
    if current.exists():
        out["memory_current"] = int(current.read_text())
    return out


def remove_prefixed(prefix: str) -> list[str]:
    """Kill and remove every top-level cgroup whose name starts with ``prefix``."""
    removed = []
    for path in sorted(root().glob(f"{prefix}*")):
        remove(path)
        removed.append(path.name)
    return removed


def namespace_init(path: Path, comm: str) -> int | None:
    """Host PID of the process in ``path`` that is PID 1 of its own pid namespace and named ``comm``."""
    for pid in pids(path):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1" and name == comm:
            return pid
    return None
