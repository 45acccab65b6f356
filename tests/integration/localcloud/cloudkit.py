"""Helpers for the local cloud tests as a new user meets it: ``phoenixci cloud start``, the env file and
the ``aws`` command-line client, then SSH (pytest-testinfra) into the instances.

Every cloud started here is stopped in teardown, also when a test fails, and teardown then checks
that nothing carrying the cloud's tag is left on the machine (netns, links, cgroups, processes in
them, the nft table, mounts under the state dir).
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import random
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra

from phoenixci.localcloud import cgroups, daemon, netlink
from phoenixci.localcloud.runtime import Runtime
from phoenixci.util import WaitTimeout, wait_until

VENV_BIN = Path(sys.executable).parent
PHOENIXCI = str(VENV_BIN / "phoenixci")
AWS = str(VENV_BIN / "aws")
log = logging.getLogger(__name__)

CLOUD_START_TIMEOUT = 240.0   # the very first start builds the base image (~35 s)
CLOUD_STOP_TIMEOUT = 90.0
AWS_TIMEOUT = 60.0
BOOT_TIMEOUT = 60.0           # create -> cloud-init done (measured ~3 s for one instance)
IMDS = "http://169.254.169.254/latest"
#: an IMDSv2 token, as shell (inside an instance: `curl -H "X-aws-ec2-metadata-token: {TOKEN}" …`)
TOKEN = f"$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' {IMDS}/api/token)"


class AwsCliError(AssertionError):
    """An ``aws`` command failed; the message carries the command and its stderr (no traceback)."""

    def __init__(self, args: tuple[str, ...], proc: subprocess.CompletedProcess[str]) -> None:
        self.stderr = proc.stderr
        self.returncode = proc.returncode
        super().__init__(f"aws {shlex.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def read_env_file(path: Path) -> dict[str, str]:
    """``export K=V`` lines → dict (what ``source DIR/env`` would set)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    return env


@dataclass
class Cloud:
    """One running local cloud, seen from the outside."""

    state_dir: Path
    env: dict[str, str]
    ready: dict[str, Any]
    home: Path
    started_status: dict[str, Any] = field(default_factory=dict)  # read the moment `cloud start` returned
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = Runtime(self.state_dir / "runtime")  # names only: the daemon owns the objects

    @property
    def tag(self) -> str:
        return self.runtime.tag

    @property
    def image_id(self) -> str:
        return str(self.ready["image_id"])

    def aws(self, *args: str, timeout: float = AWS_TIMEOUT) -> dict[str, Any]:
        """``aws --output json ARGS`` with only the env file (plus PATH, HOME); parsed stdout or {}."""
        __tracebackhide__ = True
        proc = self.aws_raw(*args, timeout=timeout)
        if proc.returncode != 0:
            raise AwsCliError(args, proc)
        return dict(json.loads(proc.stdout)) if proc.stdout.strip() else {}

    def aws_raw(self, *args: str, timeout: float = AWS_TIMEOUT) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        return _run([AWS, "--output", "json", *args], env=env, timeout=timeout)

    def status(self) -> dict[str, Any]:
        proc = _run([PHOENIXCI, "cloud", "status", "--state-dir", str(self.state_dir), "--json"], timeout=30)
        return dict(json.loads(proc.stdout))

    def instance_status(self, instance_id: str) -> dict[str, Any]:
        for inst in self.status().get("instances", []):
            if inst["instance_id"] == instance_id:
                return dict(inst)
        return {"instance_id": instance_id, "state": None, "boot_phase": "absent", "error": None}

    def wait_phase(self, instance_id: str, phase: str, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        def check() -> dict[str, Any]:
            inst = self.instance_status(instance_id)
            if inst["boot_phase"] == "failed" and phase != "failed":
                raise AssertionError(f"instance {instance_id} failed: {inst}")
            return inst if inst["boot_phase"] == phase else {}

        return wait_until(check, timeout=timeout, interval=0.2, what=f"{instance_id} boot_phase {phase}")

    def subnet_info(self, cidr: str) -> dict[str, str]:
        return dict(self.status()["subnets"][cidr])

    def pid(self) -> int:
        return int((self.state_dir / "cloud.pid").read_text().strip())


def leftovers(tag: str, state_dir: Path) -> list[str]:
    """Everything on the machine that carries ``tag`` (or lives under ``state_dir``)."""
    out = [f"netns {n}" for n in netlink.netns_names() if n.startswith(tag)]
    out += [f"link {n}" for n in netlink.link_names() if n.startswith(tag)]
    out += [f"cgroup {p.name}" for p in cgroups.root().glob(f"{tag}*")]
    out += [f"nft table {t}" for t in netlink.tables() if t == f"phoenixci_{tag}"]
    out += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(state_dir) + "/")]
    out += [f"process {pid} {_describe(pid)}" for pid in processes_in_cgroups(tag)]
    return out


