"""Security-group semantics: matching, group references, public ports, egress, nft pieces
(the host-side rules built from them: test_hostsg.py)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from phoenixci.localcloud.secgroups import (
    ALL_OUTBOUND,
    Rule,
    SecurityGroup,
    SecurityGroupError,
    addr_match,
    allowed_public_ports,
    allows,
    from_api,
    from_moto,
    label,
    port_match,
)

pytestmark = pytest.mark.unit

WEB = SecurityGroup("sg-web", [
    Rule("tcp", 80, 80, ["0.0.0.0/0"]),
    Rule("tcp", 22, 22, ["127.0.0.1/32"]),
    Rule("tcp", 8000, 8010, ["10.0.0.0/16"]),
    Rule("tcp", 5432, 5432, [], ["sg-app"]),
])
MEMBERS = {"sg-app": {"10.0.1.7", "10.0.1.8"}}


@pytest.mark.parametrize(("source", "port", "protocol", "expected"), [
    ("203.0.113.9", 80, "tcp", True),        # 0.0.0.0/0
    ("203.0.113.9", 80, "udp", False),       # wrong protocol
    ("203.0.113.9", 81, "tcp", False),       # no rule for the port
    ("127.0.0.1", 22, "tcp", True),          # the host = the admin CIDR
    ("10.0.0.5", 22, "tcp", False),
    ("10.0.3.4", 8005, "tcp", True),         # range, VPC CIDR
    ("10.0.3.4", 8011, "tcp", False),
    ("10.1.0.1", 8005, "tcp", False),
    ("10.0.1.7", 5432, "tcp", True),         # member of the referenced group
    ("10.0.1.9", 5432, "tcp", False),        # not a member
])
def test_allows(source: str, port: int, protocol: str, expected: bool) -> None:
    assert allows([WEB], source_ip=source, port=port, protocol=protocol, members=MEMBERS) is expected


def test_all_traffic_and_icmp_rules() -> None:
    everything = SecurityGroup("sg-all", [Rule("-1", cidrs=["10.0.0.0/24"])])
    assert allows([everything], source_ip="10.0.0.9", port=12345, protocol="udp")
    assert allows([everything], source_ip="10.0.0.9", port=8, protocol="icmp")
    assert not allows([everything], source_ip="10.0.1.9", port=1)
    ping = SecurityGroup("sg-ping", [Rule("icmp", 8, -1, ["0.0.0.0/0"])])
    assert allows([ping], source_ip="1.2.3.4", port=8, protocol="icmp")
    assert not allows([ping], source_ip="1.2.3.4", port=8, protocol="tcp")


def test_any_group_may_allow_and_references_need_members() -> None:
    ssh = SecurityGroup("sg-ssh", [Rule("tcp", 22, 22, ["127.0.0.1/32"])])
    assert allows([WEB, ssh], source_ip="127.0.0.1", port=22)
    assert not allows([WEB], source_ip="10.0.1.7", port=5432)  # no membership given


def test_rule_validation() -> None:
    with pytest.raises(SecurityGroupError, match="bad CIDR"):
        Rule("tcp", 1, 2, ["10.0.0.300/8"])
    with pytest.raises(SecurityGroupError, match="port range"):
        Rule("tcp", 90, 80, ["0.0.0.0/0"])
    with pytest.raises(SecurityGroupError, match="protocol"):
        Rule("gre", cidrs=[])  # type: ignore[arg-type]


def test_from_api() -> None:
    group = from_api({
        "GroupId": "sg-1",
        "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
             "IpRanges": [{"CidrIp": "0.0.0.0/0"}, {"CidrIp": "10.0.0.0/16"}], "UserIdGroupPairs": []},
            {"IpProtocol": "-1", "IpRanges": [], "UserIdGroupPairs": [{"GroupId": "sg-2", "UserId": "1"}]},
            {"IpProtocol": "6", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
            {"IpProtocol": "50", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},  # ESP: unsupported, skipped
        ],
    })
    assert group.ingress == [
        Rule("tcp", 80, 80, ["0.0.0.0/0", "10.0.0.0/16"], []),
        Rule("-1", -1, -1, [], ["sg-2"]),
        Rule("tcp", 22, 22, ["::/0"], []),
    ]


def test_from_moto_model_shape() -> None:
    def rule(proto: str, lo: int | None, hi: int | None, ip_range: dict, source: dict) -> SimpleNamespace:
        return SimpleNamespace(ip_protocol=proto, from_port=lo, to_port=hi, ip_range=ip_range,
                               source_group=source)
    group = SimpleNamespace(id="sg-9", vpc_id="vpc-1", ingress_rules=[
        rule("tcp", 443, 443, {"CidrIp": "0.0.0.0/0"}, {}),
        rule("-1", None, None, {}, {"GroupId": "sg-9", "UserId": "123"}),
    ], egress_rules=[rule("tcp", 5432, 5432, {}, {"GroupId": "sg-db"})])
    assert from_moto(group) == SecurityGroup("sg-9", [
        Rule("tcp", 443, 443, ["0.0.0.0/0"], []), Rule("-1", -1, -1, [], ["sg-9"])],
        [Rule("tcp", 5432, 5432, [], ["sg-db"])])


def test_egress_as_aws_describes_it() -> None:
    group = from_api({"GroupId": "sg-1", "IpPermissions": [], "IpPermissionsEgress": [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": "sg-2"}]}]})
    assert group.ingress == [] and group.egress == [ALL_OUTBOUND, Rule("tcp", 443, 443, [], ["sg-2"])]
    # every group has AWS's allow-all egress until revoked; moto gives it only to groups of a VPC
    no_vpc = SimpleNamespace(id="sg-c", vpc_id=None, ingress_rules=[], egress_rules=[])
    assert from_moto(no_vpc).egress == [ALL_OUTBOUND]
    revoked = SimpleNamespace(id="sg-v", vpc_id="vpc-1", ingress_rules=[], egress_rules=[])
    assert from_moto(revoked).egress == []


def test_nft_pieces() -> None:
    assert port_match(Rule("tcp", 80, 80, ["0.0.0.0/0"])) == "tcp dport 80"
    assert port_match(Rule("udp", 1000, 2000, ["0.0.0.0/0"])) == "udp dport 1000-2000"
    assert port_match(Rule("udp", 0, 65535, ["0.0.0.0/0"])) == "meta l4proto udp"
    assert port_match(Rule("icmp", -1, -1, ["0.0.0.0/0"])) == "meta l4proto icmp"
    assert port_match(Rule("icmp", 8, -1, ["0.0.0.0/0"])) == "icmp type 8"
    assert port_match(Rule("-1", cidrs=["0.0.0.0/0"])) == ""
    assert addr_match(["10.0.0.0/24", "10.0.1.7/32", "fd00::/64"], "saddr") == "ip saddr { 10.0.0.0/24, 10.0.1.7 }"
    assert addr_match(["::/0"], "daddr") == ""  # instances speak IPv4 only
    with pytest.raises(SecurityGroupError):
        addr_match(["10.0.0.2 } accept"], "saddr")
    with pytest.raises(SecurityGroupError):
        addr_match(["10.0.0.2"], "saddr; flush ruleset")
    assert label('sg-"evil"; flush ruleset') == 'comment "sg-_evil__ flush ruleset"'


def test_allowed_public_ports(caplog: pytest.LogCaptureFixture) -> None:
    assert allowed_public_ports([WEB]) == {80, 22}  # 10.0.0.0/16 and group refs are not the internet
    wide = SecurityGroup("sg-wide", [Rule("tcp", 1000, 2000, ["0.0.0.0/0"]), Rule("udp", 53, 53, ["0.0.0.0/0"])])
    with caplog.at_level(logging.WARNING):
        ports = allowed_public_ports([wide], cap=64)
    assert ports == set(range(1000, 1064))
    assert "wider than 64" in caplog.text
    everything = SecurityGroup("sg-all", [Rule("-1", cidrs=["127.0.0.0/8"])])
    assert allowed_public_ports([everything], cap=8) == set(range(1, 9))  # never port 0
