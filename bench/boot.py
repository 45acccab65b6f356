"""Instance runtime benchmark (root): boot, memory and teardown of system-container instances.

Prints JSON: create→ssh-ready and create→user-data-done p50/p95 for N sequential single
instances and for N launched at once, PSS/RSS per idle instance, teardown time, leftovers.
Targets: single ssh-ready p50 ≤ 2.0 s; N=5 at once all ready ≤ 8 s; ≤ 40 MiB idle; teardown ≤ 1 s.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from imds_stub import ImdsStub, StubInstance  # noqa: E402

from phoenixci.localcloud import cgroups, hostsg, netlink  # noqa: E402
from phoenixci.localcloud.image import build_image  # noqa: E402
from phoenixci.localcloud.runtime import Bridge, InstanceSpec, Runtime  # noqa: E402
from phoenixci.util import free_port  # noqa: E402

USER_DATA = "#!/bin/bash\necho done > /var/tmp/user-data-done\n"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 3)


def ssh_ok(runtime: Runtime, spec: InstanceSpec, key: Path) -> bool:
    try:
        host_key = runtime.ssh_host_key(spec.instance_id)
    except Exception:  # noqa: BLE001 - not generated yet
        return False
    known = key.parent / f"kh-{spec.instance_id}"
    known.write_text(f"{spec.private_ip} {host_key}\n")
    with socket.socket() as s:
        s.settimeout(0.2)
        if s.connect_ex((spec.private_ip, 22)) != 0:
            return False
    r = subprocess.run(["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o",
                        "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
                        "-o", "LogLevel=ERROR", f"admin@{spec.private_ip}", "true"], capture_output=True)
    return r.returncode == 0


def boot(runtime: Runtime, bridge: Bridge, imds: ImdsStub, key: Path, hosts: list[int],
         image: object, timeout: float = 60) -> list[dict[str, float]]:
    specs = []
    for host in hosts:
        ip = f"{bridge.cidr.rsplit('.', 1)[0]}.{host}"
        iid = f"i-{random.getrandbits(68):017x}"
        mac = "02:00:" + ":".join(f"{int(o):02x}" for o in ip.split("."))
        spec = InstanceSpec(iid, ip, 24, bridge.gateway_ip, bridge.cidr, mac, f"ip-{ip.replace('.', '-')}",
                            imds.server.server_address[1], bridge.name)
        imds.instances[ip] = StubInstance(iid, ip, spec.hostname, mac,
                                          key.with_suffix(".pub").read_text().strip(), USER_DATA)
        specs.append(spec)
    ports = [hostsg.Port(s.instance_id, runtime.veth(s.instance_id), s.mac, s.private_ip, (hostsg.OPEN,))
             for s in specs]  # the host side of each link, as the cloud makes it (all traffic allowed)
    subnet = hostsg.Subnet(bridge.name, bridge.gateway_ip, imds.server.server_address[1])
    hostsg.apply(runtime.tag, hostsg.render(runtime.tag, [subnet], ports))
    t0 = time.monotonic()
    for spec in specs:
        runtime.start(spec, image)  # type: ignore[arg-type]
    result: dict[str, dict[str, float]] = {s.instance_id: {} for s in specs}
    while time.monotonic() - t0 < timeout:
        pending = False
        for spec in specs:
            r = result[spec.instance_id]
            if "ssh" not in r:
                if ssh_ok(runtime, spec, key):
                    r["ssh"] = time.monotonic() - t0
                else:
                    pending = True
            if "user_data" not in r:
                if runtime.boot_phase(spec.instance_id) == "ready":
                    r["user_data"] = time.monotonic() - t0
                else:
                    pending = True
        if not pending:
            break
        time.sleep(0.02)
    return [result[s.instance_id] for s in specs]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    image = build_image()
    work = Path(tempfile.mkdtemp(prefix="phx-bench-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    runtime = Runtime(work / "state")
    out: dict[str, object] = {"n": args.n, "image": image.name}
    try:
        bridge = runtime.ensure_bridge(f"10.250.{random.randint(1, 250)}.0/24")
        with ImdsStub(bridge.gateway_ip, free_port(bridge.gateway_ip)) as imds:
            seq, teardown = [], []
            for i in range(args.n):
                seq += boot(runtime, bridge, imds, key, [10 + i], image)
                iid = runtime.list()[0]
                t = time.monotonic()
                runtime.destroy(iid)
                teardown.append(time.monotonic() - t)
            par = boot(runtime, bridge, imds, key, [100 + i for i in range(args.n)], image)
            time.sleep(3)  # let the instances settle into idle
            mem = [runtime.memory(iid) for iid in runtime.list()]
            for iid in runtime.list():
                t = time.monotonic()
                runtime.destroy(iid)
                teardown.append(time.monotonic() - t)
        for label, rows in (("single", seq), ("parallel", par)):
            for field in ("ssh", "user_data"):
                vals = [r[field] for r in rows if field in r]
                out[f"{label}_{field}_p50_s"] = pct(vals, 50) if vals else None
                out[f"{label}_{field}_p95_s"] = pct(vals, 95) if vals else None
                out[f"{label}_{field}_missing"] = len(rows) - len(vals)
            out[f"{label}_all_ready_s"] = round(max(r.get("user_data", float("inf")) for r in rows), 3)
        out["idle_pss_mib_mean"] = round(statistics.mean(m["pss"] for m in mem) / 2**20, 1)
        out["idle_rss_mib_mean"] = round(statistics.mean(m["rss"] for m in mem) / 2**20, 1)
        out["teardown_s_max"] = round(max(teardown), 3)
        out["teardown_s_p50"] = pct(teardown, 50)
    finally:
        runtime.close()
    left = [n for n in netlink.netns_names() + netlink.link_names() if n.startswith(runtime.tag)]
    left += [p.name for p in cgroups.root().glob(f"{runtime.tag}*")]
    left += [line for line in Path("/proc/mounts").read_text().splitlines() if str(work) in line]
    out["leftovers"] = len(left)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    print(json.dumps(out, indent=1))
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
