"""Instances of the local cloud as system containers (see DESIGN "System containers as EC2 instances").

Per subnet: a bridge ``<tag>b<hash>`` whose host side is the gateway (.1), a dnsmasq (DHCP with static
leases: cloud-init's Ec2Local runs DHCP and stalls ~60 s unanswered; DNS only with pkgpath) and a
host nftables table ``phoenixci_<tag>`` dropping anything routed from or to its own interfaces.
Per instance: netns ``<tag>-<short>`` with ``eth0`` (the private IP/MAC) on a veth into the bridge,
routes to the subnet and 169.254.169.254 only (no default route: nothing can leave the machine; the
host redirects 169.254.169.254 and guards the link: hostsg.py); a cgroup ``<tag>-i<short>`` (kill =
``cgroup.kill``); pid/mount/uts/ipc/cgroup namespaces, an overlayfs root, systemd as PID 1 (see
container_init.py). ``<tag>`` = name_prefix + 3 hex, claimed per state dir (cloudtags.claim_free_tag,
read back by hostcheck.tag_of): clouds never collide.
"""
from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from phoenixci.errors import PhoenixError
from phoenixci.localcloud import cgroups, netlink
from phoenixci.localcloud.boot_phase import cloud_init_phase
from phoenixci.localcloud.dnsmasq import Dnsmasq
from phoenixci.localcloud.hostcheck import tag_of
from phoenixci.localcloud.image import Image

log = logging.getLogger(__name__)

INIT_SCRIPT = Path(__file__).with_name("container_init.py")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class InstanceError(PhoenixError):
    """An instance could not be started, stopped, destroyed or inspected."""


@dataclass(frozen=True)
class InstanceSpec:
    instance_id: str
    private_ip: str
    prefix_len: int
    gateway_ip: str
    subnet_cidr: str
    mac: str
    hostname: str
    imds_port: int
    bridge: str


@dataclass(frozen=True)
class Bridge:
    name: str
    gateway_ip: str
    cidr: str


