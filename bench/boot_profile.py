"""Benchmark (root): where one instance boot spends its time and CPU, phase by phase.

One instance at a time on an in-process local cloud (the network of bench/scale.py), --repeat
times. Per boot, seconds from the RunInstances call (wall clock: instances share the host's
clock, so cloud-init's own stamps line up):
  api (RunInstances answered) → reconciler (the instance's container spec written) →
  container (systemd is PID 1) → each cloud-init stage's start and end (init-local, init,
  modules-config, modules-final, read from /run/cloud-init/status.json through /proc/PID/root) →
  sshd (port 22 open) → ssh (`ssh admin@IP true` works) → user data (its web server answers);
and CPU seconds: the instance's cgroup, and this process (the API, the reconciler, the IMDS,
the probes) over the boot. Prints JSON: every boot and the medians. No targets of its own:
issue 9 wants ≤ 1.5 CPU-s per boot and single create→ssh ≤ 1.2 s (bench/scale.py checks them).
Usage: python bench/boot_profile.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_boot import USER_DATA, http_ok  # noqa: E402
from cpuref import cpu_reference  # noqa: E402
from scale import Scale, cgroup_cpu_s, own_cpu_s, port_open, ssh_ready  # noqa: E402

from phoenixci.backends import get_backend  # noqa: E402

STAGES = ("init-local", "init", "modules-config", "modules-final")
POLL_S = 0.01


def stage_stamps(runtime: Any, instance_id: str) -> dict[str, Any]:
    """cloud-init's status.json of the instance (read on the host through its PID 1's root)."""
    pid = runtime.init_pid(instance_id)
    if pid is None:
        return {}
    try:
        return dict(json.loads(Path(f"/proc/{pid}/root/run/cloud-init/status.json").read_text())["v1"])
    except (OSError, ValueError, KeyError):
        return {}


def profile_one(bench: Scale, timeout: float) -> dict[str, Any]:
    runtime, marks = bench.runtime, {}
    cpu0, t0 = own_cpu_s(), time.time()
    inst = bench.ec2.run_instances(ImageId=bench.backend.image_id, MinCount=1, MaxCount=1, KeyName="bench",
                                   SubnetId=bench.subnet, SecurityGroupIds=[bench.sg],
                                   UserData=USER_DATA)["Instances"][0]
    marks["api"] = time.time() - t0
    iid, ip = inst["InstanceId"], inst["PrivateIpAddress"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and "user_data" not in marks:
        phase = runtime.boot_phase(iid)
        if "reconciler" not in marks and phase != "absent":
            marks["reconciler"] = time.time() - t0
        if "container" not in marks and runtime.init_pid(iid) is not None:
            marks["container"] = time.time() - t0
        if "container" in marks and bench.routed_here(ip):
            if "sshd" not in marks and port_open(ip, 22):
                marks["sshd"] = time.time() - t0
            if "sshd" in marks and "ssh" not in marks and ssh_ready(ip, bench.key):
                marks["ssh"] = time.time() - t0
            if "user_data" not in marks and port_open(ip, 8080) and http_ok(ip):
                marks["user_data"] = time.time() - t0
        time.sleep(POLL_S)
    stamps = stage_stamps(runtime, iid)
    for stage in STAGES:
        for edge in ("start", "finished"):
            value = (stamps.get(stage) or {}).get(edge)
            if value:
                marks[f"{stage}.{edge}"] = float(value) - t0
    cpu = {"instance_cgroup": cgroup_cpu_s(bench.cgroup(iid)), "cloud_process": own_cpu_s() - cpu0}
    bench.ec2.terminate_instances(InstanceIds=[iid])
    gone = time.monotonic() + 30
    while runtime.boot_phase(iid) != "absent" and time.monotonic() < gone:
        time.sleep(0.05)
    order = sorted(marks.items(), key=lambda kv: kv[1])
    return {"instance_id": iid, "timeline_s": {k: round(v, 3) for k, v in order},
            "cpu_s": {k: round(v, 3) if v is not None else None for k, v in cpu.items()},
            "complete": "user_data" in marks}


def medians(boots: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in boots[0]["timeline_s"]] if boots else []
    timeline = {k: round(statistics.median(b["timeline_s"][k] for b in boots if k in b["timeline_s"]), 3)
                for k in keys}
    cpu = {k: round(statistics.median(b["cpu_s"][k] for b in boots if b["cpu_s"][k] is not None), 3)
           for k in ("instance_cgroup", "cloud_process") if any(b["cpu_s"][k] is not None for b in boots)}
    stages = {s: round(timeline[f"{s}.finished"] - timeline[f"{s}.start"], 3) for s in STAGES
              if f"{s}.start" in timeline and f"{s}.finished" in timeline}
    return {"timeline_s": timeline, "stage_durations_s": stages, "cpu_s": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    if args.repeat < 1 or args.timeout <= 0:
        ap.error("--repeat >= 1, --timeout > 0")
    logging.basicConfig(level=logging.ERROR)
    cpu_before = cpu_reference()
    with tempfile.TemporaryDirectory() as tmp, get_backend("moto://") as backend:
        key = Path(tmp) / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        bench = Scale(backend, key, args.timeout)
        boots = [profile_one(bench, args.timeout) for _ in range(args.repeat)]
    complete = [b for b in boots if b["complete"]]
    print(json.dumps({"benchmark": "boot_profile", "repeat": args.repeat, "incomplete": len(boots) - len(complete),
                      "median": medians(complete), "boots": boots,
                      "cpu_reference_s": {"before": cpu_before, "after": cpu_reference()}}, indent=2))
    return 0 if len(complete) == len(boots) else 1


if __name__ == "__main__":
    sys.exit(main())
