"""`phoenixci up | status | down | converge`: a whole environment, kept between commands."""
from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from phoenixci.backends import get_backend
from phoenixci.env import lifecycle
from phoenixci.env.state import env_dir
from phoenixci.env.status import load_up, status

console = Console(stderr=False, width=max(120, Console().width), soft_wrap=True)


def _say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)


def cmd_up(args: argparse.Namespace) -> int:
    from phoenixci import costs

    estimate = costs.require_acknowledgement(args.backend, args.accept_aws_cost, command="up")
    if estimate:  # aws://: the cost shown, then the account and the region's image checked, before anything exists
        console.print(estimate, highlight=False, markup=False)
        if args.admin_cidr:  # without it `up` refuses below, before anything exists: no need to ask AWS first
            _say(costs.preflight(args.backend))
    started = time.monotonic()
    directory = env_dir(args.env_dir)
    lifecycle.up(args.backend, directory, admin_cidr=args.admin_cidr, say=_say,
                 keep_on_failure=args.keep_on_failure)
    _say(f"[green]up in {time.monotonic() - started:.1f}s[/]")
    _show(status(directory))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = status(env_dir(args.env_dir))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _show(info)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    directory = env_dir(args.env_dir)
    started = time.monotonic()
    removed = lifecycle.down(directory, say=_say, collect=args.collect)
    for item in removed:
        console.print(f"removed {item}", highlight=False)
    _say(f"[green]down in {time.monotonic() - started:.1f}s: nothing of the environment is left[/]")
    return 0


def cmd_converge(args: argparse.Namespace) -> int:
    state = load_up(env_dir(args.env_dir))
    with get_backend(state.backend) as backend:
        result = lifecycle.converge(state, backend, say=_say)
    hosts = ", ".join(f"{host}: changed={recap['changed']}" for host, recap in sorted(result.recap.items()))
    console.print(f"playbook done: changed={result.changed} ({hosts}); log {result.log_path}", highlight=False)
    return 0


def _show(info: dict) -> None:
    console.print(f"app        {info['app_url']}  (live revision: {info.get('live_revision') or 'none'})", highlight=False)
    console.print(f"CI         {info['ci_url']}  (admin login: {info['ci_admin']['user']} / "
                  f"{info['ci_admin']['password']})", highlight=False)
    console.print(f"git remote {info['git_remote']}", highlight=False)
    console.print(f"           GIT_SSH_COMMAND='ssh -F {info['ssh_config']}' git clone {info['git_remote']}",
                  highlight=False)
    for name, host in info["hosts"].items():
        console.print(f"{name:<10} {host['ssh']}", highlight=False)
    if info.get("builds"):
        table = Table(title="last builds")
        for col in ("#", "revision", "result", "state"):
            table.add_column(col)
        for b in info["builds"]:
            table.add_row(str(b["number"]), b["revision"][:12], b["result"], b["state"])
        console.print(table)
