"""What a local cloud leaves on the host, listed without touching it: the leak check's eyes.

Everything a cloud makes carries its tag (namespaces, links, cgroups, its nftables tables) or
lives under its state directory (mounts); its processes run in its cgroups or name its state
directory. ``LocalCloud.stop`` removes them; this proves from the outside that it did.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from phoenixci.localcloud import cgroups, netlink


def _processes(tag: str, state_dir: str) -> list[str]:
    found = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            stat = (proc / "stat").read_text()
            cgroup = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":  # exited, not yet reaped by the machine's PID 1 (~1.5 s here)
            continue
        in_cgroup = any(part.startswith(tag) for line in cgroup.splitlines()
                        for part in line.rpartition(":")[2].split("/"))
        if in_cgroup or (state_dir and state_dir in cmdline):
            found.append(f"process {proc.name} ({cmdline.strip()[:80]})")
    return found


#: the file in a runtime directory naming the tag its cloud claimed (cloudtags.claim_free_tag)
TAG_FILE = "tag"
TAG_CANDIDATES = 32


def candidate_tags(runtime_dir: str | Path, name_prefix: str = "phx") -> list[str]:
    """The tags a runtime directory may use, in order: 3 hex digits of sha1 of its path, then of
    its path with ``#1``, ``#2``, ... (interface names allow no more: the tag leads every name)."""
    path = str(Path(runtime_dir).resolve())
    return [name_prefix + hashlib.sha1((path if i == 0 else f"{path}#{i}").encode()).hexdigest()[:3]
            for i in range(TAG_CANDIDATES)]


def tag_of(runtime_dir: str | Path, name_prefix: str = "phx") -> str:
    """The tag the runtime in ``runtime_dir`` gives everything it makes (``Runtime.tag``): the one
    its cloud claimed (the tag file), else the first candidate."""
    candidates = candidate_tags(runtime_dir, name_prefix)
    try:
        written = (Path(runtime_dir) / TAG_FILE).read_text().strip()
    except OSError:
        written = ""
    return written if written in candidates else candidates[0]


def cloud_tag(state_dir: str | Path) -> str:
    """The tag of the local cloud whose state directory is ``state_dir`` (its runtime's)."""
    return tag_of(Path(state_dir) / "runtime")


def host_leftovers(tag: str, state_dir: str | Path) -> list[str]:
    """Namespaces, links, cgroups, mounts, nftables tables (every family) and processes of ``tag``."""
    state = str(Path(state_dir).resolve()) if state_dir else ""
    left = [f"netns {ns}" for ns in netlink.netns_names() if ns.startswith(tag)]
    left += [f"link {name}" for name in netlink.link_names() if name.startswith(tag)]
    left += [f"cgroup {p.name}" for p in sorted(cgroups.root().glob(f"{tag}*"))]
    left += [f"nft table {family} {name}" for family, name in netlink.family_tables()
             if name == f"phoenixci_{tag}"]
    if state:
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1]
            if target == state or target.startswith(state + "/"):
                left.append(f"mount {target}")
    left += _processes(tag, state)
    return left


def wait_gone(tag: str, state_dir: str | Path, timeout: float = 10.0) -> list[str]:
    """``host_leftovers`` once what is still going (a process killed with its cgroup) had
    ``timeout`` seconds to go; an empty list when nothing is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = host_leftovers(tag, state_dir)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
