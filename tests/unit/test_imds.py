"""The local cloud's instance metadata service behaves as EC2's (IMDSv1/v2, tree, credentials).

Requests come from 127.0.0.1, so the directory maps 127.0.0.1 to the instance under test.
"""
from __future__ import annotations

import datetime
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from phoenixci.localcloud.imds import DictInstanceDirectory, ImdsServer, InstanceInfo
from phoenixci.localcloud.instances import decode_user_data, local_hostname
from phoenixci.localcloud.rolecreds import RoleTrustError

pytestmark = pytest.mark.unit

T0 = 1_750_000_000.0
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0b3RvY29yZS10ZXN0LWtleS1tYXRlcmlhbC0w test"
ROLE = "arn:aws:iam::123456789012:role/app-role"


def make_info(**override: Any) -> InstanceInfo:
    info = InstanceInfo(
        instance_id="i-0123456789abcdef0", account_id="123456789012", region="us-east-1",
        az="us-east-1a", image_id="ami-12c6146b", instance_type="t3.micro", private_ip="10.42.1.5",
        public_ip=None, mac="02:00:00:aa:bb:cc", local_hostname=local_hostname("10.42.1.5", "us-east-1"),
        reservation_id="r-0abc", launch_time=datetime.datetime(2025, 6, 15, 12, 0, tzinfo=datetime.UTC),
        http_tokens="required", subnet_id="subnet-1", vpc_id="vpc-1", security_groups=["app-sg"],
        security_group_ids=["sg-1"], subnet_cidr="10.42.1.0/24", vpc_cidr="10.42.0.0/16")
    return replace(info, **override)


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


