"""The package path of ``phoenixci cloud start --package-proxy``, as a user with AWS user data meets it.

User data written for AWS (``apt-get install``, ``pip install``, no proxy settings) finishes: the
names of this machine's package sources resolve to the subnet gateway, plain HTTP goes through the
gateway's cache, HTTPS passes through by server name. Nothing else resolves, and a name that is not a
package source is refused by the proxy whatever address it is sent to. The package names installed
here are packages, not hosts: the hosts come from this machine's own apt and pip configuration.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudkit import (
    Cloud,
    Network,
    make_network,
    remote,
    require_root,
    run_instance,
    running_cloud,
    ssh_host,
    terminate,
    unique,
)

from phoenixci.localcloud import pkgsources
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

DONE = "/var/tmp/packages-installed"
#: AWS-style user data: no proxy, no mirror, the image's own apt sources and pip's default index
USER_DATA = f"""#!/bin/bash
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends tree
cd /var/tmp && apt-get download tree   # the same .deb again: the gateway's cache answers
python3 -m venv /opt/tools
/opt/tools/bin/pip install --no-cache-dir --disable-pip-version-check six
/opt/tools/bin/python -c 'import six; print(six.__version__)' > {DONE}
"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_root()
    with running_cloud(tmp_path_factory.mktemp("cloud") / "state", "--package-proxy") as c:
        yield c


@pytest.fixture(scope="module")
def net(cloud: Cloud, ssh_key: Path) -> Network:
    return make_network(cloud, ssh_key, ports=(22,))


@pytest.fixture(scope="module")
def installer(cloud: Cloud, net: Network) -> Iterator[tuple[str, Any]]:
    inst = run_instance(cloud, net, USER_DATA)
    iid, ip = inst["InstanceId"], inst["PrivateIpAddress"]
    try:
        yield iid, ssh_host(cloud, iid, ip, net.key_file)
    finally:
        terminate(cloud, iid)


def test_status_names_this_machines_package_sources(cloud: Cloud) -> None:
    sources = pkgsources.read_sources()
    expected = sorted(sources.http | sources.https)
    assert expected, "this machine has no package sources configured"
    for status in (cloud.started_status, cloud.status()):
        assert status["package_proxy"]["names"] == expected


def test_user_data_that_installs_packages_finishes(cloud: Cloud, net: Network, installer: tuple[str, Any]) -> None:
    iid, host = installer

    def finished() -> bool:
        result = remote(host, "cloud-init status --format json || true", timeout=20)
        if '"error"' in result.stdout and '"status": "error"' in result.stdout:
            log = remote(host, "tail -n 40 /var/log/cloud-init-output.log").stdout
            raise AssertionError(f"user data failed on {iid}:\n{log}")
        return host.file(DONE).exists

    wait_until(finished, timeout=300, interval=2, what=f"user data on {iid} to install its packages")
    assert host.file(DONE).content_string.strip(), "six imported but printed no version"
    assert host.package("tree").is_installed
    gateway = cloud.subnet_info(net.cidr)["gateway"]
    assert host.file("/etc/resolv.conf").contains(f"nameserver {gateway}")
    stats = cloud.status()["package_proxy"]["gateways"][gateway]
    assert stats["http_misses"] > 0 and stats["http_hits"] >= 1, stats  # the second download came from the cache
    assert stats["https_tunnels"] > 0, stats


def test_nothing_else_resolves_or_passes(cloud: Cloud, net: Network, installer: tuple[str, Any]) -> None:
    iid, host = installer
    gateway = cloud.subnet_info(net.cidr)["gateway"]
    sources = pkgsources.read_sources()
    name = sorted(sources.http | sources.https)[0]
    assert remote(host, f"getent hosts {name}").stdout.split()[0] == gateway
    assert remote(host, "getent hosts not-a-package-source.invalid").rc != 0  # refused, not forwarded
    refused = remote(host, f"curl -s -o /dev/null -w '%{{http_code}}' --resolve not-a-source.invalid:80:{gateway} "
                           "http://not-a-source.invalid/", timeout=20)
    assert refused.stdout == "403", refused
    tunnel = remote(host, f"curl -sS --resolve not-a-source.invalid:443:{gateway} https://not-a-source.invalid/",
                    timeout=20)
    assert tunnel.rc != 0, tunnel  # reset at the ClientHello: the proxy opened nothing
    assert remote(host, "ip route show default").stdout.strip() == "", "an instance has a default route"


def test_security_groups_apply_to_the_package_path(cloud: Cloud, net: Network) -> None:
    """A group without egress reaches no package source (DNS on the gateway still answers, as Amazon DNS)."""
    group = cloud.aws("ec2", "create-security-group", "--group-name", unique("closed"), "--description", "no egress",
                      "--vpc-id", net.vpc_id)["GroupId"]
    cloud.aws("ec2", "authorize-security-group-ingress", "--group-id", group, "--ip-permissions", json.dumps(
        [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]))
    cloud.aws("ec2", "revoke-security-group-egress", "--group-id", group, "--ip-permissions", json.dumps(
        [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]))
    inst = cloud.aws("ec2", "run-instances", "--image-id", cloud.image_id, "--count", "1", "--instance-type",
                     "t3.micro", "--key-name", net.key_name, "--subnet-id", net.subnet_id,
                     "--security-group-ids", group)["Instances"][0]
    iid = inst["InstanceId"]
    try:
        host = ssh_host(cloud, iid, inst["PrivateIpAddress"], net.key_file)
        gateway = cloud.subnet_info(net.cidr)["gateway"]
        sources = pkgsources.read_sources()
        name = sorted(sources.http)[0] if sources.http else sorted(sources.https)[0]
        assert remote(host, f"getent hosts {name}").stdout.split()[0] == gateway
        scheme = "http" if sources.http else "https"
        blocked = remote(host, f"curl -s -m 4 -o /dev/null -w '%{{http_code}}' {scheme}://{name}/", timeout=15)
        assert blocked.rc != 0 and blocked.stdout in ("", "000"), blocked
    finally:
        terminate(cloud, iid)
