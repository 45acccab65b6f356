#!/usr/bin/python3
"""Inside an instance (stdlib only): cloud-init's boot stages forked from one warm Python.

Each of cloud-init's four stages is a fresh Python that imports cloud-init (~0.25 CPU-s of a
~0.35 CPU-s stage on this image). This server imports it once, early in the boot, and forks a
child per stage: the stage's unit runs ``stage_client.py`` instead, which hands over its argv,
environment, working directory, umask and standard streams over a root-only Unix socket and
exits with the child's status. Before the child runs, the server moves it into the client's
cgroup (the stage's own unit), so systemd accounts, limits and kills it there as before, and
what user data starts in cloud-final stays in cloud-final's cgroup. The child starts a new
session and runs the entry point exactly as the console script does (``sys.exit(main())`` with
``sys.argv[0]`` the real script), then what the interpreter does at exit (threads, atexit,
flush).

When the move into the client's cgroup is not possible the server answers "run it yourself" and
the client execs the real console script, as it does when no server listens. The server exits
after serving ``--exit-after`` (the last stage) or after ``--idle`` seconds without a request.

Protocol (one request per connection): client → 4-byte length + JSON {args, env, cwd, umask},
with fds 0, 1, 2 attached (SCM_RIGHTS); server → b"R" (run it yourself) or b"X" + 4-byte
signed exit status (negative: killed by that signal).
"""
from __future__ import annotations

import argparse
import array
import atexit
import contextlib
import gc
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading

MAX_REQUEST = 1 << 20


def notify(state: str) -> None:
    """sd_notify without libsystemd (``Type=notify`` units)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())


def preload(modules: list[str]) -> list[str]:
    """Import ``modules``; return those that failed (each child then imports them as it would)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the stage itself will meet (and report) the same error
            failed.append(name)
    return failed


def recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if len(data) < 4:
        raise ValueError("short request")
    (size,) = struct.unpack("!I", data[:4])
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = data[4:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body), list(fds)


def cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` ("0::/system.slice/x.service" → "/system.slice/x.service")."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def move_to_cgroup(pid: int, cgroup: str) -> bool:
    try:
        with open(os.path.join("/sys/fs/cgroup", cgroup.lstrip("/"), "cgroup.procs"), "w") as f:
            f.write(str(pid))
        return cgroup_of(pid) == cgroup
    except OSError:
        return False


def exit_code(value: object) -> int:
    """What the interpreter makes of ``sys.exit(value)``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def run_child(req: dict, fds: list[int], go: int, entry: str, argv0: str) -> None:
    """In the forked child: become the stage's process, wait for the go-ahead, run, exit."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if os.read(go, 1) != b"1":  # not moved into the stage's cgroup: the client runs it itself
            os._exit(0)
        os.close(go)
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.umask(int(req.get("umask", 0o022)))
        os.chdir(req.get("cwd") or "/")
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in req.get("env", {}).items()})
        sys.argv = [argv0, *[str(a) for a in req.get("args", [])]]
        module, _, func = entry.partition(":")
        try:
            code = exit_code(getattr(importlib.import_module(module), func)())
        except SystemExit as e:
            code = exit_code(e.code)
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, status 1
            import traceback

            traceback.print_exc()
            code = 1
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # exiting anyway
                stream.flush()
        os._exit(code)


def serve(conn: socket.socket, listener: socket.socket, entry: str, argv0: str) -> tuple[bool, str]:
    """One request: (whether it ran here (False: the client runs it itself), its args)."""
    req, fds = recv_request(conn)
    args = " ".join(str(a) for a in req.get("args", []))
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    peer_pid, peer_uid, _gid = struct.unpack("3i", creds)
    if peer_uid != 0 or len(fds) < 3:
        for fd in fds:
            os.close(fd)
        conn.sendall(b"R")
        return False, args
    target = cgroup_of(peer_pid)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        os.close(go_w)
        run_child(req, fds, go_r, entry, argv0)
    os.close(go_r)
    for fd in fds:
        os.close(fd)
    moved = target is not None and (cgroup_of(pid) == target or move_to_cgroup(pid, target))
    os.write(go_w, b"1" if moved else b"0")
    os.close(go_w)
    _, status = os.waitpid(pid, 0)
    if not moved:
        conn.sendall(b"R")
        return False, args
    conn.sendall(b"X" + struct.pack("!i", os.waitstatus_to_exitcode(status)))
    return True, args


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--entry", required=True, help="module:function, as the console script's entry point")
    ap.add_argument("--argv0", required=True, help="sys.argv[0] of each stage: the real console script")
    ap.add_argument("--preload", action="append", default=[], help="a module to import before serving")
    ap.add_argument("--path", action="append", default=[], help="prepend to sys.path")
    ap.add_argument("--exit-after", default="", help="the args (space-separated) of the last request")
    ap.add_argument("--idle", type=float, default=600.0)
    args = ap.parse_args()
    sys.path[:0] = args.path
    failed = preload([args.entry.partition(":")[0], *args.preload])
    if failed:
        print(f"stage server: not preloaded (each stage imports them itself): {', '.join(failed)}", file=sys.stderr)
    os.makedirs(os.path.dirname(args.socket), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    listener.bind(args.socket)
    os.umask(old)
    listener.listen(4)
    listener.settimeout(args.idle)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    gc.freeze()  # what the imports made stays out of the children's collections: fewer copied pages
    notify("READY=1")
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return 0
            with conn:
                conn.settimeout(None)
                try:
                    handled, seen = serve(conn, listener, args.entry, args.argv0)
                except (OSError, ValueError) as e:
                    print(f"stage server: request dropped: {e}", file=sys.stderr)
                    continue
            if handled and args.exit_after and seen == args.exit_after:
                return 0
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(args.socket)


if __name__ == "__main__":
    sys.exit(main())
