"""Network ACL semantics (localcloud/nacls.py): each subnet's rules in number order per direction,
the first match deciding, ``*`` denying the rest; the stateless chains that enforce them, as text
(the kernel's view: tests/integration/test_nacl_bridge.py)."""
from __future__ import annotations

import shutil
import subprocess
from types import SimpleNamespace

import pytest

from phoenixci.localcloud.nacls import (
    NaclEntry,
    SubnetNacl,
    chain,
    jumps,
    nacl_rules,
    read_nacls,
    render_chains,
)
from phoenixci.localcloud.secgroups import SecurityGroupError

pytestmark = pytest.mark.unit

STAR_IN, STAR_OUT = NaclEntry(32767, False, False), NaclEntry(32767, True, False)
DEFAULT = (NaclEntry(100, False, True), STAR_IN, NaclEntry(100, True, True), STAR_OUT)
# the issue's example: deny tcp 8080 in, allow the rest; out: only replies to ephemeral ports
WEB = (STAR_IN, NaclEntry(200, False, True), NaclEntry(100, False, False, "6", ports=(8080, 8080)),
       NaclEntry(110, True, True, "6", "10.0.0.0/16", ports=(80, 80)),
       NaclEntry(120, True, True, "6", ports=(1024, 65535)), STAR_OUT,
       NaclEntry(130, True, True, "6", None, ports=(1, 2)))  # an IPv6 entry (no IPv4 CIDR)
BRIDGE = "phxabcb0"


def snap(**nacls: tuple[str, tuple[NaclEntry, ...]]) -> SimpleNamespace:
    return SimpleNamespace(nacls={k.replace("_", "."): v for k, v in nacls.items()})


def test_rules_are_ordered_by_number_per_direction() -> None:
    rules = nacl_rules(snap(**{"10_0_1_0/24": ("acl-web", WEB)}))["10.0.1.0/24"]
    assert rules.acl_id == "acl-web"
    assert [e.rule_number for e in rules.ingress] == [100, 200, 32767]
    assert [e.rule_number for e in rules.egress] == [110, 120, 130, 32767]
    assert nacl_rules(SimpleNamespace()) == {}  # no ACLs known: every subnet has the default


@pytest.mark.parametrize(("egress", "protocol", "port", "peer", "allowed"), [
    (False, "6", 8080, "127.0.0.1", False),   # rule 100 denies, although 200 would allow
    (False, "6", 8081, "127.0.0.1", True),    # rule 200
    (False, "17", 8080, "10.0.2.9", True),    # rule 100 is TCP only
    (True, "6", 80, "10.0.2.9", True),        # rule 110, inside the VPC
    (True, "6", 80, "127.0.0.1", False),      # 110 does not cover the internet, 120 not port 80
    (True, "6", 40000, "127.0.0.1", True),    # rule 120: ephemeral ports
    (True, "17", 40000, "127.0.0.1", False),  # * denies
])
def test_the_first_matching_rule_decides(egress: bool, protocol: str, port: int, peer: str, allowed: bool) -> None:
    acl = nacl_rules(snap(**{"10_0_1_0/24": ("acl-web", WEB)}))["10.0.1.0/24"]
    assert acl.decide(egress=egress, protocol=protocol, port=port, peer=peer) is allowed


def test_the_default_acl_is_open_and_gets_no_chains() -> None:
    acl = nacl_rules(snap(**{"10_0_1_0/24": ("acl-def", DEFAULT)}))["10.0.1.0/24"]
    assert acl.open and render_chains(BRIDGE, acl) == []
    assert jumps({BRIDGE: acl}) == {"between": [], "to_host": [], "from_host": []}
    closed = SubnetNacl("acl-new", (STAR_IN,), (STAR_OUT,))  # a new custom ACL: closed
    assert not closed.open and not closed.decide(egress=False, protocol="6", port=22, peer="127.0.0.1")


def body(lines: list[str], name: str) -> list[str]:
    stripped = [ln.strip() for ln in lines]
    start = stripped.index(f"chain {name} {{")
    return stripped[start + 1:stripped.index("}", start)]


def test_chains_are_stateless_in_number_order() -> None:
    acl = nacl_rules(snap(**{"10_0_1_0/24": ("acl-web", WEB)}))["10.0.1.0/24"]
    lines = render_chains(BRIDGE, acl, services=[5000, 3141])
    assert not [ln for ln in lines if "ct " in ln]
    assert body(lines, "nacl_phxabcb0_in") == [
        'tcp dport 8080 drop comment "acl-web rule 100"',
        'return comment "acl-web rule 200"',
        'drop comment "acl-web rule 32767"',
        'drop comment "acl-web rule _"']
    assert body(lines, "nacl_phxabcb0_out") == [
        'ip daddr 10.0.0.0/16 tcp dport 80 return comment "acl-web rule 110"',
        'tcp dport 1024-65535 return comment "acl-web rule 120"',
        'drop comment "acl-web rule 32767"',
        'drop comment "acl-web rule _"']
    # with the host (the internet): 110 (a VPC CIDR) never matches; the service ports count as 443
    assert body(lines, "nacl_phxabcb0_out_host") == [
        'tcp dport { 3141, 5000 } drop comment "service ports as 443"',
        'tcp dport 1024-65535 return comment "acl-web rule 120"',
        'drop comment "acl-web rule 32767"',
        'drop comment "acl-web rule _"']
    assert body(lines, "nacl_phxabcb0_in_host")[0] == 'tcp dport 8080 drop comment "acl-web rule 100"'


