"""The ``phoenixci`` command. Errors print one line and exit 1; ``--debug`` shows tracebacks."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from phoenixci import harness, leaks, stacks
from phoenixci.backends import DEFAULT_BACKEND, Backend, get_backend
from phoenixci.errors import ConfigError, PhoenixError

console = Console(stderr=False, width=max(120, Console().width))
err_console = Console(stderr=True)
log = logging.getLogger("phoenixci")


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


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job, as far as it exists: the infrastructure stack on the chosen backend."""
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


def cmd_clean(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        removed = leaks.sweep(backend, args.run_id)
        left = leaks.leftovers(backend, args.run_id)
    for item in removed:
        console.print(f"removed {item}")
    if left:
        raise PhoenixError(f"still left after clean: {'; '.join(left)}")
    console.print(f"[green]clean: removed {len(removed)} resource(s), nothing left[/]")
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.package import package

    result = package(Path(args.repo), args.revision, build=args.build, out_dir=Path(args.out))
    console.print(f"{result.path}  sha256 {result.sha256}  revision {result.revision}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.publish import publish

    with _backend(args) as backend:
        result = publish(backend.client("s3"), args.bucket, Path(args.artifact), revision=args.revision)
    state = "already published" if result.already_published else "published"
    console.print(f"{state} {result.url} sha256 {result.sha256}")
    return 0


def _infra(backend: Backend, name: str) -> stacks.Stack:
    stack = stacks.describe(backend.client("cloudformation"), name)
    if stack is None:
        raise ConfigError(f"infrastructure stack {name!r} not found on {backend.url}: "
                          "create it first or pass --infra-stack")
    return stack


def cmd_deploy(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.deploy import Environment, deploy

    with _backend(args) as backend:
        infra = _infra(backend, args.infra_stack)
        env = Environment.from_infra_stack(infra, endpoint_url=args.instance_endpoint or "")
        with _progress(f"deploying {args.revision}"):
            result = deploy(backend.client("cloudformation"), backend.client("ec2"), backend.client("s3"),
                            env, revision=args.revision, artifact_key=args.artifact_key,
                            artifact_sha256=args.sha256, health_timeout=args.health_timeout)
    console.print(f"{result.revision} serves on {result.instance_id} at {result.public_ip}; "
                  f"retired: {', '.join(result.retired) or 'none'}")
    if result.retire_error:
        err_console.print(f"warning: {result.retire_error}")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.retire import app_stack_name, retire

    with _backend(args) as backend:
        infra = _infra(backend, args.infra_stack)
        result = retire(backend.client("cloudformation"), backend.client("s3"),
                        keep=app_stack_name(args.keep_revision),
                        run_id=infra.tags.get(stacks.RUN_ID_TAG, ""))
    console.print(f"retired: {', '.join(result.retired) or 'none'}")
    return 0


def cmd_cloud(args: argparse.Namespace) -> int:
    """phoenixci cloud start|status|stop: the local cloud as a background service."""
    import json

    from phoenixci.localcloud import daemon

    state_dir = Path(args.state_dir)
    if args.action == "start":
        console.print(f"starting the local cloud on {state_dir} (the first start builds the base image) ...")
        ready = daemon.start(state_dir)
        console.print(f"local cloud ready: API {ready['endpoint_url']}, image {ready['image_id']}; "
                      f"source {ready['env_file']}")
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
    console.print(f"local cloud on {state_dir}: pid {info['pid']}, API {info.get('endpoint_url')}, "
                  f"image {info.get('image_id')}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phoenixci", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default=os.environ.get("PHOENIXCI_BACKEND", DEFAULT_BACKEND),
                        help="moto:// (default), aws://?region=R&profile=P, localstack://HOST:PORT "
                             "[env PHOENIXCI_BACKEND]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="run the main job on the chosen backend")
    p.add_argument("--keep", choices=["never", "on-failure", "always"], default="never")
    p.add_argument("--admin-cidr", default=os.environ.get("PHOENIXCI_ADMIN_CIDR", "127.0.0.1/32"))
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("leaks", parents=[common], help="list resources tagged by phoenixci runs")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_leaks)
    p = sub.add_parser("clean", parents=[common], help="delete what phoenixci runs left behind")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("package", help="package the app at a git revision")
    p.add_argument("--repo", default=".")
    p.add_argument("--revision", default="HEAD")
    p.add_argument("--build", default=os.environ.get("BUILD_NUMBER", "0"))
    p.add_argument("--out", default="dist")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("publish", parents=[common], help="upload a packaged artifact to S3")
    p.add_argument("artifact")
    p.add_argument("--bucket", required=True)
    p.add_argument("--revision", default=None)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("deploy", parents=[common], help="release a revision on a new app server")
    p.add_argument("--infra-stack", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--artifact-key", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--health-timeout", type=float, default=300.0)
    p.add_argument("--instance-endpoint", default=os.environ.get("PHOENIXCI_INSTANCE_ENDPOINT", ""),
                   help="AWS endpoint URL as seen from the instances (local cloud only)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("retire", parents=[common], help="delete app stacks older than a revision")
    p.add_argument("--infra-stack", required=True)
    p.add_argument("--keep-revision", required=True)
    p.set_defaults(func=cmd_retire)
    p = sub.add_parser("cloud", help="the local cloud: start | status | stop (needs root)")
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument("--state-dir", default=os.environ.get("PHOENIXCI_STATE_DIR", "/var/lib/phoenixci/cloud"),
                   help="where the cloud keeps its state, env file and log [env PHOENIXCI_STATE_DIR]")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(func=cmd_cloud)

    p = sub.add_parser("image", help="the base image of local instances: build (needs root)")
    p.add_argument("action", choices=["build"])
    p.add_argument("--cache-dir", default="/var/cache/phoenixci/images")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=cmd_image)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        # moto warns about every template resource it cannot model; phoenixci reports what matters
        logging.getLogger("moto").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"moto\..*")
    try:
        return int(args.func(args))
    except PhoenixError as e:
        if args.debug:
            raise
        err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if args.debug:
            raise
        err_console.print(f"[red]unexpected error:[/] {type(e).__name__}: {e} (rerun with --debug)",
                          highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
