"""One dnsmasq per bridge: DHCP (static leases from a hosts file, no router) and, only when
``dns_names`` are given (the package path), DNS on the gateway that answers those names with the
gateway's address and refuses every other (no upstream: nothing else resolves).

An instance starts only once its bridge's dnsmasq holds its lease: ``start`` returns when dnsmasq
has read the hosts file (its log says ``read <file>`` at start and on each SIGHUP) and ``set_host``
when the reload it asked for is done. Before, the first instance of a bridge could be started
while dnsmasq was still coming up (no pid file yet, so no SIGHUP): dnsmasq had read the hosts file
before the lease was in it, ignored the instance's DHCP requests, and cloud-init's Ec2Local sat
through its DHCP timeouts until another instance's reload taught dnsmasq the lease (50-120 s).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from phoenixci.localcloud.netlink import NetError

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # dnsmasq is up in ~20 ms; a loaded CI machine gets slack
RELOAD_TIMEOUT = 5.0


class Dnsmasq:
    def __init__(self, bridge: str, cidr: str, state: Path, dns_names: tuple[str, ...] = ()) -> None:
        self.bridge, self.cidr, self.state, self.dns_names = bridge, cidr, state, tuple(sorted(dns_names))
        self.hosts = state / "dhcp-hosts"
        self.pidfile = state / "dnsmasq.pid"
        self.logfile = state / "dnsmasq.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def log_size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except OSError:
            return 0

    def read_since(self, offset: int) -> bool:
        """Whether dnsmasq's log says, after byte ``offset``, that it (re)read the hosts file
        (only the new part of the log is read: it grows with every lease)."""
        try:
            with open(self.logfile, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return any(line.endswith(f": read {self.hosts}") for line in text.splitlines())

    def start(self, cgroup_procs: Path) -> None:
        if self.pid():
            return
        self.state.mkdir(parents=True, exist_ok=True)
        self.hosts.touch()
        self.pidfile.unlink(missing_ok=True)
        before = self.log_size()
        net = ipaddress.ip_network(self.cidr)
        gateway = str(next(net.hosts()))
        dns = [f"--address=/{name}/{gateway}" for name in self.dns_names]
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--port=53" if dns else "--port=0", *dns, "--user=root", f"--interface={self.bridge}",
                "--bind-interfaces", "--except-interface=lo",
                f"--dhcp-range={net.network_address},static,{net.netmask},12h",
                f"--dhcp-hostsfile={self.hosts}", "--dhcp-option=3",
                f"--dhcp-option=6,{gateway}" if dns else "--dhcp-option=6",
                f"--dhcp-leasefile={self.state / 'leases'}", "--dhcp-authoritative",
                f"--pid-file={self.pidfile}", f"--log-facility={self.logfile}"]

        def join_cgroup() -> None:
            cgroup_procs.write_text("0")

        errfile = self.state / "dnsmasq.err"  # what it says before its log is open (bad option, busy port)
        with open(errfile, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=join_cgroup, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.pid() and self.read_since(before)):
            if proc.poll() is not None:
                raise NetError(f"dnsmasq for bridge {self.bridge} exited at start with status {proc.returncode}: "
                               f"{errfile.read_text(errors='replace').strip() or self._tail()}")
            if time.monotonic() > deadline:
                raise NetError(f"dnsmasq for bridge {self.bridge} did not come up in {START_TIMEOUT:g} s "
                               f"(pid file {self.pidfile}, log: {self._tail()})")
            time.sleep(0.005)
        log.info("dnsmasq (DHCP%s) on %s", f", DNS for {len(dns)} package source name(s)" if dns else " only",
                 self.bridge)

    def set_host(self, mac: str, ip: str | None) -> None:
        """Add (ip given) or remove (ip None) the static lease for ``mac``; when adding, return
        only once dnsmasq has re-read the hosts file (see the module's docstring)."""
        lines = [line for line in (self.hosts.read_text().splitlines() if self.hosts.exists() else [])
                 if not line.startswith(mac + ",")]
        if ip:
            lines.append(f"{mac},{ip}")
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(self.hosts)  # never a half-written file for a reload to read
        pid = self.pid()
        if not pid:
            if ip:
                raise NetError(f"dnsmasq for bridge {self.bridge} is not running (pid file {self.pidfile}); "
                               f"the instance at {ip} would get no DHCP lease")
            return
        before = self.log_size()
        os.kill(pid, signal.SIGHUP)
        if not ip:
            return
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while not self.read_since(before):
            if time.monotonic() > deadline:
                raise NetError(f"dnsmasq for bridge {self.bridge} (pid {pid}) did not re-read {self.hosts} "
                               f"within {RELOAD_TIMEOUT:g} s of SIGHUP (log: {self._tail()})")
            time.sleep(0.002)

    def _tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-lines:]) or "empty"
        except OSError:
            return "none"