def test_protocols_ports_and_icmp() -> None:
    entries = (NaclEntry(1, False, True, "17", "10.1.0.0/16", ports=(53, 53)),
               NaclEntry(2, False, True, "1", "0.0.0.0/0", icmp=(8, -1)),
               NaclEntry(3, False, False, "1", "0.0.0.0/0", icmp=(3, 4)),
               NaclEntry(4, False, True, "50"), NaclEntry(5, False, True, "6", ports=(0, 65535)), STAR_IN)
    acl = SubnetNacl("acl-p", entries, (NaclEntry(100, True, True),))
    assert body(render_chains(BRIDGE, acl), "nacl_phxabcb0_in") == [
        'ip saddr 10.1.0.0/16 udp dport 53 return comment "acl-p rule 1"',
        'icmp type 8 return comment "acl-p rule 2"',
        'icmp type 3 icmp code 4 drop comment "acl-p rule 3"',
        'meta l4proto 50 return comment "acl-p rule 4"',
        'meta l4proto tcp return comment "acl-p rule 5"',
        'drop comment "acl-p rule 32767"', 'drop comment "acl-p rule _"']
    with pytest.raises(SecurityGroupError):
        render_chains(BRIDGE, SubnetNacl("acl-x", (NaclEntry(1, False, True, "tcp; flush ruleset"),), ()))


def test_jumps_cross_the_subnet_boundary_only() -> None:
    acl = SubnetNacl("acl-c", (STAR_IN,), (STAR_OUT,))
    got = {k: [ln.strip() for ln in v] for k, v in jumps({BRIDGE: acl}).items()}
    assert got["between"] == ['iifname "phxabcb0" oifname != "phxabcb0" jump nacl_phxabcb0_out',
                              'oifname "phxabcb0" iifname != "phxabcb0" jump nacl_phxabcb0_in']
    # the metadata service (both ways: replies carry the DNAT too) and DHCP are never filtered
    imds = 'ct status dnat ct original ip daddr 169.254.169.254 accept comment "the IMDS"'
    assert got["to_host"] == [imds, 'udp sport 68 udp dport 67 accept comment "DHCP"',
                              'iifname "phxabcb0" jump nacl_phxabcb0_out_host']
    assert got["from_host"] == [imds, 'udp sport 67 udp dport 68 accept comment "DHCP"',
                                'oifname "phxabcb0" jump nacl_phxabcb0_in_host']
    with pytest.raises(SecurityGroupError):
        chain('b0"; drop', "in")


def test_read_nacls_copies_moto_state() -> None:
    entry = SimpleNamespace(rule_number="100", egress="false", rule_action="deny", protocol="tcp",
                            cidr_block="0.0.0.0/0", port_range_from="8080", port_range_to="8080",
                            icmp_type=None, icmp_code=None)
    acl = SimpleNamespace(id="acl-1", network_acl_entries=[entry],
                          _associations={"a1": SimpleNamespace(subnet_id="subnet-1"),
                                         "a2": SimpleNamespace(subnet_id="subnet-gone")})
    got = read_nacls(SimpleNamespace(network_acls={"acl-1": acl}), {"subnet-1": "10.0.1.0/24"})
    assert got == {"10.0.1.0/24": ("acl-1", (NaclEntry(100, False, False, "6", "0.0.0.0/0", (8080, 8080)),))}


@pytest.mark.skipif(not shutil.which("nft"), reason="nft not installed")
def test_the_chains_parse() -> None:
    acl = nacl_rules(snap(**{"10_0_1_0/24": ("acl-web", WEB)}))["10.0.1.0/24"]
    j = jumps({BRIDGE: acl})
    script = "\n".join(["table ip phoenixci_nacltest {", *render_chains(BRIDGE, acl, [5000]),
                        "  chain between {", *j["between"], "  }", "  chain to_host {", *j["to_host"], "  }",
                        "  chain from_host {", *j["from_host"], "  }", "}"]) + "\n"
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if proc.returncode and "Operation not permitted" in proc.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert proc.returncode == 0, proc.stderr


def test_hostsg_puts_the_chains_before_its_conntrack_rules() -> None:
    from phoenixci.localcloud import hostsg

    subnet, port = hostsg.Subnet(BRIDGE, "10.0.1.1", 4567), hostsg.Port("i-0a", "phxabcv0a", "02:42:0a:00:01:05",
                                                                          "10.0.1.5", (hostsg.OPEN,))
    plain = hostsg.render_groups("phxabc", [subnet], [port], {}, [5000])
    open_acl = nacl_rules(snap(**{"10_0_1_0/24": ("acl-def", DEFAULT)}))["10.0.1.0/24"]
    assert hostsg.render_groups("phxabc", [subnet], [port], {}, [5000], {BRIDGE: open_acl}) == plain
    acl = nacl_rules(snap(**{"10_0_1_0/24": ("acl-web", WEB)}))["10.0.1.0/24"]
    text = hostsg.render_groups("phxabc", [subnet], [port], {}, [5000], {BRIDGE: acl}).splitlines()
    lines = [ln.strip() for ln in text]
    for name, jump in (("between", "nacl_phxabcb0_out"), ("to_host", "nacl_phxabcb0_out_host"),
                       ("from_host", "nacl_phxabcb0_in_host")):
        head = body(text, name)
        assert any(jump in ln for ln in head[:head.index("ct state established,related accept")]), name
    assert 'tcp dport { 5000 } drop comment "service ports as 443"' in lines
    assert "chain nacl_phxabcb0_in {" in lines
