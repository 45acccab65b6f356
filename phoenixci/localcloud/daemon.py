"""``phoenixci cloud start|status|stop``: the local cloud as a background process per state dir.

Files in the state dir:
  cloud.lock    held (flock) by the running daemon: a second start on the same dir is refused
  cloud.pid     the daemon's PID (checked against /proc before any signal is sent)
  cloud.log     the daemon's log
  ready.json    written once the cloud answers (endpoint, image id, region, pid)
  status.json   written before ready.json, then every second (endpoint, image id, region, subnets,
                instances with their boot phases and errors, ``limits``: the one line naming kernel
                limits still too low, or null): `cloud start` returns with it complete
  env           export lines for any AWS client: source DIR/env
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from phoenixci.localcloud.cloud import DEFAULT_STATE_DIR, LocalCloud
from phoenixci.localcloud.cloudtags import TAG_DIR, LocalCloudError, release_tag
from phoenixci.localcloud.regions import DEFAULT_REGION, check_region

log = logging.getLogger(__name__)

START_TIMEOUT = 180.0  # the first start builds the base image (~35 s here)
STOP_TIMEOUT = 60.0


def _pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "cloud.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_daemon(pid, state_dir) else None


def _is_daemon(pid: int, state_dir: Path) -> bool:
    """Whether ``pid`` is (still) the daemon of ``state_dir``; a zombie or a recycled PID is not."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # only ever signal our own daemon for this state dir, never a recycled PID
    return b"phoenixci.localcloud.daemon" in cmdline and str(state_dir).encode() in cmdline


def running_pid(state_dir: Path) -> int | None:
    """The PID of the daemon serving ``state_dir``, or None."""
    return _pid(Path(state_dir).resolve())


def start(state_dir: Path = DEFAULT_STATE_DIR, *, region: str = DEFAULT_REGION,
          timeout: float = START_TIMEOUT, package_proxy: bool = False) -> dict[str, Any]:
    """Start the daemon in the background and return its ready info once it answers
    (its status.json is complete by then)."""
    state_dir = Path(state_dir).resolve()
    check_region(region)
    pid = _pid(state_dir)
    if pid is not None:
        raise LocalCloudError(f"a local cloud already runs on {state_dir} (pid {pid}): "
                              f"use it (source {state_dir}/env) or `phoenixci cloud stop --state-dir {state_dir}`")
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in ("ready.json", "status.json"):
        (state_dir / name).unlink(missing_ok=True)
    log_file = (state_dir / "cloud.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "phoenixci.localcloud.daemon", "run", "--state-dir",
                             str(state_dir), "--region", region, *(["--package-proxy"] if package_proxy else [])],
                            stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=log_file, start_new_session=True)
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = state_dir / "ready.json"
        if ready.exists():
            return dict(json.loads(ready.read_text()))
        if proc.poll() is not None:
            raise LocalCloudError(f"the local cloud on {state_dir} failed to start: {_last_error(state_dir)}")
        time.sleep(0.1)
    proc.terminate()
    raise LocalCloudError(f"the local cloud on {state_dir} did not answer within {timeout:g}s "
                          f"(see {state_dir}/cloud.log)")


def _last_error(state_dir: Path) -> str:
    try:
        lines = [ln for ln in (state_dir / "cloud.log").read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no log"])[-1]


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    state_dir = Path(state_dir).resolve()
    pid = _pid(state_dir)
    if pid is None:
        return {"state_dir": str(state_dir), "running": False, "instances": []}
    data: dict[str, Any] = {"subnets": {}, "instances": []}
    for name in ("ready.json", "status.json"):  # status.json, once there, has every field of ready.json
        with contextlib.suppress(OSError, ValueError):
            data.update(json.loads((state_dir / name).read_text()))
    data.update(running=True, pid=pid, state_dir=str(state_dir))
    return data


def stop(state_dir: Path = DEFAULT_STATE_DIR, *, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop the daemon (it removes everything it made) and sweep what a killed one left.

    Returns what had to be swept; raises LocalCloudError if anything is still left after that.
    """
    from phoenixci.localcloud.runtime import Runtime

    state_dir = Path(state_dir).resolve()
    pid = _pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        # wait for the process itself, not its pid file (removed before the interpreter exits):
        # returning earlier let a following `cloud start` race the old daemon for cloud.lock
        deadline = time.monotonic() + timeout
        while _is_daemon(pid, state_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_daemon(pid, state_dir):
            os.kill(pid, signal.SIGKILL)
            log.error("local cloud pid %d did not stop in %gs: killed", pid, timeout)
    runtime = Runtime(state_dir / "runtime")
    owner = TAG_DIR / runtime.tag
    if owner.exists() and owner.read_text().strip() != str(state_dir):
        raise LocalCloudError(f"not sweeping {state_dir}: its name tag {runtime.tag} belongs to the cloud of "
                              f"{owner.read_text().strip()}")
    swept = runtime.sweep() if (state_dir / "runtime").exists() else []
    left = runtime.sweep() if (state_dir / "runtime").exists() else []
    release_tag(runtime.tag, state_dir)
    for name in ("cloud.pid", "ready.json", "status.json", "env"):
        (state_dir / name).unlink(missing_ok=True)
    if left:
        raise LocalCloudError(f"local cloud on {state_dir}: still left after stop: {', '.join(left)}")
    return list(swept)


def run(state_dir: Path, region: str = DEFAULT_REGION, package_proxy: bool = False) -> int:
    """The daemon's main: hold the lock, run the cloud, write status, stop on SIGTERM."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = (state_dir / "cloud.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("error: another local cloud holds %s/cloud.lock", state_dir)
        return 1
    (state_dir / "cloud.pid").write_text(f"{os.getpid()}\n")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    cloud = LocalCloud(state_dir, region=region, package_proxy=package_proxy)  # the region was checked by start()
    try:
        info = cloud.start()
    except Exception as e:  # noqa: BLE001 - reported in the log the CLI shows
        log.error("error: %s", e)
        with contextlib.suppress(Exception):
            cloud.stop()
        return 1
    _write_json(state_dir / "status.json", cloud.status())  # complete before anyone reads ready.json
    ready = {"endpoint_url": info.endpoint_url, "image_id": info.image_id, "region": info.region,
             "pid": os.getpid(), "env_file": str(state_dir / "env")}
    _write_json(state_dir / "ready.json", ready)
    log.info("local cloud ready on %s (image %s)", info.endpoint_url, info.image_id)
    code = 0
    try:
        while not stopping.wait(1.0):
            with contextlib.suppress(Exception):
                _write_json(state_dir / "status.json", cloud.status())
    finally:
        try:
            cloud.stop()
        except Exception as e:  # noqa: BLE001
            log.error("error: %s", e)
            code = 1
        for name in ("ready.json", "status.json", "cloud.pid"):
            (state_dir / name).unlink(missing_ok=True)
    return code


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phoenixci.localcloud.daemon")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--package-proxy", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("moto").setLevel(logging.ERROR)
    return run(args.state_dir, args.region, args.package_proxy)


if __name__ == "__main__":
    sys.exit(main())
