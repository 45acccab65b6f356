"""Issue 3's "Done when", as a new user would: only the env file and the ``aws`` CLI, then SSH.

One cloud and one instance serve the module; the tests run in file order and the last two
stop/start and terminate the instance.
"""
from __future__ import annotations

import errno
import json
import shlex
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cloudkit import (
    IMDS,
    TOKEN,
    AwsCliError,
    Cloud,
    Network,
    background,
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

MARKER = "hello-from-bash-user-data"
USER_DATA = f"""#!/bin/bash
set -e
mkdir -p /srv/www
echo {MARKER} > /srv/www/index.html
echo ran > /var/tmp/user-data-ran
cd /srv/www && nohup python3 -m http.server 8080 >/var/log/web.log 2>&1 &
"""


@dataclass
class Story:
    net: Network
    instance_id: str
    ip: str
    host: Any
    bucket: str
    role: str
    gateway: str
    api_url: str
    mirror_url: str


@pytest.fixture(scope="module")
def story(cloud: Cloud, ssh_key: Path) -> Any:
    net = make_network(cloud, ssh_key)
    bucket, role = unique("story-bucket"), unique("story-role")
    cloud.aws("s3api", "create-bucket", "--bucket", bucket)
    allowed = ssh_key.parent / "allowed"
    allowed.write_text("the allowed object\n")
    cloud.aws("s3api", "put-object", "--bucket", bucket, "--key", "allowed", "--body", str(allowed))
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                      "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    cloud.aws("iam", "create-role", "--role-name", role, "--assume-role-policy-document", json.dumps(trust))
    cloud.aws("iam", "put-role-policy", "--role-name", role, "--policy-name", "get-objects",
              "--policy-document", json.dumps(policy))
    cloud.aws("iam", "create-instance-profile", "--instance-profile-name", role)
    cloud.aws("iam", "add-role-to-instance-profile", "--instance-profile-name", role, "--role-name", role)
    inst = run_instance(cloud, net, USER_DATA, "--iam-instance-profile", f"Name={role}",
                        "--metadata-options", "HttpTokens=required,HttpEndpoint=enabled")
    iid, ip = inst["InstanceId"], inst["PrivateIpAddress"]
    try:
        host = ssh_host(cloud, iid, ip, ssh_key)
        subnet = cloud.subnet_info(net.cidr)
        yield Story(net, iid, ip, host, bucket, role, subnet["gateway"], subnet["api_url"], subnet["mirror_url"])
    finally:
        terminate(cloud, iid)


@pytest.fixture(scope="module")
def eip(cloud: Cloud, story: Story) -> str:
    alloc = cloud.aws("ec2", "allocate-address", "--domain", "vpc")
    cloud.aws("ec2", "associate-address", "--allocation-id", alloc["AllocationId"],
              "--instance-id", story.instance_id)
    return str(alloc["PublicIp"])


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def test_ssh_as_admin_with_the_imported_key(story: Story) -> None:
    assert story.host.check_output("id -un") == "admin"
    assert story.host.run("sudo -n true").rc == 0  # passwordless sudo, as on Debian's EC2 images
    keys = story.host.file("/home/admin/.ssh/authorized_keys").content_string
    assert story.net.key_file.with_suffix(".pub").read_text().split()[1] in keys


def test_systemd_is_pid_1_and_cloud_init_is_done(cloud: Cloud, story: Story) -> None:
    assert story.host.process.get(pid=1).comm == "systemd"
    wait_until(lambda: "status: done" in story.host.run("cloud-init status").stdout, timeout=60,
               what="cloud-init status: done")
    assert cloud.instance_status(story.instance_id)["boot_phase"] == "ready"
    assert story.host.check_output("hostname") == "ip-" + story.ip.replace(".", "-")


def test_user_data_ran_and_serves_on_8080(story: Story) -> None:
    assert story.host.file("/var/tmp/user-data-ran").content_string.strip() == "ran"
    wait_until(lambda: story.host.socket("tcp://0.0.0.0:8080").is_listening, timeout=30,
               what="user data's web server listening on 8080")
    assert any("http.server" in p.args for p in story.host.process.filter(comm="python3"))
    assert http_get(f"http://{story.ip}:8080/").strip() == MARKER


def test_cloud_init_stages_ran_forked_from_one_warm_python_in_their_own_units(story: Story) -> None:
    """stages.py: each stage ran as its unit's process (its cgroup, its journal name, its status),
    forked by the stage server, which ended after the last stage."""
    host = story.host
    for unit in ("cloud-init-local", "cloud-init", "cloud-config", "cloud-final"):
        shown = host.check_output(f"systemctl show -p Result -p ExecMainStatus -p DropInPaths {unit}.service")
        assert "Result=success" in shown and "ExecMainStatus=0" in shown, shown
        assert "50-phoenixci-stages.conf" in shown, shown
    served = host.run("sudo journalctl -b -u phoenixci-cloud-init-stages.service -o cat").stdout
    assert "Deactivated successfully" in served, served
    assert "not preloaded" not in served, served  # every module the stages use was imported once
    named = host.run("sudo journalctl -b -t cloud-init -o cat").stdout
    for stage in ("init-local", "init", "modules:config", "modules:final"):
        assert f"running '{stage}'" in named, named[-2000:]
    web = [p for p in host.process.filter(comm="python3") if "http.server" in p.args]
    assert web, "user data's web server is not running"
    cgroups = host.file(f"/proc/{web[0].pid}/cgroup").content_string.splitlines()
    assert "0::/system.slice/cloud-final.service" in cgroups, cgroups  # the unified (v2) hierarchy


def test_imds_v2_returns_the_instance_id_and_v1_gets_401(story: Story) -> None:
    got = story.host.check_output(f"curl -sf -H \"X-aws-ec2-metadata-token: {TOKEN}\" {IMDS}/meta-data/instance-id")
    assert got == story.instance_id
    code = story.host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {IMDS}/meta-data/instance-id")
    assert code == "401"  # the instance requires IMDSv2 (HttpTokens=required)


def test_imds_hands_out_the_role_credentials(story: Story) -> None:
    base = f"{IMDS}/meta-data/iam/security-credentials/"
    hdr = f"-H \"X-aws-ec2-metadata-token: {TOKEN}\""
    assert story.host.check_output(f"curl -sf {hdr} {base}") == story.role
    creds = json.loads(story.host.check_output(f"curl -sf {hdr} {base}{story.role}"))
    assert creds["Code"] == "Success" and creds["AccessKeyId"] and creds["SecretAccessKey"] and creds["Token"]
    info = json.loads(story.host.check_output(f"curl -sf {hdr} {IMDS}/meta-data/iam/info"))
    assert info["InstanceProfileArn"].endswith(f"instance-profile/{story.role}")


def test_aws_cli_from_the_wheelhouse_gets_allowed_and_is_denied_put(story: Story) -> None:
    gw = story.gateway
    install = remote(story.host, f"python3 -m venv /tmp/awsv && /tmp/awsv/bin/pip install -q --no-index "
                             f"--find-links {story.mirror_url} --trusted-host {gw} awscli", timeout=240)
    assert install.rc == 0, install.stderr
    aws = f"AWS_ENDPOINT_URL={story.api_url} AWS_DEFAULT_REGION=us-east-1 /tmp/awsv/bin/aws"
    got = remote(story.host, f"cd /tmp && {aws} s3 cp s3://{story.bucket}/allowed ./allowed && cat ./allowed")
    assert got.rc == 0, got.stderr
    assert got.stdout.strip().endswith("the allowed object")
    denied = remote(story.host, f"cd /tmp && echo x > x && {aws} s3 cp ./x s3://{story.bucket}/x")
    assert denied.rc != 0 and "AccessDenied" in denied.stderr, (denied.stdout, denied.stderr)


def test_elastic_ip_answers_from_the_host(cloud: Cloud, story: Story, eip: str) -> None:
    assert eip.startswith("127.")
    body = wait_until(lambda: http_get(f"http://{eip}:8080/"), timeout=10, what=f"http://{eip}:8080/")
    assert body.strip() == MARKER
    addr = cloud.aws("ec2", "describe-addresses", "--public-ips", eip)["Addresses"][0]
    assert addr["InstanceId"] == story.instance_id
    wait_until(lambda: cloud.instance_status(story.instance_id)["elastic_ip"] == eip, timeout=10,
               what="cloud status shows the Elastic IP")


def test_port_not_in_the_security_group_is_unreachable(story: Story, eip: str) -> None:
    background(story.host, "cd /tmp && exec python3 -m http.server 9090")
    wait_until(lambda: story.host.socket("tcp://0.0.0.0:9090").is_listening, timeout=15,
               what="http.server on 9090 inside")
    assert story.host.run("curl -sf -o /dev/null http://127.0.0.1:9090/").rc == 0  # it does serve
    for address in (story.ip, eip):
        assert port_open(address, 8080), f"{address}:8080 (allowed) should answer"
        assert not port_open(address, 9090, timeout=2.0), f"{address}:9090 is not in the security group"


def test_nothing_leaves_the_machine(story: Story) -> None:
    routes = story.host.check_output("ip route")
    assert not any(line.startswith("default") for line in routes.splitlines()), routes
    routes_json = json.loads(netlink.run(["ip", "-j", "route", "show", "default"]) or "[]")
    outside = routes_json[0]["gateway"] if routes_json and "gateway" in routes_json[0] else "192.0.2.1"
    probe = ("import socket,time,errno,sys\ns=socket.socket();s.settimeout(3);t=time.monotonic()\n"
             f"try:\n s.connect(({outside!r},80));print('connected')\n"
             "except OSError as e:\n print(errno.errorcode.get(e.errno, e), round(time.monotonic()-t,3))\n")
    out = story.host.check_output(f"python3 -c {shlex.quote(probe)}")
    name, elapsed = out.split()
    assert name == errno.errorcode[errno.ENETUNREACH], out  # refused locally: no packet was sent
    assert float(elapsed) < 0.5, out
    for address in ("1.1.1.1", "8.8.8.8", outside):  # the kernel's answer, computed without traffic
        assert story.host.run(f"ip route get {address}").rc != 0


def test_stop_then_start_keeps_the_disk(cloud: Cloud, story: Story) -> None:
    cloud.aws("ec2", "stop-instances", "--instance-ids", story.instance_id)
    cloud.wait_phase(story.instance_id, "stopped", timeout=30)
    assert story.instance_id and not port_open(story.ip, 22, timeout=2.0), "sshd still answers when stopped"
    with pytest.raises(RuntimeError):
        story.host.run("true")  # ssh fails (exit 255)
    cloud.aws("ec2", "start-instances", "--instance-ids", story.instance_id)
    t0 = time.monotonic()
    wait_until(lambda: story.host.run("true").rc == 0, timeout=60, what="ssh after start-instances")
    assert time.monotonic() - t0 < 60
    assert story.host.file("/var/tmp/user-data-ran").exists  # same overlay: the disk survived
    assert story.host.file("/srv/www/index.html").content_string.strip() == MARKER


def test_terminate_removes_the_container(cloud: Cloud, story: Story) -> None:
    netns = cloud.runtime.netns(story.instance_id)
    assert netns in netlink.netns_names()
    cloud.aws("ec2", "terminate-instances", "--instance-ids", story.instance_id)
    wait_until(lambda: netns not in netlink.netns_names(), timeout=30, what=f"netns {netns} removed")
    inst = cloud.wait_phase(story.instance_id, "absent", timeout=30)
    assert inst["state"] in ("terminated", None)
    assert not (cloud.runtime.state_dir / "instances" / story.instance_id).exists()
    assert not port_open(story.ip, 22, timeout=2.0)


def test_aws_cli_errors_are_reported_not_raised_as_tracebacks(cloud: Cloud) -> None:
    with pytest.raises(AwsCliError, match="InvalidInstanceID"):
        cloud.aws("ec2", "describe-instances", "--instance-ids", "i-0123456789abcdef0")
