"""The reconciler drives the runtime towards moto's EC2 state, one instance's failure isolated."""
from __future__ import annotations

import time

import pytest

from phoenixci.localcloud.reconcile import Reconciler
from phoenixci.localcloud.snapshot import InstanceView, Snapshot
from phoenixci.util import wait_until

pytestmark = pytest.mark.unit


def view(iid: str, state: str, ip: str = "10.0.0.5") -> InstanceView:
    return InstanceView(iid, state, ip, "subnet-1", "10.0.0.0/24", "02:00:00:00:00:01", ("sg-1",))


class FakeRuntime:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.phases: dict[str, str] = {}
        self.fail: set[str] = set()

    def running(self, v: InstanceView) -> None:
        if v.instance_id in self.fail:
            raise RuntimeError(f"cannot boot {v.instance_id}")
        self.calls.append(("run", v.instance_id))
        self.phases[v.instance_id] = "ready"

    def stopped(self, iid: str) -> None:
        self.calls.append(("stop", iid))
        self.phases[iid] = "stopped"

    def gone(self, iid: str) -> None:
        self.calls.append(("destroy", iid))
        self.phases.pop(iid, None)

    def phase(self, iid: str) -> str:
        return self.phases.get(iid, "absent")


def make(snaps: list[Snapshot | Exception], rt: FakeRuntime) -> Reconciler:
    def read() -> Snapshot:
        item = snaps.pop(0) if len(snaps) > 1 else snaps[0]
        if isinstance(item, Exception):
            raise item
        return item
    return Reconciler(read=read, ensure_running=rt.running, ensure_stopped=rt.stopped, ensure_gone=rt.gone,
                      phase_of=rt.phase)


def snap(*views: InstanceView) -> Snapshot:
    return Snapshot({v.instance_id: v for v in views}, {}, {})


def test_states_map_to_runtime_actions() -> None:
    rt = FakeRuntime()
    rec = make([snap(view("i-a", "running"), view("i-b", "stopped"), view("i-c", "terminated"))], rt)
    rec.run_once()
    assert set(rt.calls) == {("run", "i-a"), ("stop", "i-b"), ("destroy", "i-c")}
    assert rec.status()["i-a"] == {"phase": "ready", "error": None}


def test_one_failing_instance_does_not_stall_the_others() -> None:
    rt = FakeRuntime()
    rt.fail.add("i-bad")
    rec = make([snap(view("i-bad", "running"), view("i-good", "running", "10.0.0.6"))], rt)
    rec.run_once()
    status = rec.status()
    assert status["i-bad"]["error"] == "start 1 of 3 failed: cannot boot i-bad (next in 1 s)"
    assert status["i-good"] == {"phase": "ready", "error": None}


def test_a_concurrent_change_of_moto_state_is_read_again() -> None:
    rt = FakeRuntime()
    rec = make([RuntimeError("dictionary changed size during iteration"), snap(view("i-a", "running"))], rt)
    rec.run_once()
    assert ("run", "i-a") in rt.calls


def test_an_instance_moto_forgot_is_destroyed() -> None:
    rt = FakeRuntime()
    rec = make([snap(view("i-a", "running")), snap()], rt)
    rec.run_once()
    rec.run_once()
    assert rt.calls[-1] == ("destroy", "i-a")


def test_the_loop_runs_and_stops() -> None:
    rt = FakeRuntime()
    rec = make([snap(view("i-a", "running"))], rt)
    rec.interval = 0.01
    rec.start()
    try:
        wait_until(lambda: rec.passes >= 3, timeout=5, interval=0.01, what="three reconcile passes")
    finally:
        rec.stop()
    passes = rec.passes
    assert rec._thread is not None and not rec._thread.is_alive()
    assert rec.passes == passes


def test_a_wake_runs_a_pass_at_once_and_stop_does_not_wait_for_the_interval() -> None:
    rt = FakeRuntime()
    rec = make([snap(view("i-a", "running"))], rt)
    rec.interval = 60.0  # no timed pass during this test
    rec.start()
    try:
        wait_until(lambda: rec.passes >= 1, timeout=5, interval=0.01, what="the first pass")
        for n in (2, 3):
            rec.wake()
            wait_until(lambda n=n: rec.passes >= n, timeout=5, interval=0.005, what=f"pass {n} after a wake")
    finally:
        t0 = time.monotonic()
        rec.stop()
    assert time.monotonic() - t0 < 5
    assert rec._thread is not None and not rec._thread.is_alive()
