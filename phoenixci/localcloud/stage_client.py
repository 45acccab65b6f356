#!/usr/bin/python3 -I -S
"""Inside an instance (stdlib only, started with ``python3 -I -S``: ~15 ms): one cloud-init stage,
run by stage_server.py's warm Python when it listens, else by the real console script.

Usage (a stage unit's ExecStart): stage_client.py SOCKET REAL_SCRIPT ARGS...
Exits with the stage's status; when the stage was killed by a signal, dies of the same signal.
"""
from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys


def run_real(real: str, args: list[str]) -> None:
    os.execv(real, [real, *args])


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: stage_client.py SOCKET REAL_SCRIPT ARGS...", file=sys.stderr)
        return 2
    path, real, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        run_real(real, args)  # no server (not started, or done): as without it
    umask = os.umask(0o022)
    os.umask(umask)
    body = json.dumps({"args": args, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}).encode()
    with conn:
        conn.sendmsg([struct.pack("!I", len(body)) + body],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        reply = b""
        while len(reply) < 5:
            chunk = conn.recv(5 - len(reply))
            if not chunk:
                break
            reply += chunk
            if reply == b"R":
                break
    if reply == b"R":
        run_real(real, args)  # the server could not run it as this unit's process
    if len(reply) != 5 or reply[:1] != b"X":
        print(f"phoenixci stage client: the stage server at {path} went away during `{' '.join(args)}`",
              file=sys.stderr)
        return 1
    (code,) = struct.unpack("!i", reply[1:])
    if code < 0:  # killed by signal -code: end the same way
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main())
