"""The host-side rules of instances' links (localcloud/hostsg.py) in the kernel (needs root).

A bridge ``pht<rand>b0`` (gateway .1, made by netlink.ensure_bridge) and three namespaces plumbed
as the runtime plumbs instances (netlink.plumb_instance): A and B have rules, C has none. HTTP
servers listen inside A and B on 8081 and 8082; on the gateway a stand-in IMDS answers with the
caller's address, a stand-in API (a service port: counts as HTTPS) and another server. Nothing here
needs a local cloud or an instance; the cloud-level story is tests/integration/localcloud/.
"""
from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phoenixci.errors import PhoenixError
from phoenixci.localcloud import hostcheck, hostsg, netlink
from phoenixci.localcloud.addressing import refuse_overlap
from phoenixci.localcloud.secgroups import Rule, SecurityGroup
from phoenixci.util import free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create bridges, namespaces and nft rules"),
]
PORTS = (8081, 8082)
WEB = SecurityGroup("sg-a", [Rule("tcp", 8081, 8081, ["0.0.0.0/0"])],
                    [Rule("tcp", 8081, 8081, ["0.0.0.0/0"]), Rule("tcp", 443, 443, ["0.0.0.0/0"])])
BACKEND = SecurityGroup("sg-b", [Rule("tcp", 8081, 8082, [], ["sg-a"])], [Rule("-1", cidrs=["0.0.0.0/0"])])


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
class Lan:
    tag: str
    bridge: str
    gateway: str
    ips: dict[str, str]          # a/b/c → address
    macs: dict[str, str]
    imds_port: int
    api_port: int
    other_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def netns(self, who: str) -> str:
        return f"{self.tag}-{who}"

    def veth(self, who: str) -> str:
        return f"{self.tag}v{who}"

    def port(self, who: str, group: SecurityGroup) -> hostsg.Port:
        return hostsg.Port(f"i-{who}0", self.veth(who), self.macs[who], self.ips[who], (group,))

    def guard(self) -> str:
        script = hostsg.render(self.tag, [hostsg.Subnet(self.bridge, self.gateway, self.imds_port)],
                               [self.port("a", WEB), self.port("b", BACKEND)],
                               {"sg-a": {self.ips["a"]}, "sg-b": {self.ips["b"]}}, services=[self.api_port])
        hostsg.apply(self.tag, script)
        return script

    def run(self, who: str, command: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns(who), "sh", "-c", command],
                              capture_output=True, text=True, timeout=timeout)


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _subnet() -> str:
    for _ in range(100):
        cidr = f"10.251.{random.randint(1, 254)}.0/24"
        try:
            refuse_overlap(cidr)
            return cidr
        except PhoenixError:
            continue
    raise RuntimeError("no free 10.251.x.0/24")


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    tag = "pht" + secrets.token_hex(2)[:3]  # not phx: never a real cloud's tag
    assert not [n for n in netlink.link_names() + netlink.netns_names() if n.startswith(tag)]
    cidr = _subnet()
    net = ipaddress.ip_network(cidr)
    ips = {w: str(net.network_address + n) for w, n in (("a", 5), ("b", 6), ("c", 7))}
    macs = {w: "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(ip).packed) for w, ip in ips.items()}
    servers: list[ThreadingHTTPServer] = []
    lan = Lan(tag, f"{tag}b0", "", ips, macs, 0, 0, 0)
    try:
        lan.gateway = netlink.ensure_bridge(lan.bridge, cidr)
        for who in ("a", "b", "c"):
            netlink.plumb_instance(lan.netns(who), lan.veth(who), lan.bridge, macs[who], ips[who],
                                   net.prefixlen, lan.gateway)
        for name in ("imds", "api", "other"):
            server = ThreadingHTTPServer((lan.gateway, free_port(lan.gateway)), _Echo)
            server.name = name  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        lan.imds_port, lan.api_port, lan.other_port = (s.server_address[1] for s in servers)
        lan.guard()
        for who in ("a", "b"):
            for port in PORTS:
                lan.procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", lan.netns(who), sys.executable, "-m", "http.server", str(port),
                     "--bind", ips[who]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for who in ("a", "b"):
            wait_until(lambda w=who: lan.run(w, f"ss -Hltn 'sport = :{PORTS[1]}'").stdout.strip(),
                       timeout=15, what=f"http.server in {who}")
        yield lan
    finally:
        for proc in lan.procs:
            proc.kill()
            proc.wait(timeout=10)
        for server in servers:
            server.shutdown()
            server.server_close()
        for who in ("a", "b", "c"):
            netlink.delete_netns(lan.netns(who))
            netlink.delete_link(lan.veth(who))
        netlink.delete_link(lan.bridge)
        netlink.delete_table(hostsg.table_name(tag))
        assert hostcheck.host_leftovers(tag, "") == []


PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(1.0)
if len(sys.argv) > 3: s.bind((sys.argv[3], 0))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except OSError as e:
    print(type(e).__name__)
"""


def reach(lan: Lan, who: str, ip: str, port: int, source: str = "") -> bool:
    """Whether ``who`` (a netns, or "host") gets a TCP connection to ip:port."""
    argv = [sys.executable, "-c", PROBE, ip, str(port)] + ([source] if source else [])
    if who != "host":
        argv = ["ip", "netns", "exec", lan.netns(who)] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() == "open"


def imds(lan: Lan, who: str, source: str = "") -> str:
    iface = f"--interface {source} " if source else ""
    return lan.run(who, f"curl -s -m 2 {iface}http://169.254.169.254/latest/meta-data/").stdout


def test_ingress_from_the_host_is_the_internet(lan: Lan) -> None:
    assert reach(lan, "host", lan.ips["a"], 8081)
    assert not reach(lan, "host", lan.ips["a"], 8082)
    # B opens 8081-8082 to members of sg-a only: the host is not one of them
    assert not reach(lan, "host", lan.ips["b"], 8081)


def test_egress_and_ingress_between_instances(lan: Lan) -> None:
    assert reach(lan, "a", lan.ips["b"], 8081)
    assert not reach(lan, "a", lan.ips["b"], 8082), "A's egress allows only 8081 (and 443)"
    assert reach(lan, "b", lan.ips["a"], 8081)
    assert not reach(lan, "b", lan.ips["a"], 8082), "A's ingress opens only 8081"


def test_egress_to_the_host_and_its_service_ports(lan: Lan) -> None:
    assert reach(lan, "a", lan.gateway, lan.api_port), "a service port counts as HTTPS (A may reach 443)"
    assert not reach(lan, "a", lan.gateway, lan.other_port)
    assert reach(lan, "b", lan.gateway, lan.other_port)


def test_the_metadata_address_leads_to_the_gateway_and_names_the_caller(lan: Lan) -> None:
    assert imds(lan, "a") == f"imds {lan.ips['a']}"
    assert imds(lan, "b") == f"imds {lan.ips['b']}"


def test_root_inside_changes_nothing(lan: Lan) -> None:
    flushed = lan.run("a", "nft flush ruleset && nft list ruleset")
    assert flushed.returncode == 0 and flushed.stdout.strip() == "", flushed
    assert not reach(lan, "host", lan.ips["a"], 8082)
    assert not reach(lan, "b", lan.ips["a"], 8082)
    assert not reach(lan, "a", lan.ips["b"], 8082)
    assert imds(lan, "a") == f"imds {lan.ips['a']}"


def test_a_port_without_rules_sends_and_receives_nothing(lan: Lan) -> None:
    assert not reach(lan, "c", lan.gateway, lan.other_port)
    assert not reach(lan, "host", lan.ips["c"], 8081)
    assert imds(lan, "c") == ""


def _arp_reply(lan: Lan, sender_mac: str, sender_ip: str) -> None:
    """One forged ARP reply from A's eth0 (raw socket): "sender_ip is at sender_mac"."""
    code = f"""
import socket, struct
mac = bytes.fromhex({sender_mac.replace(':', '')!r}); ip = socket.inet_aton({sender_ip!r})
gw = socket.inet_aton({lan.gateway!r})
frame = b"\\xff" * 6 + bytes.fromhex({lan.macs['a'].replace(':', '')!r}) + struct.pack("!H", 0x0806)
frame += struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac + ip + b"\\xff" * 6 + gw
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0)); s.send(frame)
"""
    assert lan.run("a", f"{sys.executable} -c {shlex.quote(code)}").returncode == 0


def _neighbour(lan: Lan, ip: str) -> str:
    out = netlink.run(["ip", "neigh", "show", ip, "dev", lan.bridge])
    return out.split("lladdr")[1].split()[0] if "lladdr" in out else ""


def test_an_instance_cannot_pose_as_another(lan: Lan) -> None:
    b_ip, a_ip = lan.ips["b"], lan.ips["a"]
    reach(lan, "host", b_ip, 8081)  # the host knows B's MAC now
    assert _neighbour(lan, b_ip) == lan.macs["b"]
    added = lan.run("a", f"ip addr add {b_ip}/32 dev eth0")
    assert added.returncode == 0, added.stderr
    try:
        assert imds(lan, "a", source=b_ip) == "", "the IMDS must never answer A as B"
        assert not reach(lan, "a", lan.gateway, lan.other_port, source=b_ip), "B's egress would allow it"
        _arp_reply(lan, lan.macs["a"], b_ip)        # "B is at A's MAC"
        _arp_reply(lan, lan.macs["b"], b_ip)        # "B is at B's MAC", sent from A's port
        assert _neighbour(lan, b_ip) == lan.macs["b"]
        fdb = netlink.run(["bridge", "fdb", "show", "br", lan.bridge])
        assert f"{lan.macs['b']} dev {lan.veth('a')}" not in fdb, fdb
    finally:
        lan.run("a", f"ip addr del {b_ip}/32 dev eth0")
    moved = lan.run("a", f"ip link set eth0 address {lan.macs['b']}")  # B's MAC with A's address
    try:
        assert moved.returncode == 0 and not reach(lan, "a", lan.gateway, lan.api_port)
    finally:
        lan.run("a", f"ip link set eth0 address {lan.macs['a']}")
    assert imds(lan, "a") == f"imds {a_ip}"  # and A itself is still served


def test_a_bad_ruleset_keeps_the_old_one(lan: Lan) -> None:
    with pytest.raises(PhoenixError, match="nft"):
        hostsg.apply(lan.tag, f"table ip {hostsg.table_name(lan.tag)} {{ chain input {{ nonsense }} }}\n")
    assert reach(lan, "host", lan.ips["a"], 8081) and not reach(lan, "host", lan.ips["a"], 8082)
    tables = {(f, n) for f, n in netlink.family_tables() if n == hostsg.table_name(lan.tag)}
    assert tables == {("bridge", hostsg.table_name(lan.tag)), ("ip", hostsg.table_name(lan.tag))}


def _promiscuous(name: str) -> bool:
    with open(f"/sys/class/net/{name}/flags", encoding="ascii") as f:
        return bool(int(f.read(), 16) & 0x100)  # IFF_PROMISC


def _dhcp_broadcast_arrives(lan: Lan, who: str) -> bool:
    """``who`` sends a UDP broadcast from port 68 to port 67 (a DHCPDISCOVER's addressing); does
    a socket on the host's port 67, bound to the bridge as dnsmasq's is, receive it?"""
    marker = secrets.token_hex(8).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, lan.bridge.encode())
        server.bind(("0.0.0.0", 67))
        server.settimeout(0.5)
        send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1); "
                "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0'); s.bind(('', 68)); "
                f"s.sendto({marker!r}, ('255.255.255.255', 67))")
        for _ in range(3):
            lan.run(who, f"{shlex.quote(sys.executable)} -c {shlex.quote(send)}")
            try:
                while True:
                    data, _ = server.recvfrom(2048)
                    if data == marker:
                        return True
            except TimeoutError:
                continue
    return False


def test_dhcp_reaches_the_host_while_the_bridge_is_promiscuous(lan: Lan) -> None:
    # tcpdump on the bridge makes it promiscuous; the kernel then passes broadcasts up without
    # connection tracking, and a DHCP rule behind "ct state invalid drop" never saw them: every new
    # instance booted 60 s late (cloud-init's DHCP timeout) while anyone captured on the bridge
    assert _dhcp_broadcast_arrives(lan, "a")
    _sh("ip", "link", "set", lan.bridge, "promisc", "on")
    try:
        assert _promiscuous(lan.bridge)
        assert _dhcp_broadcast_arrives(lan, "a")
        assert not _dhcp_broadcast_arrives(lan, "c")  # a port without rules still sends nothing
    finally:
        _sh("ip", "link", "set", lan.bridge, "promisc", "off")

