"""The ``phoenixci`` command. Errors print one line and exit 1; ``--debug`` shows tracebacks.

This module and the pipeline commands (package, publish, deploy, retire) use only the standard
library and boto3: the CI agent installs phoenixci without its host-side extras. Commands that
need them (demo, up, status, down, cloud, image, leaks, clean) live in ``phoenixci.commands``
and are imported only when run.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from phoenixci.backends import DEFAULT_BACKEND
from phoenixci.errors import ConfigError, PhoenixError
from phoenixci.pipeline.commands import (
    cmd_deploy,
    cmd_package,
    cmd_publish,
    cmd_retire,
    err_console,
    up_environment,
)


def _host(name: str) -> str:
    """A command implemented in phoenixci.commands (resolved only when it runs)."""
    return f"phoenixci.commands.{name}"


def _default_backend() -> str:
    if os.environ.get("PHOENIXCI_BACKEND"):
        return os.environ["PHOENIXCI_BACKEND"]
    env = up_environment()
    return str(env.backend) if env is not None and env.phase == "up" else DEFAULT_BACKEND


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phoenixci", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    help_backend = ("moto:// (default), aws://?region=R&profile=P, localstack://HOST:PORT [env PHOENIXCI_BACKEND; "
                    "after `phoenixci up`: its environment]")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", default=_default_backend(), help=help_backend)
    # commands that make a new environment never default to the one `phoenixci up` left here
    # (a parser of their own: argparse shares a parent's actions, so set_defaults would leak)
    fresh = argparse.ArgumentParser(add_help=False)
    fresh.add_argument("--backend", default=os.environ.get("PHOENIXCI_BACKEND", DEFAULT_BACKEND),
                       help="moto:// (default), aws://?region=R&profile=P [env PHOENIXCI_BACKEND]")
    fresh.add_argument("--accept-aws-cost", action="store_true",
                       default=os.environ.get("PHOENIXCI_ACCEPT_AWS_COST", "").lower() in {"1", "true", "yes"},
                       help="on aws://: accept the printed cost estimate; nothing is created there without it "
                            "[env PHOENIXCI_ACCEPT_AWS_COST=1]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[fresh], help="run the main job on the chosen backend")
    p.add_argument("--keep", choices=["never", "on-failure", "always"], default="never")
    p.add_argument("--admin-cidr", default=os.environ.get("PHOENIXCI_ADMIN_CIDR", "127.0.0.1/32"))
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=_host("demo:cmd_demo"))

    p = sub.add_parser("leaks", parents=[common], help="list resources tagged by phoenixci runs")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=_host("cloud:cmd_leaks"))
    p = sub.add_parser("clean", parents=[common], help="delete what phoenixci runs left behind")
    p.add_argument("--run-id", default=None)
    p.add_argument("--older-than", default=None, metavar="DURATION",
                   help="only runs whose resources are at least this old: 90s, 30m, 2h, 1d")
    p.set_defaults(func=_host("cloud:cmd_clean"))

    p = sub.add_parser("package", help="package the app at a git revision")
    p.add_argument("--repo", default=".")
    p.add_argument("--revision", default="HEAD")
    p.add_argument("--build", default=os.environ.get("BUILD_NUMBER", "0"))
    p.add_argument("--out", default="dist")
    p.add_argument("--subdir", default="app",
                   help="the app's directory in the repository ('.' when the repository is the app)")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("publish", parents=[common], help="upload a packaged artifact to S3")
    p.add_argument("artifact")
    p.add_argument("--bucket", default=None,
                   help="default: the ArtifactBucket output of the infrastructure stack")
    p.add_argument("--existing", choices=["refuse", "reuse"], default="refuse",
                   help="when the revision is already published with other bytes: refuse (default), or reuse "
                        "the published artifact (a rebuild differs only in its build number)")
    p.add_argument("--infra-stack", default=None,
                   help="[env PHOENIXCI_INFRA_STACK; default: the environment `phoenixci up` made]")
    p.add_argument("--revision", default=None)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("deploy", parents=[common], help="release a revision on a new app server")
    p.add_argument("--infra-stack", default=None,
                   help="[env PHOENIXCI_INFRA_STACK; default: the environment `phoenixci up` made]")
    p.add_argument("--revision", default=None, help="full git sha [env PHOENIXCI_REVISION]")
    p.add_argument("--artifact-key", default=None, help="default: the artifact published for the revision")
    p.add_argument("--sha256", default=None, help="default: the sha256 it was published with")
    p.add_argument("--health-timeout", type=float, default=300.0)
    p.add_argument("--instance-endpoint", default=os.environ.get("PHOENIXCI_INSTANCE_ENDPOINT", ""),
                   help="AWS endpoint URL as seen from the instances (local cloud only)")
    p.add_argument("--address-check", choices=["auto", "http", "none"], default="auto",
                   help="after moving the Elastic IP, wait until it serves the new revision: http = probe "
                        "/version through it; none = trust the API; auto (default) = none for a 127.0.0.0/8 "
                        "address (the local cloud applies moves before the API returns), else http")
    p.add_argument("--address-timeout", type=float, default=120.0, help="seconds for the address check")
    p.add_argument("--drain", type=float, default=5.0,
                   help="seconds the old server keeps its open connections before it is retired")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("retire", parents=[common], help="delete app stacks older than a revision")
    p.add_argument("--infra-stack", default=None)
    p.add_argument("--keep-revision", required=True)
    p.set_defaults(func=cmd_retire)
    p = sub.add_parser("cloud", help="the local cloud: start | status | stop (needs root)")
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument("--state-dir", default=os.environ.get("PHOENIXCI_STATE_DIR", "/var/lib/phoenixci/cloud"),
                   help="where the cloud keeps its state, env file and log [env PHOENIXCI_STATE_DIR]")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.add_argument("--region", default="us-east-1", help="start: the region it serves (others are refused)")
    p.add_argument("--package-proxy", action="store_true",
                   help="start: instances reach this machine's package sources (apt, pip) through the gateway")
    p.set_defaults(func=_host("cloud:cmd_cloud"))

    envdir = argparse.ArgumentParser(add_help=False)
    envdir.add_argument("--env-dir", default=None,
                        help="where the environment keeps its state [env PHOENIXCI_ENV_DIR, "
                             "default /var/lib/phoenixci/env]")
    p = sub.add_parser("up", parents=[fresh, envdir],
                       help="bring a whole environment up: cloud, stack, CI server and agent, the app")
    p.add_argument("--admin-cidr", default=os.environ.get("PHOENIXCI_ADMIN_CIDR"),
                   help="the only network allowed to reach SSH and the CI web UI (required on aws://)")
    p.add_argument("--keep-on-failure", action="store_true", help="keep what a failed up made, to look at it")
    p.set_defaults(func=_host("env:cmd_up"))
    p = sub.add_parser("status", parents=[envdir], help="the environment: URLs, logins, live revision, builds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_host("env:cmd_status"))
    p = sub.add_parser("down", parents=[envdir], help="tear the environment down and prove nothing is left")
    p.add_argument("--collect", action="store_true",
                   help="first save builds' logs, consoles, journals and stack events into <env-dir>/logs")
    p.set_defaults(func=_host("env:cmd_down"))
    p = sub.add_parser("converge", parents=[envdir], help="run the playbook against the environment again")
    p.set_defaults(func=_host("env:cmd_converge"))

    p = sub.add_parser("image", help="the base image of local instances: build (needs root)")
    p.add_argument("action", choices=["build"])
    p.add_argument("--cache-dir", default="/var/cache/phoenixci/images")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=_host("cloud:cmd_image"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from phoenixci.signals import terminate_as_interrupt

    terminate_as_interrupt()  # SIGTERM tears down like Ctrl-C
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        # moto warns about every template resource it cannot model; phoenixci reports what matters
        logging.getLogger("moto").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"moto\..*")
    try:
        func = args.func
        if isinstance(func, str):
            module, _, name = func.partition(":")
            try:
                func = getattr(importlib.import_module(module), name)
            except ImportError as e:
                raise ConfigError(f"`phoenixci {args.command}` needs the host-side extras, which are "
                                  f"not installed here ({e.name} is missing): pip install 'phoenixci[host]'") from e
        return int(func(args))
    except PhoenixError as e:
        if args.debug:
            raise
        err_console.print(f"error: {e}")
        return 1
    except KeyboardInterrupt as e:
        err_console.print(f"interrupted ({e})" if str(e) else "interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if args.debug:
            raise
        err_console.print(f"unexpected error: {type(e).__name__}: {e} (rerun with --debug)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
