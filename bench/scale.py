"""Benchmark (root): N instances launched in ONE RunInstances call, for each N in --counts.

One in-process local cloud (moto://) serves every N: one /24 subnet, a group open on 22 and 8080,
user data starting a web server on 8080 (as cloud_boot.py). Per N, from the RunInstances call:
first and last instance ssh-ready (`ssh admin@IP true`, cloud_boot.ssh_ok), the user data's server
answering on all of them, and how many never were by the deadline; once all are ready: PSS (and
RSS) per instance summed over the processes of its cgroup, CPU per boot from the instances' cgroups
(cgroup v2 cpu.stat usage_usec since the cgroup was made) and from this process, where the cloud's
API, reconciler and IMDS run (getrusage self + children over launch → all ready; the probes' own
cost is in it too); then all terminated in one call → every container gone, and the containers
still listed. At the end, what the cloud left on the host (hostcheck). N=1 runs --repeat times
(p50s). Probes go only to the instances' private addresses, once routed into this cloud's bridge.
Prints JSON with the kernel limits the cloud checked, nproc and the targets next to the results.
Targets: single create→ssh p50 ≤ 1.2 s; 10 at once all ready ≤ 9 s; 50 at once all ready ≤ 45 s
with none missing; CPU per boot ≤ 1.5 CPU-s; leftovers 0.
Usage: python bench/scale.py [--counts 1,10,25,50] [--repeat 5] [--timeout 300]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_boot import USER_DATA, http_ok, pct, ssh_ok  # noqa: E402
from cpuref import cpu_reference  # noqa: E402

from phoenixci.backends import get_backend  # noqa: E402
from phoenixci.localcloud import limits  # noqa: E402
from phoenixci.localcloud.hostcheck import wait_gone  # noqa: E402

VPC_CIDR, SUBNET_CIDR = "10.234.0.0/16", "10.234.5.0/24"
POLL_S = 0.05
SUMMED = ("missing", "user_data_missing", "not_gone")  # over --repeat runs; leftovers: the max


def port_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((ip, port)) == 0


def ssh_ready(ip: str, key: Path) -> bool:
    try:
        return ssh_ok(ip, key)
    except subprocess.TimeoutExpired:
        return False


def cgroup_cpu_s(cgroup: Path) -> float | None:
    """CPU seconds used by every process that ever ran in the cgroup (cpu.stat usage_usec)."""
    try:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        pass
    return None


def own_cpu_s() -> float:
    """User + system CPU of this process and of its reaped children."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Scale:
    """The cloud's network for the bench, and one measured launch of N instances."""

    def __init__(self, backend: Any, key: Path, timeout: float) -> None:
        self.backend, self.runtime, self.key, self.timeout = backend, backend.cloud.runtime, key, timeout
        ec2 = self.ec2 = backend.client("ec2")
        ec2.import_key_pair(KeyName="bench", PublicKeyMaterial=key.with_suffix(".pub").read_bytes())
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        self.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=SUBNET_CIDR)["Subnet"]["SubnetId"]
        self.sg = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=self.sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            for p in (22, 8080)])
        self.bridge = self.runtime.bridge_name(SUBNET_CIDR)  # <tag>b<hash>: made by this cloud

    def cgroup(self, instance_id: str) -> Path:
        return Path(self.runtime._cgroup(instance_id))  # the Runtime's own naming: <tag>-i<short>

    def routed_here(self, ip: str) -> bool:
        """False until this cloud has made the subnet's bridge; then True if the kernel routes
        ``ip`` into it. Refuses (raises) any other address or route: nothing else is probed."""
        if ipaddress.ip_address(ip) not in ipaddress.ip_network(SUBNET_CIDR):
            raise RuntimeError(f"refusing to probe {ip}: not in this run's subnet {SUBNET_CIDR}")
        if not any(b.cidr == SUBNET_CIDR and b.name == self.bridge for b in self.runtime.bridges()):
            return False
        route = subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True, text=True, timeout=5)
        if f" dev {self.bridge} " not in f" {route.stdout} ":
            raise RuntimeError(f"refusing to probe {ip}: routed {route.stdout.strip()!r}, not into {self.bridge}")
        return True

    def probe(self, instance_id: str, ip: str, t0: float, deadline: float) -> dict[str, float]:
        """Seconds from t0 to ssh ready and to the user data serving; the instance's CPU then."""
        row: dict[str, float] = {}
        while not self.routed_here(ip):
            if time.monotonic() > deadline:
                return row
            time.sleep(POLL_S)
        while time.monotonic() < deadline:
            if "ssh" not in row and ssh_ready(ip, self.key):
                row["ssh"] = time.monotonic() - t0
            if "user_data" not in row and port_open(ip, 8080) and http_ok(ip):
                row["user_data"] = time.monotonic() - t0
            if "ssh" in row and "user_data" in row:
                cpu = cgroup_cpu_s(self.cgroup(instance_id))
                if cpu is not None:
                    row["cpu"] = cpu
                break
            time.sleep(POLL_S)
        return row

    def run(self, n: int) -> dict[str, Any]:
        cpu0 = own_cpu_s()
        t0 = time.monotonic()
        found = self.ec2.run_instances(ImageId=self.backend.image_id, MinCount=n, MaxCount=n, KeyName="bench",
                                       SubnetId=self.subnet, SecurityGroupIds=[self.sg], UserData=USER_DATA,
                                       MetadataOptions={"HttpTokens": "required"})["Instances"]
        call_s = time.monotonic() - t0
        ips = {i["InstanceId"]: i["PrivateIpAddress"] for i in found}
        deadline = t0 + self.timeout
        with ThreadPoolExecutor(max_workers=n) as pool:  # one prober per instance: no pass lag
            rows = list(pool.map(lambda item: self.probe(item[0], item[1], t0, deadline), ips.items()))
        cpu = [cgroup_cpu_s(self.cgroup(iid)) for iid in ips]  # right when all are ready (or timed out)
        cloud_cpu = own_cpu_s() - cpu0
        mem = [m for m in (self.runtime.memory(iid) for iid in ips) if m["pss"] > 0]
        ssh = [r["ssh"] for r in rows if "ssh" in r]
        served = [r["user_data"] for r in rows if "user_data" in r]
        own_ready = [r["cpu"] for r in rows if "cpu" in r]
        t = time.monotonic()
        self.ec2.terminate_instances(InstanceIds=list(ips))
        while any(self.runtime.boot_phase(iid) != "absent" for iid in ips) and time.monotonic() < t + self.timeout:
            time.sleep(POLL_S)
        gone_s = time.monotonic() - t
        not_gone = sum(self.runtime.boot_phase(iid) != "absent" for iid in ips)
        return {
            "n": n, "run_instances_call_s": r3(call_s),
            "first_ssh_ready_s": r3(min(ssh)) if ssh else None,
            "all_ssh_ready_s": r3(max(ssh)) if len(ssh) == n else None,
            "all_user_data_done_s": r3(max(served)) if len(served) == n else None,
            "all_ready_s": r3(max(ssh + served)) if len(ssh) == len(served) == n else None,
            "missing": n - len(ssh), "user_data_missing": n - len(served),
            "pss_mib_per_instance": round(statistics.mean(m["pss"] for m in mem) / 2**20, 1) if mem else None,
            "rss_mib_per_instance": round(statistics.mean(m["rss"] for m in mem) / 2**20, 1) if mem else None,
            "cpu_seconds_per_boot": r3(sum(c for c in cpu if c is not None) / n) if any(c is not None for c in cpu) else None,
            "cpu_seconds_per_boot_at_own_ready": r3(statistics.mean(own_ready)) if own_ready else None,
            "cloud_process_cpu_s_per_boot": r3(cloud_cpu / n),
            "terminate_to_all_gone_s": r3(gone_s) if not not_gone else None, "not_gone": not_gone,
            "leftovers": len(self.runtime.list()),
        }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry for the --repeat runs of a count: p50 of each figure, counts summed, leftovers max."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {"n": runs[0]["n"], "repeats": len(runs)}
    for k in runs[0]:
        values = [r[k] for r in runs if r[k] is not None]
        if k in SUMMED:
            out[k] = sum(values)
        elif k == "leftovers":
            out[k] = max(values)
        elif k != "n":
            out[k] = pct(values, 50) if values else None
    out["first_ssh_ready_s_each"] = [r["first_ssh_ready_s"] for r in runs]
    return out


