"""Failed starts: the retry policy, the reason, EC2's terminated state with Server.InternalError,
and the reconciler retrying a bounded number of times without stalling the other instances."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from phoenixci.localcloud import launches
from phoenixci.localcloud.launches import Launches, StartPolicy, compose, describe_exit
from phoenixci.localcloud.reconcile import Reconciler
from phoenixci.localcloud.snapshot import InstanceView, Snapshot

pytestmark = pytest.mark.unit


def test_policy_backs_off_then_gives_up() -> None:
    policy = StartPolicy(attempts=3, delay=1.0, factor=2.0)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, None, None]
    assert StartPolicy(attempts=10, delay=1.0, factor=10.0, cap=30.0).delay_after(5) == 30.0
    assert StartPolicy(attempts=1).delay_after(1) is None


def test_exit_descriptions() -> None:
    assert describe_exit(255).endswith("(systemd's exit on a fatal error at start)")
    assert describe_exit(-signal.SIGKILL) == "the container was killed by SIGKILL"
    assert describe_exit(1) == "the container exited with status 1"
    assert describe_exit(None) == "the container ended (exit status unknown)"


def test_reason_carries_the_last_console_lines_and_the_hint() -> None:
    console = "\n".join(f"line {n}" for n in range(10)) + "\n\n"
    reason = compose("the container exited with status 255", console, "raise it")
    assert reason == ("the container exited with status 255 before the instance was ready; "
                      "console: line 5 | line 6 | line 7 | line 8 | line 9; raise it")
    assert "console empty" in compose("x", "", None)


# moto's mock_aws resets moto's process-wide backends when it starts and stops: in this process it
# would wipe the session's embedded cloud (the local cloud a whole-suite run serves from here), so
# the EC2 side runs in a child process on plain moto with only launches.mark_failed applied.
_MARK_FAILED = """
import json, os
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
import boto3
from moto import mock_aws
from moto.ec2.models import ec2_backends
from phoenixci.localcloud.launches import mark_failed
with mock_aws():
    client = boto3.client("ec2")
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = client.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    backend = ec2_backends["123456789012"]["us-east-1"]
    mark_failed(backend, iid, "the container exited with status 255 before the instance was ready")
    mark_failed(backend, iid, "again")  # already terminated: nothing changes
    inst = client.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    print(json.dumps({k: inst.get(k) for k in ("State", "StateReason", "StateTransitionReason")}))
"""


def test_a_failed_instance_is_terminated_with_ec2s_launch_failure_reason() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([sys.executable, "-c", _MARK_FAILED], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    inst = json.loads(proc.stdout.strip().splitlines()[-1])
    assert inst["State"]["Name"] == "terminated"
    assert inst["StateReason"] == {"Code": "Server.InternalError", "Message": (
        "Server.InternalError: Internal error on launch (the container exited with status 255 "
        "before the instance was ready)")}
    assert inst["StateTransitionReason"] == inst["StateReason"]["Message"]


class FakeRuntime:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.started: list[str] = []
        self.killed: list[int] = []
        self._procs = {"i-a": SimpleNamespace(poll=lambda: 255)}

    def start(self, spec: SimpleNamespace, image: object, layers: list[Path] | None = None) -> None:
        (self.state_dir / "instances" / spec.instance_id).mkdir(parents=True, exist_ok=True)
        self.started.append(spec.instance_id)

    def init_pid(self, instance_id: str) -> int:
        return 4242


def test_launches_reason_fail_and_kept_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FakeRuntime(tmp_path)
    idir = tmp_path / "instances" / "i-a"
    idir.mkdir(parents=True)
    (idir / "console.log").write_text("Welcome\nFailed to allocate manager object: Too many open files\n")
    marked: list[tuple[str, str]] = []
    monkeypatch.setattr(launches, "mark_failed", lambda ec2, iid, reason: marked.append((iid, reason)))
    sysctl = tmp_path / "sys"
    (sysctl / "fs/inotify").mkdir(parents=True)
    (sysctl / "fs/inotify/max_user_instances").write_text("1000000\n")
    lc = Launches(runtime, lambda: "backend", sysctl_root=sysctl)
    reason = lc.exit_reason("i-a")
    assert reason.startswith("the container exited with status 255 (systemd's exit")
    assert reason.endswith("console: Welcome | Failed to allocate manager object: Too many open files")
    lc.fail("i-a", reason)
    assert marked == [("i-a", reason)]
    for _ in range(2):  # live, then kept after the container's directory is gone
        text = lc.console("i-a") or ""
        assert text.startswith("Welcome\n") and text.endswith(f"phoenixci: instance failed to start: {reason}\n")
        shutil.rmtree(idir, ignore_errors=True)
    assert lc.console("i-unknown") is None


def test_the_test_hook_kills_matching_instances_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FakeRuntime(tmp_path)
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(launches.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv(launches.TEST_HOOK, r" 10\.1\.2\.5$")
    lc = Launches(runtime, lambda: None)
    lc.start(SimpleNamespace(instance_id="i-a", private_ip="10.1.2.4"), None, layers=[])
    lc.start(SimpleNamespace(instance_id="i-b", private_ip="10.1.2.5"), None)
    assert runtime.started == ["i-a", "i-b"] and kills == [(4242, signal.SIGKILL)]
    assert "test hook" in (tmp_path / "instances/i-b/console.log").read_text()


# -- the reconciler's side --------------------------------------------------------------------

def view(iid: str, state: str = "running", ip: str = "10.0.0.5") -> InstanceView:
    return InstanceView(iid, state, ip, "subnet-1", "10.0.0.0/24", "02:00:00:00:00:01", ("sg-1",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """moto's state and a runtime whose instance ``bad`` exits at start every time."""

    def __init__(self, bad: str = "i-bad") -> None:
        self.states = {"i-bad": "running", "i-good": "running"}
        self.phases: dict[str, str] = {}
        self.starts: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.bad = bad

    def read(self) -> Snapshot:
        views = [view(i, s, f"10.0.0.{n + 5}") for n, (i, s) in enumerate(sorted(self.states.items()))]
        return Snapshot({v.instance_id: v for v in views}, {}, {})

    def running(self, v: InstanceView) -> None:
        if self.phases.get(v.instance_id) in {None, "absent", "stopped"}:
            self.starts[v.instance_id] = self.starts.get(v.instance_id, 0) + 1
            self.phases[v.instance_id] = "booting"

    def exit_bad(self) -> None:
        if self.phases.get(self.bad) == "booting":
            self.phases[self.bad] = "stopped"  # systemd exited at start

    def gone(self, iid: str) -> None:
        self.phases.pop(iid, None)

    def fail(self, iid: str, reason: str) -> None:
        self.failed[iid] = reason
        self.states[iid] = "terminated"

    def reconciler(self) -> Reconciler:
        return Reconciler(read=self.read, ensure_running=self.running, ensure_stopped=lambda i: None,
                          ensure_gone=self.gone,
                          phase_of=lambda i: self.phases.get(i, "absent"),
                          exit_reason=lambda i: f"{i} exited with status 255", fail=self.fail,
                          policy=StartPolicy(attempts=3, delay=1.0, factor=2.0))


