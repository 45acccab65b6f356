"""The pipeline commands of ``phoenixci``: package, publish, deploy, retire (``phoenixci.cli`` parses).

Standard library and boto3 only, like ``phoenixci.cli``: the CI agent installs phoenixci without
its host-side extras. They print plain lines (``console``, ``err_console``) and find the
infrastructure stack from ``--infra-stack``, PHOENIXCI_INFRA_STACK or the environment `phoenixci
up` made (``up_environment``), which also gives deploy its instance endpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from phoenixci import stacks
from phoenixci.backends import Backend, get_backend
from phoenixci.errors import ConfigError, DeployError

log = logging.getLogger("phoenixci")


class _PlainConsole:
    """What the pipeline commands print with: plain lines (rich is a host-side extra)."""

    def __init__(self, stream: Callable[[], TextIO]) -> None:
        self._stream = stream

    def print(self, message: object = "", **_: object) -> None:
        print(message, file=self._stream(), flush=True)


console = _PlainConsole(lambda: sys.stdout)
err_console = _PlainConsole(lambda: sys.stderr)


@contextlib.contextmanager
def _progress(message: str) -> Iterator[None]:
    log.info("%s ...", message)
    yield


def _backend(args: argparse.Namespace) -> Backend:
    return get_backend(args.backend)


def cmd_package(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.package import package

    result = package(Path(args.repo), args.revision, build=args.build, out_dir=Path(args.out), subdir=args.subdir)
    console.print(f"{result.path}  sha256 {result.sha256}  revision {result.revision}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.publish import publish

    with _backend(args) as backend:
        bucket = args.bucket or _infra(backend, _infra_name(args)).output("ArtifactBucket")
        result = publish(backend.client("s3"), bucket, Path(args.artifact), revision=args.revision,
                         existing=args.existing)
    state = "already published" if result.already_published else "published"
    console.print(f"{state} {result.url} sha256 {result.sha256}")
    return 0


def up_environment() -> Any:
    """The environment `phoenixci up` made on this machine (None if there is none)."""
    from phoenixci.env.state import EnvState, env_dir

    try:
        return EnvState.load(env_dir())
    except (OSError, ValueError, TypeError):
        return None


def _infra_name(args: argparse.Namespace) -> str:
    name = getattr(args, "infra_stack", None) or os.environ.get("PHOENIXCI_INFRA_STACK")
    if not name:
        env = up_environment()
        name = env.infra_stack if env is not None else None
    if not name:
        raise ConfigError("which infrastructure stack? pass --infra-stack NAME (or set PHOENIXCI_INFRA_STACK, "
                          "or run `phoenixci up` first)")
    return str(name)


def _infra(backend: Backend, name: str) -> stacks.Stack:
    stack = stacks.describe(backend.client("cloudformation"), name)
    if stack is None:
        raise ConfigError(f"infrastructure stack {name!r} not found on {backend.url}: "
                          "create it first or pass --infra-stack")
    return stack


def cmd_deploy(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.deploy import Environment, deploy
    from phoenixci.pipeline.publish import find_published

    revision = args.revision or os.environ.get("PHOENIXCI_REVISION", "")
    if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
        raise ConfigError(f"--revision {revision!r} is not a full 40-character git sha (use `git rev-parse HEAD`)")
    with _backend(args) as backend:
        infra = _infra(backend, _infra_name(args))
        endpoint = args.instance_endpoint or getattr(up_environment(), "instance_endpoint", "") or ""
        env = Environment.from_infra_stack(infra, endpoint_url=endpoint)
        key, sha256 = args.artifact_key, args.sha256
        if not (key and sha256):  # a rollback: the artifact this revision was published with
            published = find_published(backend.client("s3"), env.artifact_bucket, revision)
            key, sha256 = key or published.key, sha256 or published.sha256
        with _progress(f"deploying {revision}"):
            try:
                result = deploy(backend.client("cloudformation"), backend.client("ec2"), backend.client("s3"),
                                env, revision=revision, artifact_key=key,
                                artifact_sha256=sha256, health_timeout=args.health_timeout,
                                address_check=args.address_check, address_timeout=args.address_timeout,
                                drain=args.drain)
            except DeployError as e:
                if e.console:  # the failed server is gone: its console is all that is left of it
                    err_console.print(f"console of the failed server (last lines):\n{e.console}")
                raise
    console.print(f"{result.revision} serves on {result.instance_id} at {result.public_ip}; "
                  f"retired: {', '.join(result.retired) or 'none'}")
    if result.timings:
        console.print("timings: " + " ".join(f"{k}={v:.2f}s" for k, v in result.timings.items()))
    if result.retire_error:
        err_console.print(f"warning: {result.retire_error}")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    from phoenixci.pipeline.retire import app_stack_name, retire

    with _backend(args) as backend:
        infra = _infra(backend, _infra_name(args))
        result = retire(backend.client("cloudformation"), backend.client("s3"),
                        keep=app_stack_name(args.keep_revision),
                        run_id=infra.tags.get(stacks.RUN_ID_TAG, ""))
    console.print(f"retired: {', '.join(result.retired) or 'none'}")
    return 0
