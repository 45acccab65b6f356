"""Benchmark (root): instance boot as a user sees it, through the local cloud's API.

RunInstances on the in-process local cloud (real moto, reconciler, IMDS, cloud-init) →
first successful `ssh admin@IP true` with the imported key, and → the user data's web server
answering. N sequential single instances and N launched in one call; then terminate → the
container gone. Prints JSON. Targets: single ssh p50 ≤ 2.0 s; N=5 at once all ready ≤ 8 s;
teardown ≤ 1 s each; zero leftovers.
Usage: python bench/cloud_boot.py [--n 5]
"""
from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phoenixci.backends import get_backend  # noqa: E402

USER_DATA = "#!/bin/bash\ncd /run && nohup python3 -m http.server 8080 >/dev/null 2>&1 &\n"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 3)


def ssh_ok(ip: str, key: Path) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        if s.connect_ex((ip, 22)) != 0:
            return False
    done = subprocess.run(["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o",
                           "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
                           "-o", "LogLevel=ERROR", f"admin@{ip}", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def http_ok(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=0.5) as resp:
            return resp.status == 200
    except OSError:
        return False


def watch(ips: dict[str, str], key: Path, t0: float, timeout: float = 60) -> dict[str, dict[str, float]]:
    """Per instance: seconds from t0 to ssh ready and to user data serving."""
    result: dict[str, dict[str, float]] = {i: {} for i in ips}
    deadline = t0 + timeout
    while time.monotonic() < deadline and any(len(r) < 2 for r in result.values()):
        for iid, ip in ips.items():
            if "ssh" not in result[iid] and ssh_ok(ip, key):
                result[iid]["ssh"] = time.monotonic() - t0
            if "user_data" not in result[iid] and http_ok(ip):
                result[iid]["user_data"] = time.monotonic() - t0
        time.sleep(0.05)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, get_backend("moto://") as backend:
        key = Path(tmp) / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        ec2 = backend.client("ec2")
        ec2.import_key_pair(KeyName="bench", PublicKeyMaterial=key.with_suffix(".pub").read_bytes())
        vpc = ec2.create_vpc(CidrBlock="10.233.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.233.7.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            for p in (22, 8080)])

        def launch(count: int) -> tuple[dict[str, str], float]:
            t0 = time.monotonic()
            found = ec2.run_instances(ImageId=backend.image_id, MinCount=count, MaxCount=count, KeyName="bench",
                                      SubnetId=subnet, SecurityGroupIds=[sg], UserData=USER_DATA,
                                      MetadataOptions={"HttpTokens": "required"})["Instances"]
            return {i["InstanceId"]: i["PrivateIpAddress"] for i in found}, t0

        def terminate(ips: dict[str, str]) -> list[float]:
            times = []
            for iid in ips:
                t = time.monotonic()
                ec2.terminate_instances(InstanceIds=[iid])
                while backend.cloud.runtime.boot_phase(iid) != "absent" and time.monotonic() - t < 10:
                    time.sleep(0.01)
                times.append(time.monotonic() - t)
            return times

        single: list[dict[str, float]] = []
        teardown: list[float] = []
        for _ in range(args.n):
            ips, t0 = launch(1)
            single += watch(ips, key, t0).values()
            teardown += terminate(ips)
        ips, t0 = launch(args.n)
        parallel = list(watch(ips, key, t0).values())
        teardown += terminate(ips)
        leftovers = [i for i in backend.cloud.runtime.list()]

    def stats(rows: list[dict[str, float]], what: str) -> dict[str, float | int]:
        values = [r[what] for r in rows if what in r]
        return {"p50_s": pct(values, 50) if values else -1, "p95_s": pct(values, 95) if values else -1,
                "max_s": round(max(values), 3) if values else -1, "missing": len(rows) - len(values)}

    print(json.dumps({
        "benchmark": "cloud_boot", "path": "RunInstances via the API → reconciler → container → cloud-init",
        "n": args.n,
        "single_create_to_ssh": stats(single, "ssh"), "single_create_to_user_data": stats(single, "user_data"),
        "parallel_create_to_ssh": stats(parallel, "ssh"),
        "parallel_create_to_user_data": stats(parallel, "user_data"),
        "parallel_all_ready_s": round(max(max(r.values()) for r in parallel), 3) if parallel else -1,
        "terminate_to_gone_s": {"p50": round(statistics.median(teardown), 3), "max": round(max(teardown), 3)},
        "leftovers": len(leftovers),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
