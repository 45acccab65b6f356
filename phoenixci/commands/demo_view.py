"""`phoenixci demo`'s live view of one build: its stages with state and seconds, read from
Buildbot's REST API about twice a second.

On a terminal a rich ``Live`` table redraws in place; otherwise (CI logs, a pipe) each stage is
printed once, as one line, when it ends — no cursor control. Buildbot keeps whole seconds, so a
stage's start and end are bracketed by our own polls (sent before / answered after) and narrowed
to the server's second where the two agree: durations are good to a few tenths of a second.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from phoenixci.env import buildbot

STAGES = ("checkout", "test", "package", "publish", "deploy")
TRIGGER = "push → start"  # the post-receive hook, Buildbot's change hook, the worker's preparation
POLL_SECONDS = 0.5
STYLE = {"success": "green", "failure": "bold red", "exception": "bold red", "running": "yellow",
         "pending": "dim", "not run": "dim", "skipped": "dim", "cancelled": "red"}


def _moment(local: tuple[float, float], server: float | None) -> float:
    """The middle of the local bracket, narrowed to the server's whole second if they overlap."""
    low, high = local
    if server is not None and max(low, server) <= min(high, server + 1):
        low, high = max(low, server), min(high, server + 1)
    return (low + high) / 2


def _elapsed(ci_url: str, build_id: int, step: str) -> float | None:
    """The seconds the step's commands ran, from the elapsedTime lines of its log."""
    try:
        log = buildbot.step_log(ci_url, build_id, step)
    except buildbot.BuildbotError:
        return None
    times = re.findall(r"^elapsedTime=([0-9.]+)$", log, re.M)
    return sum(float(t) for t in times) if times else None


@dataclass
class Stage:
    name: str
    state: str = "pending"
    started: tuple[float, float] | None = None  # when it started lies in this bracket (epoch seconds)
    ended: tuple[float, float] | None = None
    server_started: float | None = None
    server_ended: float | None = None
    measured: float | None = None  # the worker's own elapsedTime, when one poll saw it start and end

    def seconds(self, now: float) -> float | None:
        if self.started is None:
            return None
        if self.measured is not None:
            return self.measured
        begin = _moment(self.started, self.server_started)
        end = _moment(self.ended, self.server_ended) if self.ended else now
        return max(0.0, end - begin)


class BuildWatch:
    """The build of one pushed revision, as seen so far."""

    def __init__(self, ci_url: str, revision: str, pushed_at: float) -> None:
        self.ci_url, self.revision, self.pushed_at = ci_url, revision, pushed_at
        self.trigger = Stage(TRIGGER, "running", started=(pushed_at, pushed_at))
        self.stages = {name: Stage(name) for name in STAGES}
        self.build: buildbot.Build | None = None
        self.done_at: float | None = None
        self._last_sent = pushed_at

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def rows(self) -> list[Stage]:
        return [self.trigger, *self.stages.values()]

    def poll(self) -> None:
        sent = time.time()
        build = buildbot.build_of(self.ci_url, self.revision)
        if build is not None:
            build.steps = buildbot.steps(self.ci_url, build.build_id)
        seen = (self._last_sent, time.time())  # what changed since the last poll happened in here
        self._last_sent = sent
        if build is None:
            return
        self.build = build
        for step in build.steps:
            if step.name == "worker_preparation":
                continue
            stage = self.stages.setdefault(step.name, Stage(step.name))
            if stage.started is None and step.started_at is not None:
                stage.started, stage.server_started = seen, step.started_at
                if self.trigger.ended is None:
                    self.trigger.ended, self.trigger.server_ended = seen, step.started_at
                    self.trigger.state = "success"
            if stage.ended is None and step.complete_at is not None:
                stage.ended, stage.server_ended = seen, step.complete_at
                if stage.started == seen:  # too short for the polls: ask the worker's log
                    stage.measured = _elapsed(self.ci_url, build.build_id, step.name)
            stage.state = step.result if step.complete_at is not None else "running"
        if build.complete:
            self.done_at = seen[1]
            for stage in self.rows():
                if stage.state in ("pending", "running") and stage.ended is None:
                    stage.state = "not run"

    def table(self, title: str) -> Table:
        now = time.time()
        table = Table(title=title, title_justify="left")
        for col, justify in (("stage", "left"), ("state", "left"), ("seconds", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for stage in self.rows():
            secs = stage.seconds(now)
            style = STYLE.get(stage.state, "")
            table.add_row(stage.name, f"[{style}]{stage.state}[/]" if style else stage.state,
                          "" if secs is None else f"{secs:.1f}")
        table.caption = self.caption()
        return table

    def caption(self) -> str:
        build, now = self.build, time.time()
        return (f"build #{build.number}: {build.result if self.done else 'running'}" if build
                else "waiting for Buildbot to start the build") + \
            f" · {(self.done_at or now) - self.pushed_at:.1f} s since the push"


def watch(console: Console, ci_url: str, revision: str, *, title: str, pushed_at: float,
          timeout: float = 600.0) -> BuildWatch:
    """Follow the build of ``revision`` until it finishes; raise BuildbotError after ``timeout``."""
    build = BuildWatch(ci_url, revision, pushed_at)
    deadline = time.monotonic() + timeout

    def step() -> None:
        if time.monotonic() > deadline:
            seen = f"last seen: build #{build.build.number} {build.build.state}" if build.build else "no build seen"
            raise buildbot.BuildbotError(f"the build of {revision[:12]} did not finish within {timeout:g}s "
                                         f"({seen}); see {ci_url}")
        build.poll()

    if console.is_terminal:  # the last frame stays on screen: the build's table
        with Live(build.table(title), console=console, refresh_per_second=4) as live:
            while not build.done:
                step()
                live.update(build.table(title))
                if not build.done:
                    time.sleep(POLL_SECONDS)
        return build
    printed: set[str] = set()
    while not build.done:
        step()
        for stage in build.rows():
            if stage.name not in printed and (stage.ended or stage.state == "not run"):
                secs = stage.seconds(time.time())
                console.print(f"  {stage.name:<12} {stage.state:<9} "
                              f"{'' if secs is None else f'{secs:5.1f} s'}", highlight=False)
                printed.add(stage.name)
        if not build.done:
            time.sleep(POLL_SECONDS)
    console.print(f"  {build.caption()}", highlight=False)
    return build