def _describe(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "(gone)"
    comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
    return f"{comm} state {state}"


def running(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie has)."""
    described = _describe(pid)
    return described != "(gone)" and not described.endswith("state Z")


def wait_no_leftovers(tag: str, state_dir: Path, timeout: float = 5.0) -> list[str]:
    """Leftovers once exiting processes had ``timeout`` seconds to be reaped (empty list if none)."""
    first = leftovers(tag, state_dir)
    if not first:
        return []
    log.warning("cloud %s: waiting for %s to go", tag, first)
    try:
        wait_until(lambda: not leftovers(tag, state_dir), timeout=timeout, interval=0.1,
                   what=f"nothing of cloud {tag} left")
    except WaitTimeout:
        return leftovers(tag, state_dir)
    return []


def processes_in_cgroups(tag: str) -> list[int]:
    """PIDs whose cgroup path names one of this cloud's cgroups (zombies — exited processes that
    the machine's PID 1 has not reaped yet, which takes ~1.5 s here — do not count)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or _describe(int(proc.name)).endswith("state Z"):
            continue
        with contextlib.suppress(OSError):
            if any(part.startswith(tag) for line in (proc / "cgroup").read_text().splitlines()
                   for part in line.split(":", 2)[-1].split("/")):
                pids.append(int(proc.name))
    return pids


def daemon_alive(pid: int) -> bool:
    """Whether ``pid`` still runs as a cloud daemon (an exited zombie has an empty cmdline)."""
    try:
        return b"phoenixci.localcloud.daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cloud_start(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([PHOENIXCI, "cloud", "start", "--state-dir", str(state_dir), *args], timeout=CLOUD_START_TIMEOUT)


def cloud_stop(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return _run([PHOENIXCI, "cloud", "stop", "--state-dir", str(state_dir)], timeout=CLOUD_STOP_TIMEOUT)


def attach(state_dir: Path, home: Path) -> Cloud:
    env = read_env_file(state_dir / "env")
    ready = json.loads((state_dir / "ready.json").read_text())
    return Cloud(state_dir, env, ready, home)


@contextlib.contextmanager
def running_cloud(state_dir: Path, *start_args: str) -> Iterator[Cloud]:
    """``phoenixci cloud start [start_args]`` … yield … ``phoenixci cloud stop``, then nothing of it may be left."""
    __tracebackhide__ = True
    state_dir = state_dir.resolve()
    home = state_dir.parent / f"{state_dir.name}-home"
    home.mkdir(parents=True, exist_ok=True)
    tag = Runtime(state_dir / "runtime").tag
    try:
        proc = cloud_start(state_dir, *start_args)
        started = daemon.status(state_dir)  # what a script reads right after `cloud start` returns
        assert proc.returncode == 0, f"phoenixci cloud start failed: {proc.stdout}{proc.stderr}"
        cloud = attach(state_dir, home)
        cloud.started_status = started
        yield cloud
    finally:
        pid = _read_pid(state_dir)  # the daemon running now (a test may have restarted it)
        proc = cloud_stop(state_dir)
        alive = pid is not None and daemon_alive(pid)  # `cloud stop` returns once the daemon exited
        left = wait_no_leftovers(tag, state_dir)
        assert proc.returncode == 0, f"phoenixci cloud stop failed: {proc.stdout}{proc.stderr}"
        assert not alive, f"daemon {pid} still runs after `phoenixci cloud stop` returned"
        assert left == [], f"cloud {tag} left {left}"


def _read_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "cloud.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local cloud needs root (network namespaces, bridges, mounts); CI runs as root")




# ---- networks, keys, instances --------------------------------------------------------------------

def used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"], timeout=10).stdout or "[]")
    nets = []
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("", "default"):
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def free_subnet(avoid: tuple[str, ...] = ()) -> str:
    """A random 10.x.y.0/24 that no route on this machine (and nothing in ``avoid``) overlaps."""
    used = used_networks() + [ipaddress.ip_network(a) for a in avoid]
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{random.randint(100, 249)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return str(net)
    raise RuntimeError("no free 10.x.y.0/24 on this machine")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Network:
    vpc_id: str
    subnet_id: str
    cidr: str
    group_id: str
    key_name: str
    key_file: Path


def make_network(cloud: Cloud, key_file: Path, ports: tuple[int, ...] = (22, 8080),
                 cidr: str | None = None, zone: str | None = None) -> Network:
    """Key pair, VPC, subnet and a security group with ``ports`` open, all with the aws CLI."""
    cidr = cidr or free_subnet()
    key_name = unique("key")
    cloud.aws("ec2", "import-key-pair", "--key-name", key_name,
              "--public-key-material", f"fileb://{key_file}.pub")
    vpc_cidr = str(ipaddress.ip_network(cidr).supernet(new_prefix=16))
    vpc = cloud.aws("ec2", "create-vpc", "--cidr-block", vpc_cidr)["Vpc"]["VpcId"]
    where = ("--availability-zone", zone) if zone else ()
    subnet = cloud.aws("ec2", "create-subnet", "--vpc-id", vpc, "--cidr-block", cidr, *where)["Subnet"]["SubnetId"]
    group = cloud.aws("ec2", "create-security-group", "--group-name", unique("sg"), "--description", "test",
                      "--vpc-id", vpc)["GroupId"]
    perms = [{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
             for p in ports]
    cloud.aws("ec2", "authorize-security-group-ingress", "--group-id", group,
              "--ip-permissions", json.dumps(perms))
    return Network(vpc, subnet, cidr, group, key_name, key_file)




def run_instance(cloud: Cloud, net: Network, user_data: str, *extra: str) -> dict[str, Any]:
    ud = net.key_file.parent / f"user-data-{uuid.uuid4().hex[:8]}"
    ud.write_text(user_data)
    out = cloud.aws("ec2", "run-instances", "--image-id", cloud.image_id, "--count", "1",
                    "--instance-type", "t3.micro", "--key-name", net.key_name, "--subnet-id", net.subnet_id,
                    "--security-group-ids", net.group_id, "--user-data", f"file://{ud}", *extra)
    return dict(out["Instances"][0])


def terminate(cloud: Cloud, *instance_ids: str) -> None:
    """Best-effort terminate (teardown): never hides the test's own failure."""
    with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
        cloud.aws("ec2", "terminate-instances", "--instance-ids", *instance_ids)


def ssh_host(cloud: Cloud, instance_id: str, ip: str, key_file: Path) -> Any:
    """A testinfra host over ``ssh`` with the instance's host key pinned (read from its disk)."""
    host_key = wait_until(lambda: cloud.runtime.ssh_host_key(instance_id), timeout=BOOT_TIMEOUT,
                          what=f"{instance_id} SSH host key")
    known = key_file.parent / f"known_hosts-{instance_id}"
    known.write_text(f"{ip} {host_key}\n")
    config = key_file.parent / f"ssh_config-{instance_id}"
    config.write_text(f"Host {ip}\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
                      f"  BatchMode yes\n  IdentitiesOnly yes\n  LogLevel ERROR\n")
    host = testinfra.get_host(f"ssh://admin@{ip}", ssh_config=str(config), ssh_identity_file=str(key_file),
                              timeout=5, controlpersist=0)
    wait_until(lambda: host.run("true").rc == 0, timeout=BOOT_TIMEOUT, interval=0.2,
               what=f"ssh admin@{ip} ({instance_id})")
    return host


def port_open(ip: str, port: int, timeout: float = 1.0) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((ip, port)) == 0


def remote(host: Any, command: str, timeout: float = 60) -> Any:
    """Run ``command`` over SSH, bounded by ``timeout`` on the instance (testinfra has no limit)."""
    return host.run(f"timeout {int(timeout)} sh -c {shlex.quote(command)}")


def background(host: Any, command: str) -> None:
    """Start ``command`` detached on the instance (stdin/stdout/stderr closed, so ssh returns)."""
    result = host.run(f"setsid nohup sh -c {shlex.quote(command)} </dev/null >/dev/null 2>&1 &")
    assert result.rc == 0, result.stderr
