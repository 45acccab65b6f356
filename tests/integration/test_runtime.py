"""The instance runtime boots a real system container that behaves like an EC2 instance.

Needs root (namespaces, bridges, mounts). Everything made here is named phx<tag>… and removed
in fixture teardown, also when a test fails.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from imds_stub import ImdsStub, StubInstance

from phoenixci.localcloud import cgroups, hostsg, netlink
from phoenixci.localcloud.image import Image, build_image
from phoenixci.localcloud.runtime import Bridge, InstanceSpec, Runtime
from phoenixci.util import free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the instance runtime needs root (namespaces, bridges)"),
]
log = logging.getLogger(__name__)

USER_DATA = """#!/bin/bash
echo "user data ran" > /var/tmp/user-data-done
cd /var/tmp && nohup python3 -m http.server 8080 >/dev/null 2>&1 &
"""


@pytest.fixture(scope="session")
def image() -> Image:
    return build_image()


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Bridge, ImdsStub]]:
    runtime = Runtime(tmp_path_factory.mktemp("cloud"))
    try:
        bridge = runtime.ensure_bridge(f"10.250.{random.randint(1, 250)}.0/24")
        with ImdsStub(bridge.gateway_ip, free_port(bridge.gateway_ip)) as imds:
            yield runtime, bridge, imds
    finally:
        runtime.close()
        assert leftovers(runtime) == []


def leftovers(runtime: Runtime) -> list[str]:
    out = [f"netns {n}" for n in netlink.netns_names() if n.startswith(runtime.tag)]
    out += [f"link {n}" for n in netlink.link_names() if n.startswith(runtime.tag)]
    out += [f"cgroup {p.name}" for p in cgroups.root().glob(f"{runtime.tag}*")]
    out += [f"mount {line}" for line in Path("/proc/mounts").read_text().splitlines()
            if str(runtime.state_dir) in line]
    out += [f"table {t}" for t in netlink.tables() if t == runtime.table]
    return out


def new_instance(runtime: Runtime, bridge: Bridge, imds: ImdsStub, key: Path, host: int) -> InstanceSpec:
    net = bridge.cidr.rsplit(".", 1)[0]
    ip = f"{net}.{host}"
    iid = f"i-{random.getrandbits(68):017x}"
    mac = "02:00:" + ":".join(f"{int(o):02x}" for o in ip.split("."))
    spec = InstanceSpec(iid, ip, 24, bridge.gateway_ip, bridge.cidr, mac, f"ip-{ip.replace('.', '-')}",
                        imds.server.server_address[1], bridge.name)
    imds.instances[ip] = StubInstance(iid, ip, spec.hostname, mac, key.with_suffix(".pub").read_text().strip(),
                                      USER_DATA)
    # the host side of its link, as the cloud's NetworkSync makes it (all traffic allowed here)
    ports = GUARDED.setdefault(runtime.tag, {})
    ports[iid] = hostsg.Port(iid, runtime.veth(iid), mac, ip, (hostsg.OPEN,))
    subnet = hostsg.Subnet(bridge.name, bridge.gateway_ip, spec.imds_port)
    hostsg.apply(runtime.tag, hostsg.render(runtime.tag, [subnet], ports.values()))
    return spec


GUARDED: dict[str, dict[str, hostsg.Port]] = {}  # runtime tag → instance id → port


def ssh(runtime: Runtime, spec: InstanceSpec, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    known = key.parent / f"known_hosts-{spec.instance_id}"
    known.write_text(f"{spec.private_ip} {runtime.ssh_host_key(spec.instance_id)}\n")
    return subprocess.run(["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                           "-o", "LogLevel=ERROR", f"admin@{spec.private_ip}", command],
                          capture_output=True, text=True, timeout=30)


def port_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


def test_instance_boots_like_ec2(cloud: tuple[Runtime, Bridge, ImdsStub], image: Image, ssh_key: Path) -> None:
    runtime, bridge, imds = cloud
    firewall = netlink.run(["nft", "list", "table", "inet", runtime.table])
    # only this cloud's interfaces: a rule on every phx* interface would drop the bridged traffic
    # of another cloud on the same machine (br_netfilter sends it through this hook too)
    assert f'iifname "{runtime.tag}*" counter' in firewall and f'oifname "{runtime.tag}*" counter' in firewall
    assert "drop" in firewall and 'iifname "phx*"' not in firewall
    spec = new_instance(runtime, bridge, imds, ssh_key, 10)
    t0 = time.monotonic()
    runtime.start(spec, image)
    assert runtime.list() == [spec.instance_id]
    wait_until(lambda: ssh(runtime, spec, ssh_key, "true").returncode == 0, timeout=30, interval=0.1,
               what="ssh as admin with the pinned host key")
    log.warning("create -> ssh ready: %.2f s", time.monotonic() - t0)

    r = ssh(runtime, spec, ssh_key, "id -un; sudo -n true && echo sudo-ok; ps -o comm= -p 1; ip route")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["admin", "sudo-ok", "systemd"]
    assert not any(line.startswith("default") for line in lines[3:]), lines

    wait_until(lambda: runtime.boot_phase(spec.instance_id) == "ready", timeout=30, what="cloud-init done")
    wait_until(lambda: port_open(spec.private_ip, 8080), timeout=10, what="user data's http.server")
    log.warning("create -> user data serving: %.2f s", time.monotonic() - t0)
    assert ssh(runtime, spec, ssh_key, "cat /var/tmp/user-data-done").stdout.strip() == "user data ran"
    with urllib.request.urlopen(f"http://{spec.private_ip}:8080/", timeout=5) as resp:
        assert resp.status == 200

    # nothing leaves the machine: no route out, and a connect to a documentation address fails fast
    t = time.monotonic()
    r = ssh(runtime, spec, ssh_key, "curl -sS -m 3 -o /dev/null http://192.0.2.1/; echo rc=$?")
    assert "rc=0" not in r.stdout and time.monotonic() - t < 3, (r.stdout, r.stderr)
    assert "unreachable" in r.stderr.lower() or "couldn't connect" in r.stderr.lower(), r.stderr
    assert runtime.system_state(spec.instance_id) in ("running", "degraded")

    t = time.monotonic()
    runtime.destroy(spec.instance_id)
    assert time.monotonic() - t <= 1.0
    assert runtime.boot_phase(spec.instance_id) == "absent"
    mine = (runtime.netns(spec.instance_id), runtime.veth(spec.instance_id), f"{runtime.tag}-i")
    assert [x for x in leftovers(runtime) if any(m in x for m in mine)] == []
    assert not (runtime.state_dir / "instances" / spec.instance_id).exists()


def test_stop_keeps_disk_and_restarts(cloud: tuple[Runtime, Bridge, ImdsStub], image: Image,
                                      ssh_key: Path) -> None:
    runtime, bridge, imds = cloud
    spec = new_instance(runtime, bridge, imds, ssh_key, 11)
    runtime.start(spec, image)
    wait_until(lambda: runtime.boot_phase(spec.instance_id) == "ready", timeout=30, what="first boot")
    host_key = runtime.ssh_host_key(spec.instance_id)
    runtime.stop(spec.instance_id)
    assert runtime.boot_phase(spec.instance_id) == "stopped"
    runtime.start(spec, image)
    wait_until(lambda: runtime.boot_phase(spec.instance_id) == "ready", timeout=30, what="second boot")
    assert runtime.ssh_host_key(spec.instance_id) == host_key
    r = ssh(runtime, spec, ssh_key, "cat /var/tmp/user-data-done")
    assert r.stdout.strip() == "user data ran", r.stderr
    runtime.destroy(spec.instance_id)


def test_sweep_after_crash(tmp_path: Path, image: Image, ssh_key: Path) -> None:
    state = tmp_path / "crashed"
    runtime = Runtime(state)
    try:
        bridge = runtime.ensure_bridge(f"10.250.{random.randint(1, 250)}.0/24")
        with ImdsStub(bridge.gateway_ip, free_port(bridge.gateway_ip)) as imds:
            spec = new_instance(runtime, bridge, imds, ssh_key, 20)
            runtime.start(spec, image)
            assert leftovers(runtime)  # there is something to sweep
        del runtime  # "crash": no close()
        removed = Runtime(state).sweep()
        assert any(r.startswith("cgroup") for r in removed) and any(r.startswith("netns") for r in removed)
        assert leftovers(Runtime(state)) == []
    finally:
        Runtime(state).sweep()
