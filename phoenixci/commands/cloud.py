"""Commands that run on the host: the demo, the local cloud, the base image, leaks and clean.

They print with rich (tables, spinners); rich is a host-side dependency (``phoenixci[host]``),
which the pipeline commands on the CI agent never import.
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from phoenixci import harness, leaks, stacks
from phoenixci.backends import Backend, get_backend
from phoenixci.errors import PhoenixError

console = Console(stderr=False, width=max(120, Console().width))
err_console = Console(stderr=True)


@contextlib.contextmanager
def _progress(message: str) -> Iterator[None]:
    with console.status(message, spinner="dots"):
        yield


def _backend(args: argparse.Namespace) -> Backend:
    return get_backend(args.backend)


def _resources_table(stack: stacks.Stack) -> Table:
    table = Table(title=f"stack {stack.name}: resources")
    for col in ("logical id", "type", "physical id", "status"):
        table.add_column(col, overflow="fold")
    for r in sorted(stack.resources, key=lambda r: (r["ResourceType"], r["LogicalResourceId"])):
        table.add_row(r["LogicalResourceId"], r["ResourceType"], r["PhysicalResourceId"], r["ResourceStatus"])
    return table


def _outputs_table(stack: stacks.Stack) -> Table:
    table = Table(title=f"stack {stack.name}: outputs")
    table.add_column("output", overflow="fold")
    table.add_column("value", overflow="fold")
    for key in sorted(stack.outputs):
        table.add_row(key, stack.outputs[key])
    return table


def cmd_demo_infrastructure(args: argparse.Namespace) -> int:
    """The infrastructure stack alone (a backend without instances): create, show, tear down."""
    run_id = args.run_id or harness.new_run_id()
    with _progress(f"starting backend {args.backend}"):
        backend = _backend(args)
        backend.start()
    try:
        console.print(f"backend [bold]{backend.url}[/] at {backend.endpoint_url or 'AWS'}, "
                      f"account {backend.account_id}, run id [bold]{run_id}[/]")
        console.print("creating the infrastructure stack ...")
        with harness.infrastructure(backend, run_id, admin_cidr=args.admin_cidr, keep=args.keep) as infra:
            console.print(_resources_table(infra.stack))
            console.print(_outputs_table(infra.stack))
            if getattr(backend, "cloud", None) is not None:
                _show_ci_servers(backend, infra)
            console.print("tearing down ...")
        if args.keep == "never":
            console.print(f"[green]torn down: nothing tagged {stacks.RUN_ID_TAG}={run_id} is left[/]")
        else:
            console.print(f"[yellow]kept stack {harness.infra_stack_name(run_id)} (--keep={args.keep})[/]")
    finally:
        backend.stop()
    return 0


def _show_ci_servers(backend: Backend, infra: harness.Infrastructure) -> None:
    """On the local cloud the CI server and agent really boot: wait for them, log in over SSH."""
    import subprocess

    from phoenixci.util import wait_until

    cloud = backend.cloud  # type: ignore[attr-defined]
    out = infra.stack.outputs
    servers = {"CI server": (out["CiServerInstanceId"], out["CiServerPrivateIp"]),
               "CI agent": (out["CiAgentInstanceId"], out["CiAgentPrivateIp"])}
    with _progress("booting the CI server and agent (systemd, cloud-init, sshd) ..."):
        wait_until(lambda: all(cloud.runtime.boot_phase(i) == "ready" for i, _ in servers.values()),
                   timeout=120, interval=0.2, what="the CI instances to finish booting")
    table = Table(title="instances of the run, booted by the local cloud")
    for col in ("role", "instance", "private ip", "boot phase", "ssh admin@ip hostname"):
        table.add_column(col, overflow="fold")
    for role, (instance_id, ip) in servers.items():
        known = infra.key.private_key.with_name(f"known_hosts-{instance_id}")
        known.write_text(f"{ip} {cloud.runtime.ssh_host_key(instance_id)}\n")
        done = subprocess.run(["ssh", "-i", str(infra.key.private_key), "-o", f"UserKnownHostsFile={known}",
                               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                               "-o", "LogLevel=ERROR", f"admin@{ip}", "hostname"],
                              capture_output=True, text=True, timeout=30)
        answer = done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr.strip()}"
        table.add_row(role, instance_id, ip, cloud.runtime.boot_phase(instance_id), answer)
    console.print(table)


def cmd_leaks(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        left = leaks.leftovers(backend, args.run_id)
    for item in left:
        console.print(item)
    console.print(f"{len(left)} leftover(s)")
    return 1 if left else 0


def _clean_kept_environment(run_id: str) -> bool:
    """A kept run (pytest --keep, `phoenixci up`) whose record is in PHOENIXCI_ENV_DIR: remove it
    as `phoenixci down` does (its local cloud daemon too); False when the record is another run's."""
    from phoenixci.env import lifecycle
    from phoenixci.env.state import EnvState, env_dir

    directory = env_dir()
    state = EnvState.load(directory)
    if state is None or state.run_id != run_id:
        return False
    removed = lifecycle.down(directory, say=lambda m: console.print(m, highlight=False))
    for item in removed:
        console.print(f"removed {item}", highlight=False)
    console.print(f"[green]clean: run {run_id} removed ({directory}), nothing of it is left[/]")
    return True


