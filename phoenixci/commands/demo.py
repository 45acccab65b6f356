"""`phoenixci demo`, the main job: the whole pipeline on one backend, shown step by step, then
torn down with proof that nothing is left (unless --keep).

After `up`, a developer pushes three commits one after another: a good one (released on a new
server), one whose unit test fails (stops at test, nothing published) and one whose app never
serves (fails at deploy as soon as its server reports the app keeps exiting, at the latest
after the demo's short health timeout). Each build is followed live
(demo_view), then what serves at the app address, and on which instance, is shown. Exit 0 only
if each commit did what it should.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from phoenixci import stacks
from phoenixci.backends import get_backend, parse_url
from phoenixci.commands import demo_view
from phoenixci.env import lifecycle
from phoenixci.env.state import EnvState
from phoenixci.errors import PhoenixError

console = Console(stderr=False, width=max(120, Console().width), soft_wrap=True)
HEADLINE = "Hello from the phoenixci demo"
#: seconds each release of the demo gets to serve: a good one serves in ~3 s (30 leaves room for a loaded
#: machine), the unhealthy one fails after it
DEMO_HEALTH_TIMEOUT = 30.0
AWS_DEMO_HEALTH_TIMEOUT = 300.0
Git = Callable[..., str]


def _say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)


def cmd_demo(args: argparse.Namespace) -> int:
    from phoenixci import costs

    estimate = costs.require_acknowledgement(args.backend, args.accept_aws_cost, command="demo")
    if estimate:  # aws://: the cost shown, then the account and the region's image checked, before anything exists
        print(estimate, flush=True)
        print(costs.preflight(args.backend), flush=True)
    if parse_url(args.backend)[0] == "localstack":  # no instances there: the infrastructure alone
        from phoenixci.commands.cloud import cmd_demo_infrastructure

        return cmd_demo_infrastructure(args)
    env_dir = Path(tempfile.mkdtemp(prefix="phoenixci-demo-"))
    # an EC2 instance needs a minute or two to boot and serve: there the demo waits longer
    health = DEMO_HEALTH_TIMEOUT if parse_url(args.backend)[0] == "moto" else AWS_DEMO_HEALTH_TIMEOUT
    failures = ["the demo did not finish"]
    state: EnvState | None = None
    try:
        _say(f"the unhealthy release gets {health:g} s to serve (--health-timeout; every release of the demo "
             "gets the same, a good one serves in a few seconds; the deploy stops sooner when the new server's "
             "console says its app keeps exiting)")
        state = lifecycle.up(args.backend, env_dir, admin_cidr=args.admin_cidr, say=_say,
                             keep_on_failure=args.keep != "never", run_id=args.run_id, health_timeout=health)
        _say(f"backend [bold]{args.backend}[/], run id [bold]{state.run_id}[/], environment {env_dir}")
        _show_environment(state)
        outcomes = _three_commits(state, env_dir, health)
        _summary(outcomes, state)
        failures = [f"commit {n} ({o.change.title}): expected {o.change.expected}; got {o.actual}, "
                    f"serving {o.serving}"
                    for n, o in enumerate(outcomes, 1) if not o.ok]
    finally:
        if args.keep == "always" or (args.keep == "on-failure" and failures):
            if EnvState.load(env_dir) is not None:
                _how_to_reach(env_dir, args.keep)
        else:
            _tear_down(env_dir, state)
    if failures:
        console.print(f"[bold red]the demo FAILED: {'; '.join(failures)}[/]", highlight=False)
        return 1
    console.print("[bold green]the demo succeeded: each commit did what it should[/]")
    return 0


def _tear_down(env_dir: Path, state: EnvState | None) -> None:
    if EnvState.load(env_dir) is not None:
        _say("tearing down ...")
        lifecycle.down(env_dir, say=_say)  # LeakError if anything tagged with the run id is left
        run_id = state.run_id if state else "?"
        console.print(f"[green]torn down: nothing tagged {stacks.RUN_ID_TAG}={run_id} is left[/]")
        if state is not None and state.cloud_dir:
            from phoenixci.localcloud import daemon

            if daemon.running_pid(Path(state.cloud_dir)) is not None:
                raise PhoenixError(f"the local cloud daemon of {state.cloud_dir} still runs after down")
            console.print("[green]the local cloud daemon has stopped: no instance, bridge or namespace of "
                          "the run is left[/]")
    shutil.rmtree(env_dir, ignore_errors=True)


def _how_to_reach(env_dir: Path, keep: str) -> None:
    state = EnvState.load(env_dir)
    assert state is not None
    exe = Path(sys.executable).parent / "phoenixci"
    cli = f"{sys.executable} -m phoenixci" if not exe.exists() else \
        str(exe.relative_to(Path.cwd())) if exe.is_relative_to(Path.cwd()) else str(exe)
    env = f"PHOENIXCI_ENV_DIR={env_dir}"
    lines = [f"[yellow]kept the environment (--keep {keep}) in {env_dir}, phase {state.phase}:[/]",
             f"  app        {state.app_url}",
             f"  Buildbot   {state.ci_url}  (admin login: admin / {state.secret('admin_password') or '?'})",
             f"  status     {env} {cli} status"]
    lines += [f"  ssh        ssh -F {state.ssh_config} {name}" for name in state.hosts]
    lines += [f"[yellow]  remove it  {env} {cli} down[/]"]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def _show_environment(state: EnvState) -> None:
    from phoenixci.commands.cloud import _outputs_table, _resources_table

    with get_backend(state.backend) as backend:
        infra = stacks.describe(backend.client("cloudformation"), state.infra_stack)
    if infra is not None:
        console.print(_resources_table(infra))
        console.print(_outputs_table(infra))
    table = Table(title="the CI hosts, configured by Ansible (ssh with host keys pinned from their consoles)")
    for col in ("role", "instance", "private ip", "ssh … hostname", "units"):
        table.add_column(col, overflow="fold")
    for name, host in state.hosts.items():
        unit = "buildbot-master" if name == "ci-server" else "buildbot-worker"
        out = subprocess.run(["ssh", "-F", str(state.ssh_config), name, f"hostname; systemctl is-active {unit}"],
                             capture_output=True, text=True, timeout=30)
        lines = out.stdout.split() if out.returncode == 0 else ["failed:", out.stderr.strip()]
        table.add_row(name.replace("ci-", "CI "), host.instance_id, host.private_ip, lines[0],
                      f"{unit} {' '.join(lines[1:])}")
    console.print(table)
    console.print(f"app {state.app_url} · Buildbot {state.ci_url} · git remote {state.git_remote}", highlight=False)


@dataclass(frozen=True)
class Change:
    """A commit the developer pushes, and what the pipeline must make of it."""

    title: str
    expected: str
    edit: Callable[[Path, Git], None]  # changes the clone
    fails_at: str | None = None        # the stage that must fail (None: released)


@dataclass
class Outcome:
    change: Change
    revision: str
    watch: demo_view.BuildWatch
    actual: str
    serving: str  # what the app address serves afterwards, and where
    ok: bool


def _new_page(clone: Path, git: Git) -> None:
    page = clone / "phoenixapp/templates/index.html"
    page.write_text(re.sub(r"Welcome to [^<]*", HEADLINE, page.read_text(), count=1))


def _failing_test(clone: Path, git: Git) -> None:  # the app's tests expect "Hello"
    greeting = clone / "phoenixapp/greeting.py"
    greeting.write_text(greeting.read_text().replace('"Hello', '"Howdy'))


NEVER_HEALTHY = '"""Entry point: this release never serves (it exits at once)."""\nimport sys\n\n' \
    'sys.exit("this release refuses to serve")\n'


def _never_healthy(clone: Path, git: Git) -> None:
    git("revert", "--no-commit", "HEAD")  # the greeting fixed, so its tests pass again
    (clone / "phoenixapp/__main__.py").write_text(NEVER_HEALTHY)


def _changes(health: float) -> list[Change]:
    return [
        Change("a new page", "released, serves on a new server", _new_page),
        Change("Hello → Howdy, a unit test fails", "fails at test, nothing published, the old version serves",
               _failing_test, "test"),
        Change("Howdy → Hello, but the app exits at start", f"fails at deploy (its server reports the app keeps "
               f"exiting, or it is not healthy in {health:g} s), the old version serves on the same server", _never_healthy, "deploy"),
    ]


def _three_commits(state: EnvState, env_dir: Path, health: float) -> list[Outcome]:
    """What a developer does: clone, change, push, one commit after another."""
    ssh = {**os.environ, "GIT_SSH_COMMAND": f"ssh -F {state.ssh_config}", "GIT_AUTHOR_NAME": "demo",
           "GIT_AUTHOR_EMAIL": "demo@example.invalid", "GIT_COMMITTER_NAME": "demo",
           "GIT_COMMITTER_EMAIL": "demo@example.invalid"}
    clone = env_dir / "clone"

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=clone if clone.exists() else env_dir, env=ssh,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PhoenixError(f"git {args[0]} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    git("clone", "-q", state.git_remote, str(clone))
    names = {git("rev-parse", "HEAD"): "the app's first commit"}
    changes = _changes(health)
    with get_backend(state.backend) as backend:
        infra = stacks.describe(backend.client("cloudformation"), state.infra_stack)
        bucket = infra.output("ArtifactBucket") if infra else ""
        return [_push(state, backend, bucket, git, clone, change, f"{n}/{len(changes)}", names)
                for n, change in enumerate(changes, 1)]


def _push(state: EnvState, backend: Any, bucket: str, git: Git, clone: Path, change: Change, n: str,
          names: dict[str, str]) -> Outcome:
    live_before, server_before = _serving(state, backend)
    change.edit(clone, git)
    git("commit", "-q", "-am", change.title)
    revision = git("rev-parse", "HEAD")
    names[revision] = f"commit {n.split('/')[0]}"
    console.rule(f"commit {n}: {change.title}")
    _say(f"a developer pushes {revision[:12]} ({change.title}); expected: {change.expected}")
    pushed_at = time.time()
    git("push", "-q", "origin", "main")
    title = f"commit {n} {revision[:12]} {change.title}"
    watch = demo_view.watch(console, state.ci_url, revision, title=title, pushed_at=pushed_at)
    build = watch.build
    assert build is not None
    if build.result == "success":
        try:
            lifecycle.site.wait_serving(state, revision, timeout=30)
        except PhoenixError as e:
            _say(f"[red]{e}[/]")
    live, server = _serving(state, backend)
    found = backend.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"app/{revision}/") if bucket else {}
    published = int(found.get("KeyCount", 0)) > 0
    same = server == server_before
    where = f"{live[:12] or 'nothing'} ({names.get(live, '?')}) on {server}, {'the same' if same else 'a new'} server"
    if build.result == "success":
        actual = "released, every stage passed"
        ok = change.fails_at is None and live == revision and not same and _shows(state, HEADLINE)
    else:
        failed_at = next((s.name for s in watch.stages.values() if s.state in ("failure", "exception")),
                         build.state)
        actual = f"failed at {failed_at}, {'published' if published else 'nothing published'}"
        ok = (failed_at == change.fails_at and live == live_before and same
              and published == (demo_view.STAGES.index(failed_at) > demo_view.STAGES.index("publish")))
    _say(f"{'[green]as expected[/]' if ok else '[bold red]NOT as expected[/]'}: {actual}; "
         f"{state.app_url} serves {where}")
    return Outcome(change, revision, watch, actual, where, ok)


def _summary(outcomes: list[Outcome], state: EnvState) -> None:
    table = Table(title="what each commit did", title_justify="left",
                  caption=f"app {state.app_url} · Buildbot {state.ci_url}")
    for col in ("#", "commit", "expected", "actual", "the app serves afterwards", "push → done", "verdict"):
        table.add_column(col, overflow="fold")
    for n, o in enumerate(outcomes, 1):
        seconds = (o.watch.done_at or time.time()) - o.watch.pushed_at
        table.add_row(str(n), f"{o.revision[:12]} {o.change.title}", o.change.expected, o.actual, o.serving,
                      f"{seconds:.1f} s", "[green]as expected[/]" if o.ok else "[bold red]NOT as expected[/]")
    console.print(table)


def _shows(state: EnvState, text: str) -> bool:
    with urllib.request.urlopen(state.app_url, timeout=5) as resp:  # noqa: S310 - the run's own address
        return text in resp.read().decode()


def _serving(state: EnvState, backend: Any) -> tuple[str, str]:
    """The revision the app address serves, and the instance its Elastic IP points to."""
    from phoenixci import chain

    return chain.serving_revision(state) or "", chain.app_holder(backend, state) or "nothing"
