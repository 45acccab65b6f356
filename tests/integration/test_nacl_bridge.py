"""Network ACLs in the kernel (localcloud/nacls.py through hostsg's tables; needs root).

A bridge ``pht<rand>b0`` (a subnet: gateway .1, made by netlink.ensure_bridge) and one namespace
plumbed as the runtime plumbs instances, with HTTP servers on 8080 and 8081 and a security group
open to both; on the gateway a stand-in IMDS and a stand-in API (a service port: counts as HTTPS).
The host stands for the internet. Each test applies the host-side tables with the subnet's ACL,
then probes: ACLs decide in rule order, ingress and egress separately, statelessly (a reply the
egress rules do not allow never arrives), and never filter the metadata service. The cloud-level
story (an ACL made through the API): tests/integration/test_nacl_localcloud.py.
"""
from __future__ import annotations

import ipaddress
import os
import random
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from phoenixci.errors import PhoenixError
from phoenixci.localcloud import hostcheck, hostsg, netlink
from phoenixci.localcloud.addressing import refuse_overlap
from phoenixci.localcloud.nacls import NaclEntry, nacl_rules
from phoenixci.util import free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create bridges, namespaces and nft rules"),
]
PORTS = (8080, 8081)
STAR = (NaclEntry(32767, False, False), NaclEntry(32767, True, False))
ALL_OUT = NaclEntry(100, True, True)


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"{self.server.name} {self.client_address[0]}".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Subnet:
    tag: str
    bridge: str
    gateway: str = ""
    ip: str = ""
    mac: str = ""
    imds_port: int = 0
    api_port: int = 0
    other_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return f"{self.tag}-a"

    @property
    def veth(self) -> str:
        return f"{self.tag}va"

    def guard(self, *entries: NaclEntry) -> None:
        """Apply the host-side tables with this subnet's ACL made of ``entries`` (and ``*``)."""
        acl = nacl_rules(SimpleNamespace(nacls={"subnet": ("acl-test", entries + STAR)}))["subnet"]
        port = hostsg.Port("i-a0", self.veth, self.mac, self.ip, (hostsg.OPEN,))
        hostsg.apply(self.tag, hostsg.render(self.tag, [hostsg.Subnet(self.bridge, self.gateway, self.imds_port)],
                                             [port], {}, services=[self.api_port], acls={self.bridge: acl}))

    def run(self, command: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, "sh", "-c", command],
                              capture_output=True, text=True, timeout=timeout)


def _cidr() -> str:
    for _ in range(100):
        cidr = f"10.252.{random.randint(1, 254)}.0/24"
        try:
            refuse_overlap(cidr)
            return cidr
        except PhoenixError:
            continue
    raise RuntimeError("no free 10.252.x.0/24")


@pytest.fixture(scope="module")
def subnet() -> Iterator[Subnet]:
    tag = "pht" + secrets.token_hex(2)[:3]  # not phx: never a real cloud's tag
    assert not [n for n in netlink.link_names() + netlink.netns_names() if n.startswith(tag)]
    net = ipaddress.ip_network(_cidr())
    sub = Subnet(tag, f"{tag}b0", ip=str(net.network_address + 5))
    sub.mac = "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(sub.ip).packed)
    servers: list[ThreadingHTTPServer] = []
    try:
        sub.gateway = netlink.ensure_bridge(sub.bridge, str(net))
        netlink.plumb_instance(sub.netns, sub.veth, sub.bridge, sub.mac, sub.ip, net.prefixlen, sub.gateway)
        for name in ("imds", "api", "other"):
            server = ThreadingHTTPServer((sub.gateway, free_port(sub.gateway)), _Echo)
            server.name = name  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        sub.imds_port, sub.api_port, sub.other_port = (s.server_address[1] for s in servers)
        sub.guard(NaclEntry(100, False, True), ALL_OUT)
        for port in PORTS:
            sub.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", sub.netns, sys.executable, "-m", "http.server", str(port), "--bind", sub.ip],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: all(sub.run(f"ss -Hltn 'sport = :{p}'").stdout.strip() for p in PORTS),
                   timeout=15, what="http.server on both ports")
        yield sub
    finally:
        for proc in sub.procs:
            proc.kill()
            proc.wait(timeout=10)
        for server in servers:
            server.shutdown()
            server.server_close()
        netlink.delete_netns(sub.netns)
        netlink.delete_link(sub.veth)
        netlink.delete_link(sub.bridge)
        netlink.delete_table(hostsg.table_name(tag))
        assert hostcheck.host_leftovers(tag, "") == []


PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except OSError as e:
    print(type(e).__name__)
"""


def reach(sub: Subnet, who: str, ip: str, port: int) -> bool:
    """Whether ``who`` ("host", or "a" inside the subnet) gets a TCP connection to ip:port."""
    argv = [sys.executable, "-c", PROBE, ip, str(port)]
    if who != "host":
        argv = ["ip", "netns", "exec", sub.netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() == "open"


def imds(sub: Subnet) -> str:
    return sub.run("curl -s -m 2 http://169.254.169.254/latest/meta-data/").stdout


def test_rules_apply_in_number_order(subnet: Subnet) -> None:
    """Rule 100 denies TCP 8080, rule 200 allows everything: 8080 is closed, 8081 open."""
    subnet.guard(NaclEntry(200, False, True), NaclEntry(100, False, False, "6", ports=(8080, 8080)), ALL_OUT)
    assert not reach(subnet, "host", subnet.ip, 8080)
    assert reach(subnet, "host", subnet.ip, 8081)
    subnet.guard(NaclEntry(100, False, True), NaclEntry(200, False, False, "6", ports=(8080, 8080)), ALL_OUT)
    assert reach(subnet, "host", subnet.ip, 8080), "rule 100 allows before 200 could deny"


def test_stateless_a_reply_needs_an_egress_rule(subnet: Subnet) -> None:
    """Ingress allows all, egress only TCP 443: the server's reply to the host is dropped."""
    https_only = NaclEntry(100, True, True, "6", ports=(443, 443))
    subnet.guard(NaclEntry(100, False, True), https_only)
    assert not reach(subnet, "host", subnet.ip, 8081)
    assert reach(subnet, "a", subnet.gateway, subnet.api_port), "the API's port counts as HTTPS"
    assert not reach(subnet, "a", subnet.gateway, subnet.other_port)
    subnet.guard(NaclEntry(100, False, True), https_only, NaclEntry(110, True, True, "6", ports=(1024, 65535)))
    assert reach(subnet, "host", subnet.ip, 8081), "replies to ephemeral ports allowed: the server answers"


def test_ingress_and_egress_are_separate(subnet: Subnet) -> None:
    """Ingress denies the servers' ports (rule 90) and then allows replies (ephemeral ports), egress
    allows all: the host cannot open 8081, the instance's own calls get their replies; with no
    egress rule but ``*`` its calls go nowhere."""
    subnet.guard(NaclEntry(90, False, False, "6", ports=(8080, 8081)),
                 NaclEntry(100, False, True, "6", ports=(1024, 65535)), ALL_OUT)
    assert not reach(subnet, "host", subnet.ip, 8081)
    assert reach(subnet, "a", subnet.gateway, subnet.other_port), "out and the reply back in (ephemeral)"
    subnet.guard(NaclEntry(100, False, True, "6", ports=(1024, 65535)))  # no egress rule but *
    assert not reach(subnet, "a", subnet.gateway, subnet.other_port)


def test_a_closed_acl_never_filters_the_metadata_service(subnet: Subnet) -> None:
    subnet.guard()  # a new custom ACL: only the * rules
    assert not reach(subnet, "host", subnet.ip, 8081)
    assert not reach(subnet, "a", subnet.gateway, subnet.api_port)
    assert imds(subnet) == f"imds {subnet.ip}"


def test_root_inside_changes_nothing(subnet: Subnet) -> None:
    subnet.guard(NaclEntry(200, False, True), NaclEntry(100, False, False, "6", ports=(8080, 8080)), ALL_OUT)
    flushed = subnet.run("nft flush ruleset && nft list ruleset")
    assert flushed.returncode == 0 and flushed.stdout.strip() == "", flushed
    assert not reach(subnet, "host", subnet.ip, 8080)
    assert reach(subnet, "host", subnet.ip, 8081)
