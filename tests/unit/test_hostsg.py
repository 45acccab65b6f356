"""The host-side rules of each instance's link (localcloud/hostsg.py), as text: what each port may
send and receive, security groups by address, the IMDS redirect; inputs that could inject rules
are refused. The kernel's view of the same rules: tests/integration/test_hostsg_bridge.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from phoenixci.localcloud import hostsg, netlink
from phoenixci.localcloud.hostsg import CloudLinks, Port, Subnet, ports_of, render_groups, render_ports
from phoenixci.localcloud.secgroups import ALL_OUTBOUND, Rule, SecurityGroup, SecurityGroupError
from phoenixci.localcloud.snapshot import InstanceView, Snapshot

pytestmark = pytest.mark.unit

WEB = SecurityGroup("sg-web", [Rule("tcp", 22, 22, ["0.0.0.0/0"]), Rule("tcp", 8080, 8080, [], ["sg-db"]),
                               Rule("icmp", 8, -1, ["10.0.0.0/16"]), Rule("-1", cidrs=["fd00::/64"])],
                    [ALL_OUTBOUND])
DB = SecurityGroup("sg-db", [Rule("tcp", 5432, 5432, [], ["sg-web"])],
                   [Rule("tcp", 443, 443, ["0.0.0.0/0"]), Rule("udp", 53, 53, ["10.0.0.0/24"])])
A = Port("i-0a", "phxabcv0000000a", "02:42:0A:00:00:05", "10.0.0.5", (WEB,))
B = Port("i-0b", "phxabcv0000000b", "02:42:0a:00:00:06", "10.0.0.6", (DB,))
MEMBERS = {"sg-web": {"10.0.0.5"}, "sg-db": {"10.0.0.6"}}
SUBNET = Subnet("phxabcb12345", "10.0.0.1", 4567, dns=True)


def chain(text: str, name: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    start = lines.index(f"chain {name} {{")
    return lines[start + 1:lines.index("}", start)]


def test_ports_send_only_as_themselves() -> None:
    text = render_ports("phxabc", [A, B])
    assert text.startswith("table bridge phoenixci_phxabc {")
    pre = chain(text, "prerouting")
    assert pre[0] == "type filter hook prerouting priority -300; policy accept;"
    assert pre[1] == ('iifname vmap { "phxabcv0000000a" : jump i_0a_sends, '
                      '"phxabcv0000000b" : jump i_0b_sends }')
    assert pre[2].startswith('iifname "phxabcv*" drop')  # a port of this cloud without rules
    assert chain(text, "i_0a_sends") == [
        "ether saddr != 02:42:0a:00:00:05 drop",
        "arp saddr ether 02:42:0a:00:00:05 arp saddr ip { 0.0.0.0, 10.0.0.5 } accept",
        "ip saddr 10.0.0.5 accept",
        'ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept comment "DHCP"',
        "drop"]  # IPv6, VLAN tags, other addresses, forged ARP
    assert chain(text, "i_0b_receives") == ["ether type arp accept",
                                            "ip daddr { 10.0.0.6, 255.255.255.255 } accept", "drop"]
    assert chain(render_ports("phxabc", []), "prerouting")[1].startswith('iifname "phxabcv*" drop')


def test_groups_by_address_stateful() -> None:
    text = render_groups("phxabc", [SUBNET], [A, B], MEMBERS, services=[40000, 3141])
    assert text.startswith("table ip phoenixci_phxabc {")
    assert chain(text, "imds")[1] == ('iifname "phxabcb12345" ip daddr 169.254.169.254 tcp dport 80 '
                                      "dnat to 10.0.0.1:4567")
    assert chain(text, "forward")[1].startswith('iifname "phxabc*" oifname "phxabc*" jump between')
    assert chain(text, "between") == [
        "ct state established,related accept", "ct state invalid drop",
        "ip saddr != { 10.0.0.5, 10.0.0.6 } drop",  # nobody else sends on our bridges
        "ip saddr vmap { 10.0.0.5 : jump i_0a_out, 10.0.0.6 : jump i_0b_out }",
        "ip daddr vmap { 10.0.0.5 : jump i_0a_in, 10.0.0.6 : jump i_0b_in }", "drop"]
    to_host = chain(text, "to_host")
    # Amazon DNS on the gateway passes whatever the groups say (dnsmasq answers it only with --package-proxy)
    assert to_host[0] == ('iifname "phxabcb12345" ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 53 '
                          'accept comment "Amazon DNS"')
    assert chain(text, "from_host")[0] == ('oifname "phxabcb12345" ip saddr 10.0.0.1 meta l4proto { tcp, udp } '
                                           'th sport 53 accept comment "Amazon DNS"')
    without = render_groups("phxabc", [Subnet("phxabcb12345", "10.0.0.1", 4567)], [A, B], MEMBERS)
    assert "Amazon DNS" not in without  # no package path: no DNS rule either
    # DHCP before the conntrack checks: a promiscuous bridge (tcpdump on it) passes broadcasts up
    # untracked, and "ct state invalid drop" would leave every new instance without a lease
    assert to_host[1].startswith("udp sport 68 udp dport 67 accept")
    assert to_host[2:4] == ["ct state established,related accept", "ct state invalid drop"]
    assert to_host[4].startswith("ct status dnat ct original ip daddr 169.254.169.254 accept")
    # egress: to instances (return: the receiver's ingress decides next), to the host (internet)
    assert chain(text, "i_0a_out") == ['ip daddr { 0.0.0.0/0 } return comment "sg-web"', "drop"]
    assert chain(text, "i_0b_out") == ['ip daddr { 0.0.0.0/0 } tcp dport 443 return comment "sg-db"',
                                       'ip daddr { 10.0.0.0/24 } udp dport 53 return comment "sg-db"', "drop"]
    assert chain(text, "i_0b_to_host") == [
        'tcp dport 443 accept comment "sg-db internet"',
        'tcp dport { 3141, 40000 } accept comment "sg-db HTTPS endpoints on the gateway"', "drop"]
    assert chain(text, "i_0a_to_host")[0] == 'accept comment "sg-web internet"'
    # ingress: from instances (group references resolved to members), from the host (internet only)
    assert chain(text, "i_0a_in") == ['ip saddr { 0.0.0.0/0 } tcp dport 22 accept comment "sg-web"',
                                      'ip saddr { 10.0.0.6 } tcp dport 8080 accept comment "sg-web"',
                                      'ip saddr { 10.0.0.0/16 } icmp type 8 accept comment "sg-web"', "drop"]
    assert chain(text, "i_0a_from_host") == ['tcp dport 22 accept comment "sg-web internet"', "drop"]
    assert chain(text, "i_0b_from_host") == ["drop"]
    assert "fd00" not in text


def test_references_without_members_and_no_instances() -> None:
    text = render_groups("phxabc", [Subnet("phxabcb12345", "10.0.0.1")], [B], {})
    assert chain(text, "i_0b_in") == ["drop"]
    assert chain(text, "imds")[1:] == []  # no IMDS on that gateway yet: no redirect
    empty = render_groups("phxabc", [], [], {})
    assert chain(empty, "between")[2:] == ["drop", "drop"]


@pytest.mark.parametrize("bad", [
    {"veth": 'phxv" accept'}, {"mac": "02:42:0a:00:00:05 accept"}, {"ip": "10.0.0.5 } accept"},
    {"ip": "fd00::5"}, {"instance_id": "i-0a; flush ruleset"}])
def test_inputs_that_could_inject_rules_are_refused(bad: dict[str, str]) -> None:
    port = Port(**{**A.__dict__, **bad})
    with pytest.raises((SecurityGroupError, ValueError)):
        render_ports("phxabc", [port])
        render_groups("phxabc", [], [port], {})
    with pytest.raises(SecurityGroupError):
        render_ports("phx*", [])
    with pytest.raises(SecurityGroupError):
        render_groups("phxabc", [Subnet('br" accept', "10.0.0.1", 1)], [], {})


def _view(iid: str, ip: str, state: str = "running", cidr: str = "10.0.0.0/24",
          groups: tuple[str, ...] = ("sg-web",)) -> InstanceView:
    return InstanceView(iid, state, ip, "subnet-1", cidr, "02:00:00:00:00:01", groups)


def _moto_group(gid: str) -> SimpleNamespace:
    return SimpleNamespace(id=gid, vpc_id="vpc-1", ingress_rules=[], egress_rules=[])


def test_which_instances_get_ports() -> None:
    snap = Snapshot({v.instance_id: v for v in [
        _view("i-run", "10.0.0.5"), _view("i-pend", "10.0.0.6", "pending"),
        _view("i-stopped", "10.0.0.7", "stopped"), _view("i-going", "10.0.0.8", "stopping"),
        _view("i-old", "10.0.0.5", "terminated"),  # its container is still there, its IP is reused
        _view("i-dead", "10.0.0.9", "terminated", groups=("sg-db",)),
        _view("i-elsewhere", "10.0.1.5", cidr="10.0.1.0/24")]},
        {}, {"sg-web": _moto_group("sg-web"), "sg-db": _moto_group("sg-db")})
    ports, members = ports_of(snap, lambda iid: "v" + iid[2:6], {"10.0.0.0/24": SUBNET},
                              present={"i-going", "i-old"})
    assert {p.instance_id: p.ip for p in ports} == {"i-run": "10.0.0.5", "i-pend": "10.0.0.6",
                                                    "i-going": "10.0.0.8"}
    assert members == {"sg-web": {"10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.1.5"}}
    assert [g.group_id for g in ports[0].groups] == ["sg-web"]


def test_one_transaction_replaces_both_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str]] = []
    monkeypatch.setattr(netlink, "run", lambda argv, stdin=None, check=True: calls.append((argv, stdin)) or "")
    runtime = SimpleNamespace(tag="phxabc", veth=lambda iid: "phxabcv" + iid[2:])
    links = CloudLinks(runtime, {"10.0.0.0/24": SimpleNamespace(name="phxabcb12345", gateway_ip="10.0.0.1")},
                       {"10.0.0.1": SimpleNamespace(port=4567)}, services={None, 40000})
    snap = Snapshot({"i-0a": _view("i-0a", "10.0.0.5")}, {}, {"sg-web": _moto_group("sg-web")})
    script = links.render(snap)
    hostsg.apply(links.tag, script)
    (argv, stdin), = calls
    assert argv == ["nft", "-f", "-"]
    assert stdin.startswith("table bridge phoenixci_phxabc {}\ndelete table bridge phoenixci_phxabc\n"
                            "table ip phoenixci_phxabc {}\ndelete table ip phoenixci_phxabc\n")
    assert stdin.endswith(script) and "flush" not in stdin
    assert "dnat to 10.0.0.1:4567" in script and links.services == {40000}


def test_no_tables_before_the_first_bridge() -> None:
    """A cloud without bridges makes no tables (they go with its last bridge; a stop must find none)."""
    links = CloudLinks(SimpleNamespace(tag="phxabc", veth=str), {}, {}, services=())
    assert links.render(Snapshot({"i-0a": _view("i-0a", "10.0.0.5")}, {}, {})) == ""
