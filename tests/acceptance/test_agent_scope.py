"""From inside the CI agent instance, with the instance role's credentials from its metadata service
(what anything that gets root on the agent holds): the CI server can be neither terminated, stopped
nor started, nor retagged into the role's scope. The pipeline's own deploys and retirements with the
same role are the release tests in test_pipeline.py.
"""
from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from phoenixci.env.state import EnvState

pytestmark = pytest.mark.acceptance

ATTEMPTS = '''
import json, sys
import boto3
from botocore.exceptions import ClientError

ec2 = boto3.client("ec2")
server = sys.argv[1]


def code(call, **kwargs):
    try:
        call(**kwargs)
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]


print(json.dumps({
    "terminate": code(ec2.terminate_instances, InstanceIds=[server]),
    "start": code(ec2.start_instances, InstanceIds=[server]),
    "retag": code(ec2.create_tags, Resources=[server], Tags=[{"Key": "phoenixci:role", "Value": "app"}]),
    "untag": code(ec2.delete_tags, Resources=[server], Tags=[{"Key": "phoenixci:role"}]),
    "terminate-after": code(ec2.terminate_instances, InstanceIds=[server]),
    "caller": boto3.client("sts").get_caller_identity()["Arn"],
}))
'''


def test_the_agents_role_cannot_touch_the_ci_server(phoenix_ci: EnvState, ci_agent_host: Any,
                                                    phoenix_backend: Any) -> None:
    server = phoenix_ci.hosts["ci-server"].instance_id
    script = (f"set -a; . /etc/phoenixci/pipeline.env; set +a; "
              f"/opt/phoenixci/venv/bin/python -c {shlex.quote(ATTEMPTS)} {server}")
    out = ci_agent_host.run("bash -c " + shlex.quote(script))
    assert out.rc == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert ":assumed-role/" in result.pop("caller")  # the instance role, from the metadata service
    assert result == dict.fromkeys(["terminate", "start", "retag", "untag", "terminate-after"],
                                   "UnauthorizedOperation"), result
    found = phoenix_backend.client("ec2").describe_instances(InstanceIds=[server])["Reservations"][0]["Instances"][0]
    assert found["State"]["Name"] == "running"
    assert {t["Key"]: t["Value"] for t in found["Tags"]}["phoenixci:role"] == "ci-server"