def target(entry: dict[str, Any] | None, key: str, limit: float) -> dict[str, Any]:
    """A target next to its result: met is None when not run, False when missing or too slow."""
    if entry is None:
        return {"target": f"<= {limit:g}", "value": None, "met": None}
    value = entry[key]
    return {"target": f"<= {limit:g}", "value": value, "met": value is not None and value <= limit}


def sysctls() -> dict[str, int | None]:
    return {lim.key: limits.read_sysctl(lim.key) for lim in limits.LIMITS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1,10,25,50", help="comma-separated N (each launched in one call)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of N=1 (p50)")
    ap.add_argument("--timeout", type=float, default=300, help="deadline of each wait, seconds")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if not counts or any(not 1 <= c <= 100 for c in counts) or args.repeat < 1 or args.timeout <= 0:
        ap.error("counts: 1..100 each (one /24 subnet); --repeat >= 1; --timeout > 0")
    logging.basicConfig(level=logging.ERROR)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a polite kill still stops the cloud
    out: dict[str, Any] = {"benchmark": "scale", "nproc": len(os.sched_getaffinity(0)),
                           "subnet": SUBNET_CIDR, "timeout_s": args.timeout,
                           "cpu_reference_s": {"before": cpu_reference()}}
    results: dict[int, dict[str, Any]] = {}
    before, tag, state = sysctls(), "", ""
    try:
        with tempfile.TemporaryDirectory() as tmp, get_backend("moto://") as backend:
            cloud: Any = backend.cloud  # type: ignore[attr-defined]
            tag, state = cloud.runtime.tag, str(cloud.state_dir)
            out["limits"] = {"note": cloud.limits_note, "before": before, "after": sysctls()}
            key = Path(tmp) / "key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
            bench = Scale(backend, key, args.timeout)
            for n in counts:
                results[n] = combine([bench.run(n) for _ in range(args.repeat if n == 1 else 1)])
    except Exception as e:  # noqa: BLE001 - reported with what was measured
        out["error"] = f"{type(e).__name__}: {e}"
    host = wait_gone(tag, state, timeout=10) if tag else []
    out["counts"] = list(results.values())
    out["host_leftovers"] = host
    cpu = [r["cpu_seconds_per_boot"] for r in results.values()]
    left = sum(r["leftovers"] for r in results.values()) + len(host)
    out["targets"] = {
        "single_create_to_ssh_p50_s": target(results.get(1), "first_ssh_ready_s", 1.2),
        "all_ready_10_at_once_s": target(results.get(10), "all_ready_s", 9),
        "all_ready_50_at_once_none_missing_s": target(results.get(50), "all_ready_s", 45),
        "cpu_seconds_per_boot_max": target({"v": None if None in cpu or not cpu else max(cpu)}, "v", 1.5),
        "leftovers": {"target": "0", "value": left, "met": left == 0 and bool(tag)},
    }
    out["cpu_reference_s"]["after"] = cpu_reference()
    print(json.dumps(out, indent=2))
    return 1 if "error" in out or left or not tag else 0


if __name__ == "__main__":
    sys.exit(main())
