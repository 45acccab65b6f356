"""The main job (`make demo` runs `phoenixci demo`) works and leaves nothing behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.acceptance


def test_demo_shows_the_infrastructure_and_tears_it_down() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(COLUMNS="200", AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, "-m", "phoenixci.cli", "demo"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    run_id = re.search(r"run id (phx-[0-9a-f]{8})", out)
    assert run_id, out
    for resource in ("AWS::EC2::VPC", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::IAM::Role",
                     "AWS::EC2::Instance", "AWS::EC2::EIP", "CREATE_COMPLETE"):
        assert resource in out
    for output in ("ArtifactBucket", "AppEipAllocationId", "CiServerPublicIp", "AgentRoleArn"):
        assert output in out
    # on the local cloud the CI server and agent really boot and answer over SSH with their hostnames
    assert re.search(r"CI server .* ready .* ip-10-\d+-1-\d+", out), out
    assert re.search(r"CI agent .* ready .* ip-10-\d+-1-\d+", out), out
    assert "failed:" not in out
    assert f"torn down: nothing tagged phoenixci:run-id={run_id.group(1)} is left" in out
    assert "Traceback" not in proc.stderr
