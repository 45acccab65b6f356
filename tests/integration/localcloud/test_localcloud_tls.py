"""The API over HTTPS with the cloud's own CA, as a user meets it: the env file and the aws CLI on
the host, then inside an instance nothing but its environment (AWS_ENDPOINT_URL, AWS_CA_BUNDLE)
and its role from the IMDS. Also: a TLS-only bucket refuses plain HTTP, and an expired role
credential is refused while the IMDS's next one works.

The module's cloud hands out role credentials that live ``LIFETIME`` seconds (the test-only
``PHOENIXCI_TEST_ROLE_CREDENTIAL_SECONDS``; AWS's minimum is 900 s). Tests run in file order.
"""
from __future__ import annotations

import datetime
import json
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cloudkit import (
    IMDS,
    TOKEN,
    Cloud,
    make_network,
    remote,
    require_root,
    run_instance,
    running_cloud,
    ssh_host,
    terminate,
    unique,
)

from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

LIFETIME = 20
AWS = "/tmp/awsv/bin/aws --region us-east-1"  # the aws CLI takes no region from the IMDS, on AWS neither


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_root()
    with pytest.MonkeyPatch.context() as mp:  # the daemon inherits it
        mp.setenv("PHOENIXCI_TEST_ROLE_CREDENTIAL_SECONDS", str(LIFETIME))
        with running_cloud(tmp_path_factory.mktemp("tls") / "state") as c:
            yield c


def test_the_env_file_points_clients_at_https_and_the_cloud_ca(cloud: Cloud) -> None:
    assert cloud.env["AWS_ENDPOINT_URL"].startswith("https://127.0.0.1:")
    ca = Path(cloud.env["AWS_CA_BUNDLE"])
    assert ca == cloud.state_dir / "tls" / "ca.pem" and "BEGIN CERTIFICATE" in ca.read_text()
    assert stat.S_IMODE((ca.parent / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca.parent / "server.key").stat().st_mode) == 0o600
    arn = cloud.aws("sts", "get-caller-identity")["Arn"]
    assert arn.endswith(":user/phoenixci-admin")


def test_the_aws_cli_verifies_the_certificate(cloud: Cloud) -> None:
    without_ca = {k: v for k, v in cloud.env.items() if k != "AWS_CA_BUNDLE"}
    proc = Cloud(cloud.state_dir, without_ca, cloud.ready, cloud.home).aws_raw("sts", "get-caller-identity")
    assert proc.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in proc.stderr, proc.stderr


def test_a_tls_only_bucket_refuses_plain_http(cloud: Cloud, tmp_path: Path) -> None:
    bucket = unique("tls-only")
    arn = f"arn:aws:s3:::{bucket}"
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
    body = tmp_path / "body"
    body.write_text("over TLS\n")
    cloud.aws("s3api", "create-bucket", "--bucket", bucket)
    try:
        cloud.aws("s3api", "put-bucket-policy", "--bucket", bucket, "--policy", json.dumps(policy))
        cloud.aws("s3api", "put-object", "--bucket", bucket, "--key", "k", "--body", str(body))
        assert [o["Key"] for o in cloud.aws("s3api", "list-objects-v2", "--bucket", bucket)["Contents"]] == ["k"]
        plain = cloud.status()["http_endpoint_url"]
        assert plain.startswith("http://127.0.0.1:")
        for args in (("list-objects-v2", "--bucket", bucket),
                     ("get-object", "--bucket", bucket, "--key", "k", str(tmp_path / "out")),
                     ("put-object", "--bucket", bucket, "--key", "k2", "--body", str(body))):
            proc = cloud.aws_raw("--endpoint-url", plain, "s3api", *args)
            assert proc.returncode != 0 and "(AccessDenied)" in proc.stderr, (args, proc.stderr)
        proc = cloud.aws_raw("--endpoint-url", cloud.env["AWS_ENDPOINT_URL"].replace("https:", "http:"),
                             "s3api", "list-objects-v2", "--bucket", bucket)
        assert proc.returncode != 0, "the TLS port must not answer plain HTTP"
    finally:
        cloud.aws("s3api", "delete-bucket-policy", "--bucket", bucket)
        cloud.aws("s3api", "delete-object", "--bucket", bucket, "--key", "k")
        cloud.aws("s3api", "delete-bucket", "--bucket", bucket)


def aws_inside(host: Any, args: str, env: str = "") -> Any:
    """The aws CLI on the instance; its exit status 255 (a service error) becomes 254, which
    testinfra does not take for a failed SSH connection."""
    return remote(host, f"{env} {AWS} {args}; rc=$?; [ $rc -eq 255 ] && rc=254; exit $rc")


@dataclass
class Box:
    instance_id: str
    host: Any
    role: str
    api_url: str


