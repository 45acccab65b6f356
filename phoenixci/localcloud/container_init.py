"""Runs as PID 1 of a fresh pid/mount/uts/ipc/cgroup namespace; builds the root, then execs systemd.

Started by ``runtime.Runtime.start`` as
``nsenter --net=<netns> -- unshare --mount --uts --ipc --pid --cgroup --fork python3 -I container_init.py``
(the process is already in the instance's cgroup, so the new cgroup namespace is rooted there).
Standard library only: it runs with ``-I`` and must not import phoenixci. All mounts made here live
in the container's private mount namespace and vanish with it.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import socket
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}")


def umount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def pivot_root(new_root: str) -> None:
    os.chdir(new_root)
    number = SYS_PIVOT_ROOT[platform.machine()]
    if _libc.syscall(number, b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    umount(".")  # the old root, stacked under the new one
    os.chdir("/")


def make_dev(root: str) -> None:
    dev = f"{root}/dev"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):
        os.mknod(f"{dev}/{name}", 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for sub in ("pts", "shm"):
        os.mkdir(f"{dev}/{sub}")
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def make_sys(root: str, stage: str, hypervisor_uuid: str) -> None:
    """A read-only /sys: the netns's sysfs, plus /sys/hypervisor/uuid saying "ec2…", plus cgroup2."""
    mount("sysfs", stage, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sysdir = f"{root}/sys"
    mount("tmpfs", sysdir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=1024k")
    for entry in sorted(os.listdir(stage)):
        os.mkdir(f"{sysdir}/{entry}")
        mount(f"{stage}/{entry}", f"{sysdir}/{entry}", None, MS_BIND | MS_REC)
    os.mkdir(f"{sysdir}/hypervisor")
    with open(f"{sysdir}/hypervisor/uuid", "w") as f:
        f.write(hypervisor_uuid + "\n")
    umount(stage)
    # cgroup2 rooted at the instance's cgroup (we are in a fresh cgroup namespace)
    mount("cgroup2", f"{sysdir}/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", sysdir, "tmpfs", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for opt in ("lower", "upper", "work", "merged", "stage", "hostname", "uuid"):
        p.add_argument(f"--{opt}", required=True)
    a = p.parse_args(argv)
    if os.getpid() != 1:
        print("container_init: must run as PID 1 of a new pid namespace", file=sys.stderr)
        return 1
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    root = a.merged
    mount("overlay", root, "overlay", 0, f"lowerdir={a.lower},upperdir={a.upper},workdir={a.work}")
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    make_sys(root, a.stage, a.uuid)
    make_dev(root)
    mount("tmpfs", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k")
    mount("tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    socket.sethostname(a.hostname)
    pivot_root(root)
    env = {"container": "phoenixci", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "dumb"}
    os.execve("/sbin/init", ["/sbin/init"], env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
