"""The main job (`make demo` runs `phoenixci demo`): the whole pipeline on the local cloud, a
developer's change released on a new server, then everything torn down and checked."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.acceptance


def test_demo_runs_the_whole_pipeline_and_tears_it_down(request: pytest.FixtureRequest) -> None:
    if not str(request.config.getoption("--backend")).startswith("moto://"):
        pytest.skip("`make demo` is the local cloud's main job; on other backends the pipeline tests run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(COLUMNS="200", AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, "-m", "phoenixci", "demo"], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = proc.stdout
    run_id = re.search(r"run id (phx-[0-9a-f]{8})", out)
    assert run_id, out
    for resource in ("AWS::EC2::VPC", "AWS::S3::Bucket", "AWS::S3::BucketPolicy", "AWS::IAM::Role",
                     "AWS::EC2::Instance", "AWS::EC2::EIP", "CREATE_COMPLETE"):
        assert resource in out
    for output in ("ArtifactBucket", "AppEipAllocationId", "CiServerPublicIp", "AgentRoleArn"):
        assert output in out
    # the CI server and agent really run, configured by Ansible, and answer over SSH
    assert re.search(r"CI server .* ip-10-\d+-1-\d+ .*buildbot-master active", out), out
    assert re.search(r"CI agent .* ip-10-\d+-1-\d+ .*buildbot-worker active", out), out
    for step in ("checkout", "test", "package", "publish", "deploy"):
        assert re.search(rf"{step}\s.*success", out), step
    served = re.search(r"on (i-[0-9a-f]+) \(was (i-[0-9a-f]+)\); the new page is live", out)
    assert served and served.group(1) != served.group(2), out
    assert f"torn down: nothing tagged phoenixci:run-id={run_id.group(1)} is left" in out
    assert "Traceback" not in proc.stderr and "failed:" not in out
