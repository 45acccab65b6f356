"""The same instance story for ``#cloud-config`` user data and for a CloudFormation instance, and an
Elastic IP moving between two instances without dropping the open connection.

One cloud (module scope) and one network serve all tests; each test terminates its instances.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudkit import Cloud, Network, make_network, port_open, run_instance, ssh_host, terminate, unique

from phoenixci.localcloud import netlink
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

CLOUD_CONFIG = """#cloud-config
write_files:
  - path: /srv/cc/index.html
    content: |
      hello-from-cloud-config
runcmd:
  - [sh, -c, "cd /srv/cc && setsid nohup python3 -m http.server 8080 </dev/null >/dev/null 2>&1 &"]
"""

# A server that names itself; /slow streams 24 lines over ~5 s (a long-lived connection).
WEB = """#!/bin/bash
cat > /usr/local/bin/web.py <<'EOF'
import http.server, sys, time
NAME = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        if self.path == "/slow":
            for i in range(24):
                self.wfile.write(f"{NAME} {i}\\n".encode())
                self.wfile.flush()
                time.sleep(0.2)
        else:
            self.wfile.write(f"{NAME}\\n".encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
EOF
setsid nohup python3 /usr/local/bin/web.py @NAME@ </dev/null >/dev/null 2>&1 &
"""

CFN_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {k: {"Type": "String"} for k in ("ImageId", "SubnetId", "GroupId", "KeyName")},
    "Resources": {"Web": {"Type": "AWS::EC2::Instance", "Properties": {
        "ImageId": {"Ref": "ImageId"}, "InstanceType": "t3.micro", "SubnetId": {"Ref": "SubnetId"},
        "SecurityGroupIds": [{"Ref": "GroupId"}], "KeyName": {"Ref": "KeyName"},
        "UserData": {"Fn::Base64": "#!/bin/bash\necho from-cfn > /var/tmp/cfn-user-data\n"
                                   "mkdir -p /srv/cfn && echo hello-from-cfn > /srv/cfn/index.html\n"
                                   "cd /srv/cfn && setsid nohup python3 -m http.server 8080 "
                                   "</dev/null >/dev/null 2>&1 &\n"}}}},
    "Outputs": {"InstanceId": {"Value": {"Ref": "Web"}},
                "PrivateIp": {"Value": {"Fn::GetAtt": ["Web", "PrivateIp"]}}},
}


@pytest.fixture(scope="module")
def net(cloud: Cloud, ssh_key: Path) -> Network:
    return make_network(cloud, ssh_key)


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def wait_http(url: str, timeout: float = 30) -> str:
    return wait_until(lambda: http_get(url), timeout=timeout, interval=0.2, what=url)


@pytest.fixture
def instances(cloud: Cloud) -> Iterator[list[str]]:
    """Instance ids a test launched: terminated afterwards whatever happens."""
    ids: list[str] = []
    yield ids
    if ids:
        terminate(cloud, *ids)


def test_cloud_config_user_data(cloud: Cloud, net: Network, instances: list[str]) -> None:
    inst = run_instance(cloud, net, CLOUD_CONFIG)
    iid, ip = inst["InstanceId"], inst["PrivateIpAddress"]
    instances.append(iid)
    host = ssh_host(cloud, iid, ip, net.key_file)
    assert host.check_output("id -un") == "admin"
    cloud.wait_phase(iid, "ready")
    assert "status: done" in host.run("cloud-init status").stdout
    assert host.file("/srv/cc/index.html").content_string.strip() == "hello-from-cloud-config"
    wait_until(lambda: host.socket("tcp://0.0.0.0:8080").is_listening, timeout=30, what="runcmd's server")
    assert wait_http(f"http://{ip}:8080/").strip() == "hello-from-cloud-config"
    ud = host.check_output(
        "T=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token);"
        " curl -sf -H \"X-aws-ec2-metadata-token: $T\" http://169.254.169.254/latest/user-data")
    assert ud.startswith("#cloud-config")


def test_cloudformation_instance(cloud: Cloud, net: Network, instances: list[str]) -> None:
    stack = unique("web-stack")
    body = net.key_file.parent / f"{stack}.json"
    body.write_text(json.dumps(CFN_TEMPLATE))
    params = {"ImageId": cloud.image_id, "SubnetId": net.subnet_id, "GroupId": net.group_id,
              "KeyName": net.key_name}
    cloud.aws("cloudformation", "create-stack", "--stack-name", stack, "--template-body", f"file://{body}",
              "--parameters", *[f"ParameterKey={k},ParameterValue={v}" for k, v in params.items()])
    try:
        desc = wait_until(
            lambda: next(s for s in cloud.aws("cloudformation", "describe-stacks", "--stack-name", stack)["Stacks"]
                         if s["StackStatus"] == "CREATE_COMPLETE"),
            timeout=60, what=f"stack {stack} CREATE_COMPLETE")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in desc["Outputs"]}
        iid, ip = outputs["InstanceId"], outputs["PrivateIp"]
        instances.append(iid)
        host = ssh_host(cloud, iid, ip, net.key_file)
        cloud.wait_phase(iid, "ready")
        assert host.file("/var/tmp/cfn-user-data").content_string.strip() == "from-cfn"
        assert wait_http(f"http://{ip}:8080/").strip() == "hello-from-cfn"
        seen_id = host.check_output(
            "T=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "
            "http://169.254.169.254/latest/api/token); curl -sf -H \"X-aws-ec2-metadata-token: $T\" "
            "http://169.254.169.254/latest/meta-data/instance-id")
        assert seen_id == iid
        netns = cloud.runtime.netns(iid)
        assert netns in netlink.netns_names()
    finally:
        cloud.aws("cloudformation", "delete-stack", "--stack-name", stack)
    wait_until(lambda: netns not in netlink.netns_names(), timeout=30, what=f"delete-stack removes {netns}")
    cloud.wait_phase(iid, "absent", timeout=30)
    assert not port_open(ip, 22, timeout=2.0)


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed; got {bytes(buf)!r}")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def test_elastic_ip_move_switches_new_connections_and_keeps_open_ones(
        cloud: Cloud, net: Network, instances: list[str]) -> None:
    a = run_instance(cloud, net, WEB.replace("@NAME@", "server-a"))
    instances.append(a["InstanceId"])
    b = run_instance(cloud, net, WEB.replace("@NAME@", "server-b"))
    instances.append(b["InstanceId"])
    for inst, name in ((a, "server-a"), (b, "server-b")):
        cloud.wait_phase(inst["InstanceId"], "ready")
        assert wait_http(f"http://{inst['PrivateIpAddress']}:8080/", timeout=20).strip() == name
    alloc = cloud.aws("ec2", "allocate-address", "--domain", "vpc")
    eip, alloc_id = alloc["PublicIp"], alloc["AllocationId"]
    cloud.aws("ec2", "associate-address", "--allocation-id", alloc_id, "--instance-id", a["InstanceId"])
    assert wait_http(f"http://{eip}:8080/", timeout=10).strip() == "server-a"

    with socket.create_connection((eip, 8080), timeout=10) as slow:
        slow.sendall(b"GET /slow HTTP/1.0\r\nHost: x\r\n\r\n")
        buf = bytearray()
        while _read_line(slow, buf).strip():
            pass  # status line and headers
        assert _read_line(slow, buf) == b"server-a 0"
        cloud.aws("ec2", "associate-address", "--allocation-id", alloc_id, "--instance-id", b["InstanceId"])
        t0 = time.monotonic()
        wait_until(lambda: http_get(f"http://{eip}:8080/").strip() == "server-b", timeout=5, interval=0.05,
                   what="a new connection through the moved EIP reaches server-b")
        switch = time.monotonic() - t0
        while True:
            chunk = slow.recv(4096)
            if not chunk:
                break
            buf += chunk
        rest = bytes(buf).decode().split()
    assert switch < 2.0, f"new connections switched after {switch:.2f}s"
    lines = [" ".join(rest[i:i + 2]) for i in range(0, len(rest), 2)]
    assert lines == [f"server-a {i}" for i in range(1, 24)], "the open connection did not finish on A"
    addr = cloud.aws("ec2", "describe-addresses", "--allocation-ids", alloc_id)["Addresses"][0]
    assert addr["InstanceId"] == b["InstanceId"]
