"""Security groups enforced by nftables inside a real network namespace (needs root).

A namespace ``phx-sgt-<rand>`` is joined to the host by a veth pair (host 10.251.N.1/30, namespace
10.251.N.2); two HTTP servers listen inside. The host is the gateway, so it stands for the
internet: only internet-facing rules open ports to it.
"""
from __future__ import annotations

import os
import random
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from phoenixci.localcloud.secgroups import (
    Rule,
    SecurityGroup,
    SecurityGroupError,
    apply_nft,
    remove_nft,
    render_nft,
)
from phoenixci.util import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and nft rules"),
]


@dataclass
class Netns:
    name: str
    host_ip: str
    ns_ip: str
    ports: tuple[int, int]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _open(ip: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture
def netns() -> Iterator[Netns]:
    tag = secrets.token_hex(3)
    name, host_if, ns_if = f"phx-sgt-{tag}", f"phxh{tag}", f"phxn{tag}"
    n = random.randint(1, 254)
    host_ip, ns_ip = f"10.251.{n}.1", f"10.251.{n}.2"
    ports = (8081, 8082)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _run("ip", "-n", name, "link", "set", ns_if, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        for port in ports:
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", str(port), "--bind", ns_ip],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_until(lambda p=port: _open(ns_ip, p), timeout=15, what=f"http.server on {ns_ip}:{port}")
        yield Netns(name, host_ip, ns_ip, ports)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)


def _apply(ns: Netns, *rules: Rule) -> None:
    apply_nft(ns.name, render_nft([SecurityGroup("sg-test", list(rules))], gateway_ip=ns.host_ip, members={}))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ping(ip: str, timeout: float = 0.5) -> bool:
    """One ICMP echo over a raw socket (root); True if the matching reply came back."""
    ident = random.randint(1, 0xFFFF)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"phx!"
    packet = header[:2] + struct.pack("!H", _checksum(header)) + header[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        s.sendto(packet, (ip, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, (src, _) = s.recvfrom(1500)
            except TimeoutError:
                return False
            icmp = data[(data[0] & 0x0F) * 4:]
            if src == ip and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                return True
    return False


def _blocked(ip: str, port: int) -> bool:
    start = time.monotonic()
    ok = _open(ip, port, timeout=0.5)
    assert time.monotonic() - start < 2
    return not ok


def test_rules_open_exactly_the_allowed_ports(netns: Netns) -> None:
    a, b = netns.ports
    assert _open(netns.ns_ip, a) and _open(netns.ns_ip, b)  # no rules yet

    _apply(netns, Rule("tcp", a, a, ["127.0.0.1/32"]))  # port a from the host (the internet)
    assert _open(netns.ns_ip, a)
    assert _blocked(netns.ns_ip, b)

    # A VPC CIDR contains the gateway address, but the host is not an instance: still closed.
    _apply(netns, Rule("tcp", a, a, ["127.0.0.1/32"]), Rule("tcp", b, b, ["10.251.0.0/16"]))
    assert _open(netns.ns_ip, a)
    assert _blocked(netns.ns_ip, b)

    _apply(netns, Rule("tcp", a, a, ["127.0.0.1/32"]), Rule("tcp", b, b, ["0.0.0.0/0"]))
    assert _open(netns.ns_ip, a) and _open(netns.ns_ip, b)

    _apply(netns, Rule("tcp", b, b, ["0.0.0.0/0"]))  # replacing, not adding: a closes again
    assert _blocked(netns.ns_ip, a)
    assert _open(netns.ns_ip, b)

    remove_nft(netns.name)
    assert _open(netns.ns_ip, a) and _open(netns.ns_ip, b)
    remove_nft(netns.name)  # idempotent


def test_bad_ruleset_keeps_the_old_one(netns: Netns) -> None:
    a, b = netns.ports
    _apply(netns, Rule("tcp", a, a, ["0.0.0.0/0"]))
    with pytest.raises(SecurityGroupError, match="nft"):
        apply_nft(netns.name, "table inet phoenixci_sg { chain input { nonsense } }\n")
    assert _open(netns.ns_ip, a)
    assert _blocked(netns.ns_ip, b)


def test_all_features_parse(netns: Netns) -> None:
    group = SecurityGroup("sg-all", [
        Rule("icmp", -1, -1, ["10.0.0.0/24"]), Rule("icmp", 8, -1, ["0.0.0.0/0"]),
        Rule("udp", 0, 65535, ["10.0.2.0/24"]), Rule("-1", cidrs=["10.0.3.0/24", "fd00::/64"]),
        Rule("tcp", 9000, 9010, [], ["sg-app"]),
    ])
    apply_nft(netns.name, render_nft([group], gateway_ip=netns.host_ip, members={"sg-app": {"10.0.1.5"}}))
    out = subprocess.run(["ip", "netns", "exec", netns.name, "nft", "list", "table", "inet", "phoenixci_sg"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert "10.0.1.5" in out and "policy drop" in out
    assert _ping(netns.ns_ip)  # echo request (type 8) from the host = the internet: allowed
    _apply(netns, Rule("tcp", 80, 80, ["0.0.0.0/0"]))
    assert not _ping(netns.ns_ip)  # no rule allows ICMP
