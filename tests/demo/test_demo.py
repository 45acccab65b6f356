"""The main job (`make demo` runs `phoenixci demo`): the whole pipeline on the local cloud, three
commits (released; stopped at test; never healthy, stopped at deploy) each shown stage by stage,
then everything torn down and checked. `KEEP=1 make demo` (--keep always) leaves the environment
up and prints how to remove it. Each run takes ~2 minutes."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phoenixci.localcloud.runtime import Runtime

pytestmark = pytest.mark.demo

STAGES = ("checkout", "test", "package", "publish", "deploy")


@pytest.fixture(autouse=True)
def _local_cloud_only(request: pytest.FixtureRequest) -> None:
    if not str(request.config.getoption("--backend")).startswith("moto://"):
        pytest.skip("`make demo` is the local cloud's main job; on other backends the pipeline tests run")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(COLUMNS="200", AWS_EC2_METADATA_DISABLED="true")
    return env


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    """`phoenixci demo` with its output piped, as in a CI log."""
    return subprocess.run([sys.executable, "-m", "phoenixci", "demo", *args], capture_output=True, text=True,
                          env=_env(), timeout=900)


def _check_the_story(proc: subprocess.CompletedProcess[str]) -> str:
    """The three commits did what they should, and the output says so; returns the run id."""
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr
    assert "\x1b[" not in out, "cursor control or colour in piped output"
    assert "the unhealthy release gets 30 s to serve (--health-timeout" in out
    run_id = re.search(r"run id (phx-[0-9a-f]{8})", out)
    assert run_id, out
    for resource in ("AWS::EC2::VPC", "AWS::S3::Bucket", "AWS::IAM::Role", "AWS::EC2::Instance", "AWS::EC2::EIP"):
        assert resource in out
    assert re.search(r"CI server .* ip-10-\d+-1-\d+ .*buildbot-master active", out), out
    assert re.search(r"CI agent .* ip-10-\d+-1-\d+ .*buildbot-worker active", out), out
    assert re.search(r"app http://127\.[\d.]+:8080/ · Buildbot http://127\.[\d.]+:8010/", out), out

    commits = re.split(r"─+ commit \d/3: ", out)[1:]
    assert len(commits) == 3, out
    # each stage is printed once, with its seconds, when it ends (no redraws in a log)
    line = re.compile(rf"^  ({'|'.join(STAGES)}|push → start) +(success|failure|not run)\b", re.M)
    good, red, unhealthy = ([m.groups() for m in line.finditer(c)] for c in commits)
    names = ["push → start", *STAGES]
    assert good == [(s, "success") for s in names], commits[0]
    assert red == list(zip(names, ["success"] * 2 + ["failure"] + ["not run"] * 3, strict=True)), commits[1]
    assert unhealthy == list(zip(names, ["success"] * 5 + ["failure"], strict=True)), commits[2]
    for commit in commits:
        assert len(re.findall(r"^  checkout +success +\d+\.\d s$", commit, re.M)) == 1, commit

    first = re.search(r"as expected: released, every stage passed; \S+ serves (\w{12}) \(commit 1\) on "
                      r"(i-[0-9a-f]+), a new server", commits[0])
    assert first, commits[0]
    revision, server = first.groups()
    # the old version still serves, on the same server, after each failed commit
    same = re.escape(f"serves {revision} (commit 1) on {server}, the same server")
    assert re.search(rf"as expected: failed at test, nothing published; \S+ {same}", commits[1]), commits[1]
    assert re.search(rf"as expected: failed at deploy, published; \S+ {same}", commits[2]), commits[2]
    summary = out[out.index("what each commit did"):]
    assert summary.count("as expected") == 3 and "NOT as expected" not in summary, summary
    assert len(re.findall(r"\d+\.\d s", summary)) == 3, summary  # push → done, per commit
    assert "the demo succeeded: each commit did what it should" in out
    return run_id.group(1)


def _nothing_left(env_dir: Path) -> None:
    """No daemon, namespace, link or firewall table of the environment's local cloud."""
    tag = Runtime(env_dir / "cloud").tag
    procs = subprocess.run(["pgrep", "-af", str(env_dir)], capture_output=True, text=True).stdout
    assert procs.strip() == "", procs
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [n for n in netns.split("\n") if n.startswith(f"{tag}-")], netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert not re.search(rf"^\d+: {tag}", links, re.M), links
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert f"phoenixci_{tag}" not in tables


def test_demo_pushes_three_commits_and_tears_everything_down() -> None:
    """`make demo`: the good, the red and the unhealthy commit, then nothing left."""
    proc = _demo()
    run_id = _check_the_story(proc)
    out = proc.stdout
    assert f"torn down: nothing tagged phoenixci:run-id={run_id} is left" in out
    assert "the local cloud daemon has stopped" in out
    env_dir = Path(re.search(r"environment (/\S+)", out).group(1))  # type: ignore[union-attr]
    assert not env_dir.exists()
    _nothing_left(env_dir)
    assert "Traceback" not in proc.stderr


def test_keep_leaves_the_environment_up_and_says_how_to_remove_it() -> None:
    """`KEEP=1 make demo`: the same story, the environment left up, its removal command works."""
    proc = _demo("--keep", "always")
    env_dir = re.search(r"kept the environment \(--keep always\) in (/\S+),", proc.stdout)
    try:
        _check_the_story(proc)
        out = proc.stdout
        assert env_dir, out[-3000:]
        assert "torn down" not in out
        for line in ("  app        http://", "  Buildbot   http://", "admin login: admin / ",
                     f"  status     PHOENIXCI_ENV_DIR={env_dir.group(1)} ",
                     f"  ssh        ssh -F {env_dir.group(1)}/ssh/config ci-server"):
            assert line in out, line
        status = subprocess.run([sys.executable, "-m", "phoenixci", "status", "--json"], capture_output=True,
                                text=True, env={**_env(), "PHOENIXCI_ENV_DIR": env_dir.group(1)}, timeout=60)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["phase"] == "up" and info["live_revision"], info
        assert re.search(rf"serves {info['live_revision'][:12]} \(commit 1\)", out)
    finally:
        if env_dir:
            removal = re.search(r"remove it +(PHOENIXCI_ENV_DIR=\S+ \S+ down)$", proc.stdout, re.M)
            assert removal, proc.stdout[-2000:]
            down = subprocess.run(removal.group(1), shell=True, capture_output=True, text=True,  # noqa: S602
                                  env=_env(), timeout=300, cwd=Path.cwd())
            assert down.returncode == 0, down.stdout + down.stderr
            assert "nothing of the environment is left" in down.stdout
            _nothing_left(Path(env_dir.group(1)))
            shutil.rmtree(env_dir.group(1), ignore_errors=True)  # down keeps the run directory (logs)