class Minter:
    """An injected credentials provider: fresh keys each call, valid for an hour of the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls = 0

    def __call__(self, info: InstanceInfo) -> dict[str, Any]:
        self.calls += 1
        expiry = datetime.datetime.fromtimestamp(self.clock.now + 3600, datetime.UTC)
        return {"AccessKeyId": f"ASIA{self.calls:016d}", "SecretAccessKey": f"secret{self.calls}",
                "SessionToken": f"token{self.calls}", "Expiration": expiry}


@dataclass
class Imds:
    server: ImdsServer
    directory: DictInstanceDirectory
    clock: Clock
    minter: Minter

    def set(self, **override: Any) -> InstanceInfo:
        info = make_info(**override)
        self.directory.add("127.0.0.1", info)
        return info

    def call(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def token(self, ttl: int = 21600) -> str:
        status, _, body = self.call("PUT", "/latest/api/token",
                                    {"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})
        assert status == 200, body
        return body.decode()

    def get(self, path: str, token: str | None = "auto") -> tuple[int, bytes]:
        headers = {}
        if token == "auto":
            token = self.token()
        if token is not None:
            headers["X-aws-ec2-metadata-token"] = token
        status, _, body = self.call("GET", path, headers)
        return status, body

    def text(self, path: str) -> str:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return body.decode()


@pytest.fixture()
def imds() -> Iterator[Imds]:
    clock = Clock()
    minter = Minter(clock)
    directory = DictInstanceDirectory()
    directory.add("127.0.0.1", make_info())
    with ImdsServer(directory, host="127.0.0.1", credentials=minter, clock=clock) as server:
        yield Imds(server, directory, clock, minter)


class TestTokens:
    def test_token_flow(self, imds: Imds) -> None:
        status, headers, body = imds.call("PUT", "/latest/api/token",
                                          {"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        assert status == 200 and headers["X-aws-ec2-metadata-token-ttl-seconds"] == "300"
        assert headers["Content-Type"] == "text/plain" and headers["Server"] == "EC2ws"
        assert imds.get("/latest/meta-data/instance-id", body.decode()) == (200, b"i-0123456789abcdef0")

    @pytest.mark.parametrize("ttl", [None, "", "0", "21601", "-5", "abc"])
    def test_bad_ttl_is_400(self, imds: Imds, ttl: str | None) -> None:
        headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
        assert imds.call("PUT", "/latest/api/token", headers)[0] == 400

    def test_forwarded_request_is_403(self, imds: Imds) -> None:
        headers = {"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.9"}
        assert imds.call("PUT", "/latest/api/token", headers)[0] == 403

    def test_v1_refused_when_tokens_required(self, imds: Imds) -> None:
        assert imds.get("/latest/meta-data/instance-id", token=None)[0] == 401

    def test_v1_allowed_when_optional(self, imds: Imds) -> None:
        imds.set(http_tokens="optional")
        assert imds.get("/latest/meta-data/instance-id", token=None) == (200, b"i-0123456789abcdef0")

    def test_bad_token_is_401_even_when_optional(self, imds: Imds) -> None:
        imds.set(http_tokens="optional")
        assert imds.get("/latest/meta-data/instance-id", token="not-a-token")[0] == 401

    def test_expired_token_is_401(self, imds: Imds) -> None:
        token = imds.token(ttl=1)
        assert imds.get("/latest/meta-data/instance-id", token)[0] == 200
        imds.clock.now += 1.5
        assert imds.get("/latest/meta-data/instance-id", token)[0] == 401

    def test_token_is_bound_to_its_instance(self, imds: Imds) -> None:
        token = imds.token()
        imds.set(instance_id="i-other")  # the same address now belongs to another instance
        assert imds.get("/latest/meta-data/instance-id", token)[0] == 401

    def test_unknown_source_is_refused(self, imds: Imds) -> None:
        imds.directory.remove("127.0.0.1")
        assert imds.call("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] == 403
        assert imds.get("/latest/meta-data/instance-id", token=None)[0] == 403

    def test_disabled_endpoint_is_refused(self, imds: Imds) -> None:
        imds.set(http_endpoint="disabled", http_tokens="optional")
        assert imds.get("/latest/meta-data/instance-id", token=None)[0] == 403

    def test_other_methods_are_405(self, imds: Imds) -> None:
        assert imds.call("GET", "/latest/api/token")[0] == 405
        assert imds.call("POST", "/latest/meta-data/")[0] == 405
        assert imds.call("PUT", "/latest/meta-data/instance-id")[0] == 405


class TestTree:
    def test_versions_and_version_prefixes(self, imds: Imds) -> None:
        versions = imds.text("/").splitlines()
        assert {"2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23"} <= set(versions)
        assert versions[-1] == "latest"
        for version in ("latest", "2009-04-04", "2021-03-23"):
            assert imds.text(f"/{version}/meta-data/instance-id") == "i-0123456789abcdef0"
        assert imds.get("/1999-01-01/meta-data/instance-id")[0] == 404
        assert imds.text("/latest/").splitlines() == ["dynamic", "meta-data"]

    def test_meta_data_listing(self, imds: Imds) -> None:
        listing = imds.text("/latest/meta-data/").splitlines()
        assert imds.text("/latest/meta-data") == "\n".join(listing)
        for key in ("ami-id", "ami-launch-index", "hostname", "instance-id", "instance-type",
                    "local-hostname", "local-ipv4", "mac", "network/", "placement/",
                    "reservation-id", "security-groups", "services/"):
            assert key in listing
        for absent in ("public-ipv4", "public-hostname", "public-keys/", "iam/"):
            assert absent not in listing
        assert imds.get("/latest/meta-data/public-ipv4")[0] == 404
        assert imds.get("/latest/meta-data/no-such-key")[0] == 404

    def test_leaves(self, imds: Imds) -> None:
        assert imds.text("/latest/meta-data/ami-id") == "ami-12c6146b"
        assert imds.text("/latest/meta-data/instance-type") == "t3.micro"
        assert imds.text("/latest/meta-data/local-ipv4") == "10.42.1.5"
        assert imds.text("/latest/meta-data/local-hostname") == "ip-10-42-1-5.ec2.internal"
        assert imds.text("/latest/meta-data/hostname") == "ip-10-42-1-5.ec2.internal"
        assert imds.text("/latest/meta-data/mac") == "02:00:00:aa:bb:cc"
        assert imds.text("/latest/meta-data/reservation-id") == "r-0abc"
        assert imds.text("/latest/meta-data/ami-launch-index") == "0"
        assert imds.text("/latest/meta-data/security-groups") == "app-sg"
        assert imds.text("/latest/meta-data/placement/").splitlines() == ["availability-zone", "region"]
        assert imds.text("/latest/meta-data/placement/availability-zone") == "us-east-1a"
        assert imds.text("/latest/meta-data/placement/region") == "us-east-1"

    def test_public_address(self, imds: Imds) -> None:
        imds.set(public_ip="127.3.4.5")
        assert imds.text("/latest/meta-data/public-ipv4") == "127.3.4.5"
        assert imds.text("/latest/meta-data/public-hostname") == "ec2-127-3-4-5.compute-1.amazonaws.com"
        mac = "/latest/meta-data/network/interfaces/macs/02:00:00:aa:bb:cc/"
        assert imds.text(mac + "public-ipv4s") == "127.3.4.5"
        assert imds.text(mac + "ipv4-associations/127.3.4.5") == "10.42.1.5"

    def test_network_interface(self, imds: Imds) -> None:
        assert imds.text("/latest/meta-data/network/interfaces/macs/") == "02:00:00:aa:bb:cc/"
        mac = "/latest/meta-data/network/interfaces/macs/02:00:00:aa:bb:cc/"
        listing = imds.text(mac).splitlines()
        assert {"device-number", "local-ipv4s", "subnet-id", "vpc-id", "security-groups", "mac"} <= set(listing)
        assert "public-ipv4s" not in listing
        assert imds.text(mac + "device-number") == "0"
        assert imds.text(mac + "local-ipv4s") == "10.42.1.5"
        assert imds.text(mac + "subnet-id") == "subnet-1"
        assert imds.text(mac + "vpc-id") == "vpc-1"
        assert imds.text(mac + "security-group-ids") == "sg-1"
        assert imds.text(mac + "subnet-ipv4-cidr-block") == "10.42.1.0/24"
        assert imds.text(mac + "mac") == "02:00:00:aa:bb:cc"

    def test_public_keys(self, imds: Imds) -> None:
        imds.set(public_keys=[("run-key", KEY)])
        assert "public-keys/" in imds.text("/latest/meta-data/").splitlines()
        assert imds.text("/latest/meta-data/public-keys/") == "0=run-key"
        assert imds.text("/latest/meta-data/public-keys/0/") == "openssh-key"
        assert imds.text("/latest/meta-data/public-keys/0/openssh-key") == KEY + "\n"
        assert imds.get("/latest/meta-data/public-keys/1/openssh-key")[0] == 404

    def test_user_data(self, imds: Imds) -> None:
        assert imds.get("/latest/user-data")[0] == 404
        payload = b"#cloud-config\nruncmd: [echo hi]\n\xff\x00binary"
        imds.set(user_data=payload)
        status, headers, body = imds.call("GET", "/latest/user-data",
                                          {"X-aws-ec2-metadata-token": imds.token()})
        assert (status, body) == (200, payload)
        assert headers["Content-Type"] == "application/octet-stream"
        assert "user-data" in imds.text("/latest/").splitlines()

    def test_identity_document(self, imds: Imds) -> None:
        assert imds.text("/latest/dynamic/").splitlines() == ["instance-identity/"]
        assert imds.text("/latest/dynamic/instance-identity/").splitlines() == ["document"]
        doc = json.loads(imds.text("/latest/dynamic/instance-identity/document"))
        assert doc == doc | {
            "accountId": "123456789012", "architecture": "x86_64", "availabilityZone": "us-east-1a",
            "imageId": "ami-12c6146b", "instanceId": "i-0123456789abcdef0", "instanceType": "t3.micro",
            "pendingTime": "2025-06-15T12:00:00Z", "privateIp": "10.42.1.5", "region": "us-east-1",
            "version": "2017-09-30"}

    def test_every_listed_entry_resolves(self, imds: Imds) -> None:
        """cloud-init crawls every entry a listing names (``0=name`` as ``0/``); none may 404."""
        imds.set(public_ip="127.3.4.5", public_keys=[("run-key", KEY)], user_data=b"x",
                 instance_profile_arn=PROFILE, role_arn=ROLE)
        token = imds.token()
        seen: list[str] = []

        def crawl(path: str) -> None:
            status, body = imds.get(path, token)
            assert status == 200, path
            seen.append(path)
            if path.endswith("/"):
                for entry in body.decode().splitlines():
                    name = entry.split("=", 1)[0] + "/" if "=" in entry else entry
                    crawl(path + name)

        for version in ("latest", "2009-04-04", "2021-03-23"):
            crawl(f"/{version}/meta-data/")
            crawl(f"/{version}/dynamic/")
        assert "/latest/meta-data/public-keys/0/openssh-key" in seen
        assert "/latest/meta-data/iam/security-credentials/app-role" in seen
        assert len(seen) > 100

    def test_head_request(self, imds: Imds) -> None:
        status, headers, body = imds.call("HEAD", "/latest/meta-data/instance-id",
                                          {"X-aws-ec2-metadata-token": imds.token()})
        assert status == 200 and body == b"" and headers["Content-Length"] == "19"


PROFILE = "arn:aws:iam::123456789012:instance-profile/app-profile"


class TestIam:
    def test_no_profile_is_404(self, imds: Imds) -> None:
        assert imds.get("/latest/meta-data/iam/info")[0] == 404
        assert imds.get("/latest/meta-data/iam/security-credentials/")[0] == 404

    def test_info_and_credentials(self, imds: Imds) -> None:
        imds.set(instance_profile_arn=PROFILE, instance_profile_id="AIPAEXAMPLE", role_arn=ROLE)
        assert imds.text("/latest/meta-data/iam/").splitlines() == ["info", "security-credentials/"]
        info = json.loads(imds.text("/latest/meta-data/iam/info"))
        assert info["Code"] == "Success" and info["InstanceProfileArn"] == PROFILE
        assert info["InstanceProfileId"] == "AIPAEXAMPLE" and info["LastUpdated"].endswith("Z")
        assert imds.text("/latest/meta-data/iam/security-credentials/") == "app-role"
        creds = json.loads(imds.text("/latest/meta-data/iam/security-credentials/app-role"))
        assert creds == {"Code": "Success", "LastUpdated": "2025-06-15T15:06:40Z", "Type": "AWS-HMAC",
                         "AccessKeyId": "ASIA0000000000000001", "SecretAccessKey": "secret1",
                         "Token": "token1", "Expiration": "2025-06-15T16:06:40Z"}
        assert imds.get("/latest/meta-data/iam/security-credentials/other-role")[0] == 404

    def test_credentials_cached_then_refreshed_before_expiry(self, imds: Imds) -> None:
        imds.set(instance_profile_arn=PROFILE, role_arn=ROLE)
        path = "/latest/meta-data/iam/security-credentials/app-role"
        first = json.loads(imds.text(path))
        imds.clock.now += 3600 - 15 * 60 - 1     # 15 min + 1 s left: still the same keys
        assert json.loads(imds.text(path))["AccessKeyId"] == first["AccessKeyId"]
        imds.clock.now += 2                      # under 15 min left: re-minted before expiry
        second = json.loads(imds.text(path))
        assert second["AccessKeyId"] != first["AccessKeyId"] and imds.minter.calls == 2
        assert second["Expiration"] > first["Expiration"]

    def test_listing_does_not_mint(self, imds: Imds) -> None:
        imds.set(instance_profile_arn=PROFILE, role_arn=ROLE)
        imds.text("/latest/meta-data/iam/security-credentials/")
        imds.text("/latest/meta-data/iam/info")
        assert imds.minter.calls == 0

    def test_role_that_does_not_trust_ec2(self) -> None:
        def refuse(info: InstanceInfo) -> dict[str, Any]:
            raise RoleTrustError("role does not trust ec2.amazonaws.com", role_arn=ROLE)

        directory = DictInstanceDirectory({"127.0.0.1": make_info(instance_profile_arn=PROFILE,
                                                                 role_arn=ROLE, http_tokens="optional")})
        with ImdsServer(directory, host="127.0.0.1", credentials=refuse) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/latest/meta-data/iam/security-credentials/app-role")
            doc = json.loads(conn.getresponse().read())
            conn.close()
        assert doc["Code"] == "AssumeRoleUnauthorizedAccess" and "AccessKeyId" not in doc


class TestSdkCompatibility:
    def test_botocore_fetcher_gets_role_credentials(self, imds: Imds) -> None:
        from botocore.utils import InstanceMetadataFetcher

        imds.clock.now = datetime.datetime.now(datetime.UTC).timestamp()  # botocore checks expiry
        imds.set(instance_profile_arn=PROFILE, role_arn=ROLE)
        fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=1,
                                          base_url=f"http://127.0.0.1:{imds.server.port}")
        creds = fetcher.retrieve_iam_role_credentials()
        assert creds["role_name"] == "app-role"
        assert (creds["access_key"], creds["secret_key"], creds["token"]) == (
            "ASIA0000000000000001", "secret1", "token1")

    def test_botocore_fetcher_without_profile(self, imds: Imds) -> None:
        from botocore.utils import InstanceMetadataFetcher

        fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=1,
                                          base_url=f"http://127.0.0.1:{imds.server.port}")
        assert fetcher.retrieve_iam_role_credentials() == {}


class TestDirectoryHelpers:
    def test_user_data_decoding(self) -> None:
        from moto.core.types import Base64EncodedString

        assert decode_user_data(None) is None
        assert decode_user_data(Base64EncodedString.from_raw_string("#!/bin/sh\n")) == b"#!/bin/sh\n"
        assert decode_user_data("IyEvYmluL3NoCg==") == b"#!/bin/sh\n"   # CloudFormation Fn::Base64
        assert decode_user_data("#!/bin/sh\n") == b"#!/bin/sh\n"         # not base64: raw

    def test_local_hostname(self) -> None:
        assert local_hostname("10.42.1.5", "us-east-1") == "ip-10-42-1-5.ec2.internal"
        assert local_hostname("10.0.0.9", "eu-west-1") == "ip-10-0-0-9.eu-west-1.compute.internal"

    def test_port_requires_running_server(self) -> None:
        from phoenixci.localcloud.imds import ImdsError

        server = ImdsServer(DictInstanceDirectory(), host="127.0.0.1")
        with pytest.raises(ImdsError):
            _ = server.port
