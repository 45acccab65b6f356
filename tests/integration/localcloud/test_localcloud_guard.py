"""Issue 8: what root inside an instance cannot change. Security groups (ingress and egress) and the
metadata redirect are enforced on the host side of each instance's link, and a link sends only from
its instance's own addresses — as on EC2. Only the env file, the ``aws`` CLI and SSH, as a user.

Two instances in one subnet: *front* (group front: 22 and 8080 in from anywhere; egress only TCP
8080 and 443) and *back* (group back: 22 from anywhere, 8080-8081 from members of front; egress all;
an instance role). Tests run in file order; none undoes what root did inside front.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cloudkit import (
    IMDS,
    Cloud,
    Network,
    make_network,
    port_open,
    remote,
    run_instance,
    ssh_host,
    terminate,
    unique,
)

from phoenixci.localcloud import netlink
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

SERVE = """#!/bin/bash
mkdir -p /srv/www && echo "$(hostname)" > /srv/www/index.html
for port in {ports}; do
  (cd /srv/www && setsid nohup python3 -m http.server $port </dev/null >/dev/null 2>&1 &)
done
"""
TOKEN = f"$(curl -sf -m 3 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' {IMDS}/api/token)"


@dataclass
class Pair:
    net: Network
    front: dict[str, Any]
    back: dict[str, Any]
    front_host: Any
    back_host: Any
    role: str
    eip: str
    bridge: str
    gateway: str

    @property
    def front_ip(self) -> str:
        return str(self.front["PrivateIpAddress"])

    @property
    def back_ip(self) -> str:
        return str(self.back["PrivateIpAddress"])


def _group(cloud: Cloud, net: Network, name: str) -> str:
    return str(cloud.aws("ec2", "create-security-group", "--group-name", unique(name), "--description", name,
                         "--vpc-id", net.vpc_id)["GroupId"])


def _perm(lo: int, hi: int, cidr: str = "", group: str = "") -> dict[str, Any]:
    perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": lo, "ToPort": hi}
    if cidr:
        perm["IpRanges"] = [{"CidrIp": cidr}]
    if group:
        perm["UserIdGroupPairs"] = [{"GroupId": group}]
    return perm


@pytest.fixture(scope="module")
def pair(cloud: Cloud, ssh_key: Path) -> Any:
    net = make_network(cloud, ssh_key, ports=(22, 8080))  # its group becomes front's
    front_sg, back_sg = net.group_id, _group(cloud, net, "back")
    everything = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    cloud.aws("ec2", "revoke-security-group-egress", "--group-id", front_sg,
              "--ip-permissions", json.dumps(everything))
    cloud.aws("ec2", "authorize-security-group-egress", "--group-id", front_sg, "--ip-permissions",
              json.dumps([_perm(8080, 8080, "0.0.0.0/0"), _perm(443, 443, "0.0.0.0/0")]))
    cloud.aws("ec2", "authorize-security-group-ingress", "--group-id", back_sg, "--ip-permissions",
              json.dumps([_perm(22, 22, "0.0.0.0/0"), _perm(8080, 8081, group=front_sg)]))
    role = unique("guard-role")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}
    cloud.aws("iam", "create-role", "--role-name", role, "--assume-role-policy-document", json.dumps(trust))
    cloud.aws("iam", "create-instance-profile", "--instance-profile-name", role)
    cloud.aws("iam", "add-role-to-instance-profile", "--instance-profile-name", role, "--role-name", role)
    v2 = ("--metadata-options", "HttpTokens=required,HttpEndpoint=enabled")
    front = run_instance(cloud, net, SERVE.format(ports="8080 9090"), *v2)
    back = run_instance(cloud, dataclasses.replace(net, group_id=back_sg), SERVE.format(ports="8080 8081 9090"),
                        "--iam-instance-profile", f"Name={role}", *v2)
    try:
        front_host = ssh_host(cloud, front["InstanceId"], front["PrivateIpAddress"], ssh_key)
        back_host = ssh_host(cloud, back["InstanceId"], back["PrivateIpAddress"], ssh_key)
        for host in (front_host, back_host):
            wait_until(lambda h=host: h.socket("tcp://0.0.0.0:9090").is_listening, timeout=30,
                       what="user data's servers")
        alloc = cloud.aws("ec2", "allocate-address", "--domain", "vpc")
        cloud.aws("ec2", "associate-address", "--allocation-id", alloc["AllocationId"],
                  "--instance-id", front["InstanceId"])
        subnet = cloud.subnet_info(net.cidr)
        yield Pair(net, front, back, front_host, back_host, role, alloc["PublicIp"], subnet["bridge"],
                   subnet["gateway"])
    finally:
        terminate(cloud, front["InstanceId"], back["InstanceId"])


def curl(host: Any, url: str, *args: str) -> Any:
    return remote(host, f"curl -s -m 3 {' '.join(args)} {shlex.quote(url)}", timeout=10)


def imds_instance_id(host: Any, *curl_args: str) -> str:
    extra = " ".join(curl_args)
    token = TOKEN.replace("curl ", f"curl {extra} ") if extra else TOKEN
    out = remote(host, f"curl -sf -m 3 {extra} -H \"X-aws-ec2-metadata-token: {token}\" "
                       f"{IMDS}/meta-data/instance-id", timeout=15)
    return str(out.stdout.strip()) if out.rc == 0 else ""


def closed_everywhere(pair: Pair, port: int) -> None:
    assert not port_open(pair.front_ip, port, timeout=2.0), f"the host reaches front:{port}"
    assert not port_open(pair.eip, port, timeout=2.0), f"the Elastic IP forwards {port}"
    assert curl(pair.back_host, f"http://{pair.front_ip}:{port}/").rc != 0, f"back reaches front:{port}"


def test_egress_rules_hold_between_instances(pair: Pair) -> None:
    assert curl(pair.front_host, f"http://{pair.back_ip}:8080/").rc == 0, "front's egress allows 8080"
    assert curl(pair.front_host, f"http://{pair.back_ip}:8081/").rc != 0, "front's egress has no 8081"
    assert curl(pair.back_host, f"http://{pair.front_ip}:8080/").rc == 0
    assert not port_open(pair.back_ip, 8081, timeout=2.0), "back opens 8081 to front's members only"


def test_after_root_flushes_the_ruleset_groups_and_metadata_hold(pair: Pair) -> None:
    closed_everywhere(pair, 9090)
    hardened = remote(pair.front_host, "sudo nft -f /etc/nftables.conf && sudo nft flush ruleset && "
                                       "sudo nft list ruleset | wc -l")
    assert hardened.rc == 0 and hardened.stdout.strip() == "0", (hardened.stdout, hardened.stderr)
    assert remote(pair.front_host, "curl -sf -m 3 http://127.0.0.1:9090/").rc == 0  # it does serve
    closed_everywhere(pair, 9090)
    assert port_open(pair.front_ip, 8080) and port_open(pair.eip, 8080)
    assert curl(pair.front_host, f"http://{pair.back_ip}:8081/").rc != 0, "egress still holds"
    assert imds_instance_id(pair.front_host) == pair.front["InstanceId"]


def test_an_instance_sending_from_anothers_address_gets_nothing(pair: Pair) -> None:
    base = f"{IMDS}/meta-data/iam/security-credentials/"
    assert imds_instance_id(pair.back_host) == pair.back["InstanceId"]
    got = remote(pair.back_host, f"curl -sf -m 3 -H \"X-aws-ec2-metadata-token: {TOKEN}\" {base}")
    assert got.stdout.strip() == pair.role  # back's own credentials: the control
    assert port_open(pair.back_ip, 22)  # the host knows back's MAC now
    mac_b = _neighbour(pair)
    assert mac_b, "no neighbour entry for back on the bridge"
    added = remote(pair.front_host, f"sudo ip addr add {pair.back_ip}/32 dev eth0")
    assert added.rc == 0, added.stderr
    try:
        posing = ("--interface", pair.back_ip)
        assert imds_instance_id(pair.front_host, *posing) == "", "the IMDS answered front as back"
        creds = curl(pair.front_host, base, *posing, "-H", "'X-aws-ec2-metadata-token: x'")
        assert creds.rc != 0 and pair.role not in creds.stdout
        # one forged ARP reply, as tried in the issue: "back's address is at front's MAC"
        forged = ("import socket,struct,time\n"
                  "me=bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':',''))\n"
                  f"ip=socket.inet_aton({pair.back_ip!r});gw=socket.inet_aton({pair.gateway!r})\n"
                  "f=b'\\xff'*6+me+struct.pack('!H',0x0806)+struct.pack('!HHBBH',1,0x0800,6,4,2)+me+ip"
                  "+b'\\xff'*6+gw\n"
                  "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(('eth0',0))\n"
                  "for _ in range(3): s.send(f); time.sleep(0.6)\n")  # past the neighbour locktime (1 s)
        sent = remote(pair.front_host, f"sudo python3 -c {shlex.quote(forged)}")
        assert sent.rc == 0, sent.stderr
        assert _neighbour(pair) == mac_b, "the host believed front's forged ARP"
        assert port_open(pair.back_ip, 22), "the host still reaches back itself"
    finally:
        remote(pair.front_host, f"sudo ip addr del {pair.back_ip}/32 dev eth0")
    # front itself: still front to the IMDS, and has no role
    assert imds_instance_id(pair.front_host) == pair.front["InstanceId"]
    none = remote(pair.front_host, f"curl -s -o /dev/null -w '%{{http_code}}' -H \"X-aws-ec2-metadata-token: "
                                   f"{TOKEN}\" {base}")
    assert none.stdout.strip() == "404"


def _neighbour(pair: Pair) -> str:
    """The MAC the host has for back's address on the subnet's bridge ("" if none)."""
    words = netlink.run(["ip", "neigh", "show", pair.back_ip, "dev", pair.bridge]).split()
    return words[words.index("lladdr") + 1] if "lladdr" in words else ""


def test_nothing_of_the_guard_is_inside_the_instance(pair: Pair) -> None:
    tables = remote(pair.back_host, "sudo nft list tables").stdout
    assert "phoenixci" not in tables, tables
    routes = pair.back_host.check_output("ip route")
    assert "169.254.169.254 via" in routes and not any(r.startswith("default") for r in routes.splitlines())