def _h(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


class Runtime:
    def __init__(self, state_dir: Path, name_prefix: str = "phx") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.tag = tag_of(self.state_dir, name_prefix)
        self.table = f"phoenixci_{self.tag}"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()  # the leases file is read-modify-write

    # ---- names -------------------------------------------------------------------------------
    def _short(self, instance_id: str) -> str:
        return _h(instance_id, 8)

    def netns(self, instance_id: str) -> str:
        return f"{self.tag}-{self._short(instance_id)}"

    netns_name = netns

    def veth(self, instance_id: str) -> str:
        return f"{self.tag}v{self._short(instance_id)}"

    def _cgroup(self, instance_id: str) -> Path:
        return cgroups.root() / f"{self.tag}-i{self._short(instance_id)}"

    def _idir(self, instance_id: str) -> Path:
        if not _ID_RE.match(instance_id):
            raise InstanceError(f"bad instance id {instance_id!r}")
        return self.state_dir / "instances" / instance_id

    def bridge_name(self, subnet_cidr: str) -> str:
        return f"{self.tag}b{_h(subnet_cidr, 5)}"

    def _dnsmasq(self, bridge: str, cidr: str, dns_names: tuple[str, ...] = ()) -> Dnsmasq:
        return Dnsmasq(bridge, cidr, self.state_dir / "bridges" / bridge, dns_names)

    def _dns_cgroup(self, bridge: str) -> Path:
        return cgroups.root() / f"{self.tag}-d{bridge[len(self.tag) + 1:]}"

    # ---- bridges -----------------------------------------------------------------------------
    def ensure_bridge(self, subnet_cidr: str, dns_names: tuple[str, ...] = ()) -> Bridge:
        """The subnet's bridge, gateway and dnsmasq (DNS for ``dns_names`` only: see dnsmasq.Dnsmasq)."""
        name = self.bridge_name(subnet_cidr)
        netlink.host_firewall(self.table, self.tag)
        gateway = netlink.ensure_bridge(name, subnet_cidr)
        bdir = self.state_dir / "bridges" / name
        bdir.mkdir(parents=True, exist_ok=True)
        bridge = Bridge(name=name, gateway_ip=gateway, cidr=subnet_cidr)
        (bdir / "bridge.json").write_text(json.dumps(asdict(bridge)))
        cg = cgroups.create(self._dns_cgroup(name).name)
        self._dnsmasq(name, subnet_cidr, dns_names).start(cg / "cgroup.procs")
        return bridge

    def bridges(self) -> list[Bridge]:
        return [Bridge(**json.loads(p.read_text()))
                for p in sorted((self.state_dir / "bridges").glob("*/bridge.json"))]

    def remove_bridge(self, bridge: Bridge | str) -> None:
        name = bridge.name if isinstance(bridge, Bridge) else bridge
        cgroups.remove(self._dns_cgroup(name))
        netlink.delete_link(name)
        shutil.rmtree(self.state_dir / "bridges" / name, ignore_errors=True)
        if not self.bridges():
            netlink.delete_table(self.table)

    # ---- instances ---------------------------------------------------------------------------
    def start(self, spec: InstanceSpec, image: Image, layers: builtins.list[Path] | None = None) -> None:
        """Plumb the network, start systemd as PID 1 over ``layers`` (top first) + the image."""
        t0 = time.monotonic()
        idir = self._idir(spec.instance_id)
        cg = self._cgroup(spec.instance_id)
        if cgroups.populated(cg):
            raise InstanceError(f"instance {spec.instance_id} is already running")
        for sub in ("upper", "work", "merged", "stage"):
            (idir / sub).mkdir(parents=True, exist_ok=True)
        (idir / "spec.json").write_text(json.dumps({**asdict(spec), "image": image.name,
                                                    "rootfs": str(image.rootfs)}))
        try:
            cg = cgroups.create(cg.name)
            with self._lock:
                self._dnsmasq(spec.bridge, spec.subnet_cidr).set_host(spec.mac, spec.private_ip)
            self._unplumb(spec.instance_id)
            netlink.plumb_instance(self.netns(spec.instance_id), self.veth(spec.instance_id), spec.bridge,
                                   spec.mac, spec.private_ip, spec.prefix_len, spec.gateway_ip)
            argv = ["nsenter", f"--net=/run/netns/{self.netns(spec.instance_id)}", "--",
                    "unshare", "--mount", "--uts", "--ipc", "--pid", "--cgroup", "--fork", "--kill-child",
                    sys.executable, "-I", str(INIT_SCRIPT),
                    "--lower", ":".join([*map(str, layers or []), str(image.rootfs)]), "--upper", str(idir / "upper"),
                    "--work", str(idir / "work"), "--merged", str(idir / "merged"),
                    "--stage", str(idir / "stage"), "--hostname", spec.hostname,
                    "--uuid", "ec2" + str(uuid.uuid4())[3:]]
            procs = cg / "cgroup.procs"
            with open(idir / "console.log", "ab") as console:
                self._procs[spec.instance_id] = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=lambda: procs.write_text("0"))
            self._wait_for_init(spec.instance_id, timeout=10)
        except BaseException:
            self.destroy(spec.instance_id, keep_state=True)
            raise
        log.info("instance %s: systemd is PID 1 after %.3f s (netns %s, %s)", spec.instance_id,
                 time.monotonic() - t0, self.netns(spec.instance_id), spec.private_ip)

    def _wait_for_init(self, instance_id: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        proc = self._procs[instance_id]
        while time.monotonic() < deadline:
            pid = self.init_pid(instance_id)
            if pid:
                return pid
            if proc.poll() is not None:
                tail = (self._idir(instance_id) / "console.log").read_text(errors="replace")[-400:]
                raise InstanceError(f"instance {instance_id} exited at start: {tail.strip()}")
            time.sleep(0.005)
        raise InstanceError(f"instance {instance_id}: systemd did not become PID 1 in {timeout:g} s")

    def init_pid(self, instance_id: str) -> int | None:
        """Host PID of the container's PID 1 if it is systemd."""
        return cgroups.namespace_init(self._cgroup(instance_id), "systemd")

    def stop(self, instance_id: str, timeout: float = 10.0) -> None:
        """Ask systemd to power off; kill what is left after ``timeout``. The upper dir stays."""
        cg = self._cgroup(instance_id)
        pid = self.init_pid(instance_id)
        if pid:
            os.kill(pid, signal.SIGRTMIN + 4)  # systemd: poweroff
            deadline = time.monotonic() + timeout
            while cgroups.populated(cg) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.destroy(instance_id, keep_state=True)

    def destroy(self, instance_id: str, keep_state: bool = False) -> None:
        """Kill the instance and remove its netns, veth, cgroup, lease (and state dir)."""
        t0 = time.monotonic()
        idir = self._idir(instance_id)
        cgroups.remove(self._cgroup(instance_id))
        proc = self._procs.pop(instance_id, None)
        if proc is not None:
            proc.wait(timeout=5)
        self._unplumb(instance_id)
        spec = self._spec(instance_id)
        if spec is not None:
            with self._lock:
                self._dnsmasq(spec["bridge"], spec["subnet_cidr"]).set_host(spec["mac"], None)
        if not keep_state:
            shutil.rmtree(idir, ignore_errors=True)
        log.info("instance %s %s in %.3f s", instance_id, "stopped" if keep_state else "destroyed",
                 time.monotonic() - t0)

    def _unplumb(self, instance_id: str) -> None:
        if netlink.link_exists(self.veth(instance_id)):
            netlink.delete_link(self.veth(instance_id))
        if netlink.netns_exists(self.netns(instance_id)):
            netlink.delete_netns(self.netns(instance_id))

    def _spec(self, instance_id: str) -> dict | None:
        try:
            return dict(json.loads((self._idir(instance_id) / "spec.json").read_text()))
        except (OSError, ValueError):
            return None

    # ---- inspection --------------------------------------------------------------------------
    def boot_phase(self, instance_id: str) -> str:
        """absent | stopped | starting | booting | cloud-init | ready | failed."""
        if self._spec(instance_id) is None:
            return "absent"
        if not cgroups.populated(self._cgroup(instance_id)):
            return "stopped"
        pid = self.init_pid(instance_id)
        if pid is None:
            return "starting"
        return cloud_init_phase(Path(f"/proc/{pid}/root/run"))

    def system_state(self, instance_id: str) -> str:
        """systemd's ``is-system-running`` inside the instance (via nsenter)."""
        pid = self.init_pid(instance_id)
        if pid is None:
            return "offline"
        proc = subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--",
                               "systemctl", "is-system-running"], capture_output=True, text=True, timeout=5)
        return proc.stdout.strip() or "unknown"

    def ssh_host_key(self, instance_id: str) -> str:
        """The instance's public ed25519 host key ("ssh-ed25519 AAAA…"), read from its overlay."""
        path = self._idir(instance_id) / "upper/etc/ssh/ssh_host_ed25519_key.pub"
        try:
            return " ".join(path.read_text().split()[:2])
        except OSError as e:
            raise InstanceError(f"instance {instance_id} has no SSH host key yet ({path})") from e

    def memory(self, instance_id: str) -> dict[str, int]:
        return cgroups.memory_bytes(self._cgroup(instance_id))

    def list(self) -> list[str]:
        return sorted(p.parent.name for p in (self.state_dir / "instances").glob("*/spec.json"))

    # ---- cleanup -----------------------------------------------------------------------------
    def sweep(self) -> builtins.list[str]:
        """Remove everything of this cloud's tag left by a killed run; return what was removed."""
        removed: builtins.list[str] = []
        removed += [f"cgroup {name}" for name in cgroups.remove_prefixed(self.tag)]
        removed += netlink.remove_prefixed(self.tag)
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(self.state_dir) + "/"):
                subprocess.run(["umount", "-l", target], check=False)
                removed.append(f"mount {target}")
        if self.table in netlink.tables():
            netlink.delete_table(self.table)
            removed.append(f"nft table {self.table}")
        for sub in ("instances", "bridges"):
            if (self.state_dir / sub).exists():
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        if removed:
            log.warning("swept leftovers of %s: %s", self.tag, ", ".join(removed))
        return removed

    def close(self) -> builtins.list[str]:
        """Destroy every instance and bridge; return what was still there after (swept): the
        cloud made it but its own teardown missed it, or someone else made it under its tag."""
        for instance_id in self.list():
            self.destroy(instance_id)
        for bridge in self.bridges():
            self.remove_bridge(bridge)
        return self.sweep()
