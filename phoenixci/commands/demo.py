"""`phoenixci demo`, the main job: the whole pipeline on one backend, shown step by step, then
torn down with proof that nothing is left (unless --keep)."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from phoenixci import stacks
from phoenixci.backends import get_backend, parse_url
from phoenixci.env import buildbot, lifecycle
from phoenixci.env.state import EnvState
from phoenixci.errors import PhoenixError

console = Console(stderr=False, width=max(120, Console().width), soft_wrap=True)
HEADLINE = "Hello from the phoenixci demo"


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
    failed = True
    state: EnvState | None = None
    try:
        state = lifecycle.up(args.backend, env_dir, admin_cidr=args.admin_cidr, say=_say,
                             keep_on_failure=args.keep != "never", run_id=args.run_id)
        _say(f"backend [bold]{args.backend}[/], run id [bold]{state.run_id}[/], environment {env_dir}")
        _show_environment(state)
        _developer_pushes_a_change(state, env_dir)
        failed = False
    finally:
        keep = args.keep == "always" or (args.keep == "on-failure" and failed)
        if keep and EnvState.load(env_dir) is not None:
            console.print(f"[yellow]kept the environment in {env_dir} (--keep={args.keep}): "
                          f"PHOENIXCI_ENV_DIR={env_dir} phoenixci status | down[/]")
        elif EnvState.load(env_dir) is not None:
            _say("tearing down ...")
            lifecycle.down(env_dir, say=_say)
            run_id = state.run_id if state else "?"
            console.print(f"[green]torn down: nothing tagged {stacks.RUN_ID_TAG}={run_id} is left[/]")
            shutil.rmtree(env_dir, ignore_errors=True)
        else:
            shutil.rmtree(env_dir, ignore_errors=True)
    return 0


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


def _developer_pushes_a_change(state: EnvState, env_dir: Path) -> None:
    """What a developer does: clone, change the page, push; the pipeline releases it."""
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
    page = clone / "phoenixapp/templates/index.html"
    page.write_text(re.sub(r"Welcome to [^<]*", HEADLINE, page.read_text(), count=1))
    git("commit", "-q", "-am", "demo: a new page")
    revision = git("rev-parse", "HEAD")
    _say(f"a developer pushes {revision[:12]} (a new page) to {state.git_remote} ...")
    before = _app_server(state)
    t0 = time.monotonic()
    git("push", "-q", "origin", "main")
    lifecycle.site.wait_serving(state, revision, timeout=300)
    serving = time.monotonic() - t0
    build = buildbot.wait_for_build(state.ci_url, revision, timeout=300)
    table = Table(title=f"build #{build.number} of {revision[:12]}: {build.result}")
    table.add_column("step")
    table.add_column("result")
    for step in build.steps:
        table.add_row(step.name, step.result)
    console.print(table)
    with urllib.request.urlopen(state.app_url, timeout=5) as resp:  # noqa: S310 - the run's own address
        body = resp.read().decode()
    shown = HEADLINE in body
    after = _app_server(state)
    _say(f"{state.app_url} serves {revision[:12]} {serving:.1f} s after the push, on {after} "
         f"(was {before}); the new page is {'live' if shown else 'NOT live'}")
    if not shown or build.result != "success" or after == before:
        raise PhoenixError(f"the demo's change was not released ({build.result}); see {state.ci_url}")


def _app_server(state: EnvState) -> str:
    """The instance the app's Elastic IP points to."""
    ip, _ = state.app_address
    with get_backend(state.backend) as backend:
        found = backend.client("ec2").describe_addresses(PublicIps=[ip])["Addresses"]
    return str(found[0].get("InstanceId") or "nothing") if found else "nothing"