def cmd_clean(args: argparse.Namespace) -> int:
    if args.run_id and not args.older_than and _clean_kept_environment(args.run_id):
        return 0
    older = leaks.parse_duration(args.older_than) if args.older_than else None
    with _backend(args) as backend:
        if older is None:
            removed = leaks.sweep(backend, args.run_id)
            left = leaks.leftovers(backend, args.run_id)
        else:  # the runs are chosen once: after the sweep their stacks no longer tell their age
            runs = leaks.old_runs(backend, older, args.run_id)
            removed = [item for run in runs for item in leaks.sweep(backend, run)]
            left = [item for run in runs for item in leaks.leftovers(backend, run)]
    for item in removed:
        console.print(f"removed {item}")
    if left:
        raise PhoenixError(f"still left after clean: {'; '.join(left)}")
    console.print(f"[green]clean: removed {len(removed)} resource(s), nothing left[/]")
    return 0


def cmd_cloud(args: argparse.Namespace) -> int:
    """phoenixci cloud start|status|stop: the local cloud as a background service."""
    import json

    from phoenixci.localcloud import daemon

    state_dir = Path(args.state_dir)
    if args.action == "start":
        console.print(f"starting the local cloud ({args.region}) on {state_dir} (the first start builds the "
                      "base image) ...")
        ready = daemon.start(state_dir, region=args.region, package_proxy=args.package_proxy)
        console.print(f"local cloud ready: region {ready['region']}, API {ready['endpoint_url']}, "
                      f"image {ready['image_id']}; source {ready['env_file']}")
        if args.package_proxy:
            names = (daemon.status(state_dir).get("package_proxy") or {}).get("names", [])
            console.print(f"package path: instances resolve {', '.join(names)} to their gateway (HTTP cached, "
                          "HTTPS passed through by name; nothing else resolves)", markup=False)
        return 0
    if args.action == "stop":
        swept = daemon.stop(state_dir)
        for item in swept:
            console.print(f"swept leftover {item}")
        console.print(f"local cloud on {state_dir} stopped; nothing left")
        return 0
    info = daemon.status(state_dir)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0 if info.get("running") else 3
    if not info.get("running"):
        console.print(f"no local cloud runs on {state_dir}")
        return 3
    console.print(f"local cloud on {state_dir}: pid {info['pid']}, region {info.get('region')}, "
                  f"API {info.get('endpoint_url')}, image {info.get('image_id')}")
    if info.get("limits"):
        console.print(f"warning: {info['limits']}", markup=False)
    if info.get("package_proxy"):
        console.print(f"package path: {', '.join(info['package_proxy']['names'])}", markup=False)
    table = Table()
    for col in ("instance", "state", "private ip", "elastic ip", "boot phase", "error"):
        table.add_column(col, overflow="fold")
    for inst in info.get("instances", []):
        table.add_row(inst["instance_id"], inst["state"], inst["private_ip"], inst.get("elastic_ip") or "",
                      inst.get("boot_phase") or "", inst.get("error") or "")
    console.print(table)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """phoenixci image build: the base image of local instances (cached; instant the 2nd time)."""
    from phoenixci.localcloud.image import build_image

    with _progress("building the base image (about 35 s the first time)"):
        image = build_image(Path(args.cache_dir), force=args.force)
    console.print(f"{image.name}  rootfs {image.rootfs}  sha256 {image.manifest['sha256']}")
    return 0
