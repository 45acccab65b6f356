"""GetConsoleOutput shows what the instance really printed, as on EC2: cloud-init's output with
the SSH host keys, which is how phoenixci pins host keys without trusting a first connection."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from phoenixci.env.hostkeys import parse_host_keys, wait_for_host_keys
from phoenixci.harness import Infrastructure

pytestmark = pytest.mark.integration


def test_console_carries_the_instances_own_host_key(phoenix_backend: Any, scratch_infra: Infrastructure) -> None:
    ec2 = phoenix_backend.client("ec2")
    server = scratch_infra.stack.outputs["CiServerInstanceId"]
    keys = wait_for_host_keys(ec2, server, timeout=120)
    # the key cloud-init generated inside this instance, read from its disk by the runtime
    assert keys == [phoenix_backend.cloud.runtime.ssh_host_key(server)]
    agent = scratch_infra.stack.outputs["CiAgentInstanceId"]
    assert wait_for_host_keys(ec2, agent, timeout=120) != keys, "host keys must differ per instance"
    text = ec2.get_console_output(InstanceId=server)["Output"]
    assert "Cloud-init" in text and "Linux version 2.6.16-xenU" not in text


def test_console_of_an_unknown_instance_is_refused(phoenix_backend: Any) -> None:
    with pytest.raises(ClientError) as info:
        phoenix_backend.client("ec2").get_console_output(InstanceId="i-0123456789abcdef0")
    assert info.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"


@pytest.mark.unit
def test_parse_host_keys_takes_the_last_block() -> None:
    console = ("-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAold root@a\n-----END SSH HOST KEY KEYS-----\n"
               "noise\n-----BEGIN SSH HOST KEY KEYS-----\necdsa-sha2-nistp256 AAAAe= root@a\n"
               "ssh-ed25519 AAAAnew root@a\n-----END SSH HOST KEY KEYS-----\n")
    assert parse_host_keys(console) == ["ecdsa-sha2-nistp256 AAAAe=", "ssh-ed25519 AAAAnew"]
    assert parse_host_keys("no keys here") == []