def on_a_clock(monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, World, Reconciler]:
    """A world and its reconciler whose time is a Clock the test moves."""
    clock = Clock()
    monkeypatch.setattr("phoenixci.localcloud.reconcile.time.monotonic", clock)
    world = World()
    return clock, world, world.reconciler()


def test_a_start_that_exits_is_retried_with_backoff_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, world, rec = on_a_clock(monkeypatch)
    timeline = []
    for _ in range(40):  # 10 s of passes, 0.25 s apart
        rec.run_once()
        world.exit_bad()
        world.phases["i-good"] = "ready"
        timeline.append((clock.now, world.starts.get("i-bad", 0)))
        clock.now += 0.25
    assert world.starts == {"i-bad": 3, "i-good": 1}
    first = {n: t for t, n in reversed(timeline)}
    assert first[2] - first[1] >= 1.0 and first[3] - first[2] >= 2.0  # 1 s, then 2 s
    assert world.failed == {"i-bad": "failed to start 3 times, last: i-bad exited with status 255"}
    status = rec.status()
    assert status["i-bad"]["error"] == world.failed["i-bad"]   # kept after its container is gone
    assert status["i-good"] == {"phase": "ready", "error": None}


def test_while_retrying_the_error_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, world, rec = on_a_clock(monkeypatch)
    rec.run_once()
    world.exit_bad()
    rec.run_once()
    assert rec.status()["i-bad"]["error"] == "start 1 of 3 failed: i-bad exited with status 255 (next in 1 s)"


def test_a_start_that_raises_counts_too_and_a_failing_api_is_told_again() -> None:
    world = World()
    rec = world.reconciler()
    rec.policy = StartPolicy(attempts=2, delay=0.0)
    calls = []

    def refuse(v: InstanceView) -> None:
        if v.instance_id == "i-bad":
            raise RuntimeError("netns exploded")
        world.running(v)
    rec.ensure_running = refuse

    def flaky_fail(iid: str, reason: str) -> None:
        calls.append(iid)
        if len(calls) == 1:
            raise RuntimeError("moto busy")
        world.fail(iid, reason)
    rec.fail = flaky_fail
    for _ in range(4):
        rec.run_once()
    assert calls == ["i-bad", "i-bad"] and world.states["i-bad"] == "terminated"
    assert rec.status()["i-bad"]["error"] == "failed to start 2 times, last: netns exploded"
    assert world.starts == {"i-good": 1}


def test_a_ready_instance_forgets_its_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, world, rec = on_a_clock(monkeypatch)
    rec.run_once()
    world.exit_bad()
    rec.run_once()
    clock.now += 5
    rec.run_once()  # second start …
    world.phases["i-bad"] = "ready"  # … boots
    rec.run_once()
    record = rec.records["i-bad"]
    assert (record.failures, record.retry_at, rec.status()["i-bad"]["error"]) == (0, None, None)


def test_a_failing_network_step_does_not_stop_the_pass() -> None:
    world = World()
    rec = world.reconciler()
    rec.apply_network = lambda snap: (_ for _ in ()).throw(RuntimeError("namespace vanished"))
    rec.run_once()
    rec.run_once()
    assert rec.passes == 2 and world.starts == {"i-bad": 1, "i-good": 1}


def test_status_json_is_plain() -> None:
    rec = World().reconciler()
    rec.run_once()
    json.dumps(rec.status())


def test_an_exit_seen_in_the_pass_that_started_it_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd may be gone before the pass reads the phase: the next pass must still count it."""
    clock, world, rec = on_a_clock(monkeypatch)

    def dies_at_once(v: InstanceView) -> None:
        world.running(v)
        if v.instance_id == "i-bad":
            world.phases["i-bad"] = "stopped"
    rec.ensure_running = dies_at_once
    for _ in range(40):
        rec.run_once()
        clock.now += 0.25
    assert world.starts["i-bad"] == 3 and world.states["i-bad"] == "terminated"


def test_a_stop_while_booting_is_no_failed_start() -> None:
    world = World()
    rec = world.reconciler()
    rec.run_once()
    world.states["i-bad"] = "stopped"
    world.phases["i-bad"] = "stopped"
    rec.run_once()
    world.states["i-bad"] = "running"
    rec.run_once()
    assert rec.records["i-bad"].failures == 0 and world.starts["i-bad"] == 2