@pytest.fixture(scope="module")
def box(cloud: Cloud, ssh_key: Path) -> Iterator[Box]:
    net = make_network(cloud, ssh_key, ports=(22,))
    role = unique("tls-role")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}
    cloud.aws("iam", "create-role", "--role-name", role, "--assume-role-policy-document", json.dumps(trust))
    cloud.aws("iam", "create-instance-profile", "--instance-profile-name", role)
    cloud.aws("iam", "add-role-to-instance-profile", "--instance-profile-name", role, "--role-name", role)
    inst = run_instance(cloud, net, "#!/bin/sh\nenv > /var/tmp/user-data-env\n",
                        "--iam-instance-profile", f"Name={role}",
                        "--metadata-options", "HttpTokens=required,HttpEndpoint=enabled")
    try:
        host = ssh_host(cloud, inst["InstanceId"], inst["PrivateIpAddress"], ssh_key)
        wait_until(lambda: "status: done" in host.run("cloud-init status").stdout, timeout=60,
                   what="cloud-init status: done")
        yield Box(inst["InstanceId"], host, role, cloud.subnet_info(net.cidr)["api_url"])
    finally:
        terminate(cloud, inst["InstanceId"])
        cloud.aws("iam", "remove-role-from-instance-profile", "--instance-profile-name", role, "--role-name", role)
        cloud.aws("iam", "delete-instance-profile", "--instance-profile-name", role)
        cloud.aws("iam", "delete-role", "--role-name", role)


def test_an_instance_sees_only_the_endpoint_and_the_ca_bundle(cloud: Cloud, box: Box) -> None:
    assert box.api_url.startswith("https://")
    expected = {"AWS_ENDPOINT_URL": box.api_url, "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
    login = dict(line.split("=", 1) for line in box.host.check_output("env").splitlines() if "=" in line)
    assert {k: v for k, v in login.items() if k.startswith("AWS_")} == expected  # ssh login (pam_env)
    services = dict(line.split("=", 1) for line in box.host.check_output("sudo cat /var/tmp/user-data-env").splitlines()
                    if "=" in line)
    assert not [k for k in services if k.startswith("AWS_")]  # services (user data) see what they see on AWS
    ca = Path(cloud.env["AWS_CA_BUNDLE"]).read_text().strip()
    assert ca in box.host.file("/etc/ssl/certs/ca-certificates.crt").content_string  # cloud-init ca_certs
    assert box.host.run(f"curl -sS -o /dev/null {box.api_url}/").rc == 0  # curl trusts the system store


def other_ca_pem() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a user's own CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_user_data_with_its_own_ca_certs_still_trusts_the_api(cloud: Cloud, box: Box, ssh_key: Path) -> None:
    """cloud-init merges user data's ``ca_certs`` over the cloud's: both CAs end up trusted."""
    own = other_ca_pem()
    user_data = "#cloud-config\nca_certs:\n  trusted:\n  - |\n" + "".join(f"    {ln}\n" for ln in own.splitlines())
    net = make_network(cloud, ssh_key, ports=(22,))
    inst = run_instance(cloud, net, user_data)
    try:
        host = ssh_host(cloud, inst["InstanceId"], inst["PrivateIpAddress"], ssh_key)
        wait_until(lambda: "status: done" in host.run("cloud-init status").stdout, timeout=60,
                   what="cloud-init status: done")
        store = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
        assert own.strip() in store and Path(cloud.env["AWS_CA_BUNDLE"]).read_text().strip() in store
        api_url = cloud.subnet_info(net.cidr)["api_url"]
        assert host.run(f"curl -sS -o /dev/null {api_url}/").rc == 0
    finally:
        terminate(cloud, inst["InstanceId"])


def test_the_aws_cli_inside_needs_nothing_but_the_instance_environment(cloud: Cloud, box: Box) -> None:
    mirror = cloud.status()["subnets"]
    mirror_url = next(s["mirror_url"] for s in mirror.values() if box.api_url.startswith(f"https://{s['gateway']}:"))
    gateway = mirror_url.split("/")[2].split(":")[0]
    install = remote(box.host, f"python3 -m venv /tmp/awsv && /tmp/awsv/bin/pip install -q --no-index "
                               f"--find-links {mirror_url} --trusted-host {gateway} awscli", timeout=240)
    assert install.rc == 0, install.stderr
    got = aws_inside(box.host, "sts get-caller-identity --output json")
    assert got.rc == 0, got.stderr
    assert json.loads(got.stdout)["Arn"].endswith(f":assumed-role/{box.role}/{box.instance_id}")


def test_an_expired_role_credential_is_refused_and_the_next_one_works(box: Box) -> None:
    base = f"{IMDS}/meta-data/iam/security-credentials/{box.role}"
    creds = json.loads(box.host.check_output(f"curl -sf -H \"X-aws-ec2-metadata-token: {TOKEN}\" {base}"))
    expiry = datetime.datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00"))
    left = (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()
    assert 0 < left <= LIFETIME + 1, creds["Expiration"]
    env = (f"AWS_ACCESS_KEY_ID={creds['AccessKeyId']} AWS_SECRET_ACCESS_KEY={creds['SecretAccessKey']} "
           f"AWS_SESSION_TOKEN={creds['Token']}")
    assert aws_inside(box.host, "sts get-caller-identity", env).rc == 0, "fresh credentials work"
    time.sleep(left + 1)
    expired = aws_inside(box.host, "sts get-caller-identity", env)
    assert expired.rc != 0
    assert "(ExpiredToken)" in expired.stderr, expired.stderr
    assert "The security token included in the request is expired" in expired.stderr
    again = aws_inside(box.host, "sts get-caller-identity --output json")  # the IMDS's next one
    assert again.rc == 0, again.stderr
    assert json.loads(again.stdout)["Arn"].endswith(f":assumed-role/{box.role}/{box.instance_id}")

