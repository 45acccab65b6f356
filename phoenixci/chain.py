"""The pipeline's fixture chain as context managers, one state-changing step each; the pytest
fixtures (``phoenixci.fixtures``) are thin wrappers, and a script can use them directly.

backend → ``key_pair`` → ``infrastructure_stack`` → ``ci_hosts`` (the playbook) → ``AppRepo``
(a clone of the CI server's remote) → ``AppRepo.push_commit`` (a build, its artifact, the
serving instance). Each step records what it made in the run's ``EnvState`` (``env.json`` in
the run directory) before it makes the next, and removes it in ``finally`` unless the run is
being kept, so an interrupted session leaves nothing and a kept one is an environment the
``phoenixci`` commands (status, down, clean --run-id) work on.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from phoenixci import harness, stacks
from phoenixci.backends import Backend
from phoenixci.env import buildbot, gitrepo, lifecycle, site
from phoenixci.env.state import EnvState
from phoenixci.pipeline.health import probe
from phoenixci.pipeline.retire import APP_STACK_PREFIX
from phoenixci.signals import checkpoint, shielded

Keeping = Callable[[], bool]
Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def attach_url(backend: Backend) -> str:
    """A backend URL another process can use to reach the same API (the CLI on a kept run)."""
    cloud = getattr(backend, "cloud", None)
    if cloud is not None:
        return f"moto://?state-dir={cloud.state_dir}&region={backend.region}"
    return backend.url


def new_state(backend: Backend, run_id: str, directory: Path, *, cloud_dir: str = "",
              health_timeout: float = 0) -> EnvState:
    """The run's record, in its run directory (``PHOENIXCI_ENV_DIR`` for the CLI)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = EnvState(directory=str(directory), backend=attach_url(backend), run_id=run_id, cloud_dir=cloud_dir,
                     health_timeout=health_timeout)
    state.save()
    return state


@contextlib.contextmanager
def key_pair(backend: Backend, state: EnvState, *, keeping: Keeping) -> Iterator[harness.KeyPair]:
    """A new ed25519 key imported as the run's EC2 key pair (tagged with the run id)."""
    ec2 = backend.client("ec2")
    state.key_name = f"phoenixci-{state.run_id}"
    state.ssh_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.save()
    try:
        site.import_key(ec2, state)
        public = state.ssh_key.with_suffix(".pub").read_text().strip()
        yield harness.KeyPair(name=state.key_name, private_key=state.ssh_key, public_key=public)
    finally:
        if not keeping():
            with shielded("removal of the key pair"), contextlib.suppress(ClientError):
                ec2.delete_key_pair(KeyName=state.key_name)


def remove_app_stacks(backend: Backend, state: EnvState, say: Say = _quiet) -> list[str]:
    """Stop the worker (no release may start after the listing), then delete every app stack."""
    site.stop_worker(state)
    cfn, s3 = backend.client("cloudformation"), backend.client("s3")
    removed = []
    for app in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=state.run_id):
        say(f"deleting {app.name} ...")
        stacks.delete(cfn, s3, app.name)
        removed.append(app.name)
    return removed


@contextlib.contextmanager
def infrastructure_stack(backend: Backend, state: EnvState, *, admin_cidr: str, keeping: Keeping,
                         say: Say = _quiet) -> Iterator[stacks.Stack]:
    """The run's infrastructure stack (network, CI hosts, bucket, roles, the app's address)."""
    try:
        say(f"creating the infrastructure stack {harness.infra_stack_name(state.run_id)} ...")
        infra = lifecycle.create_infra(state, backend, admin_cidr=admin_cidr)
        checkpoint("stack")
        yield infra
    finally:
        if not keeping() and state.infra_stack:
            with shielded("teardown of the infrastructure stack"):
                remove_app_stacks(backend, state, say)
                say(f"deleting {state.infra_stack} ...")
                stacks.delete(backend.client("cloudformation"), backend.client("s3"), state.infra_stack)


@contextlib.contextmanager
def ci_hosts(backend: Backend, state: EnvState, infra: stacks.Stack, *, keeping: Keeping,
             say: Say = _quiet) -> Iterator[EnvState]:
    """The CI server and agent configured by the playbook; host keys pinned from their consoles."""
    try:
        say("waiting for the CI server and agent (host keys from their consoles) ...")
        lifecycle.pin_ci_hosts(state, backend, infra)
        lifecycle.converge(state, backend, say=say)
        state.phase = "up"
        state.save()
        yield state
    finally:
        if not keeping():
            with shielded("removal of the app servers"):
                remove_app_stacks(backend, state, say)


@dataclass
class Release:
    """What one push did: its build, its artifact, and what serves the app afterwards."""

    revision: str
    build: buildbot.Build
    push_output: str                 # what the remote said (hooks included)
    pushed_at: float                 # time.monotonic() when `git push` returned
    serving_revision: str | None     # what the app's address serves now
    serving_instance: str | None     # the instance the app's Elastic IP points to
    artifact_key: str | None = None  # in the artifact bucket, when the build published one
    artifact_sha256: str | None = None
    steps: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.build.result == "success"

    @property
    def failed_step(self) -> str | None:
        return next((name for name, result in self.steps.items() if result not in ("success", "skipped")), None)


class AppRepo:
    """A developer's clone of the CI server's remote; an empty remote is seeded with the app."""

    def __init__(self, backend: Backend, state: EnvState, path: Path, app_source: Path = lifecycle.APP_SOURCE):
        self.backend, self.state, self.path = backend, state, path
        self.ssh = gitrepo.ssh_command(state.ssh_key, state.known_hosts)
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        gitrepo.git(path.parent, "clone", "-q", state.git_remote, str(path), ssh=self.ssh)
        if gitrepo.git(path, "rev-parse", "-q", "--verify", "HEAD", check=False).returncode != 0:
            shutil.copytree(app_source, path, ignore=gitrepo.IGNORED, dirs_exist_ok=True)
            gitrepo.git(path, "checkout", "-q", "-b", "main")
            self.commit("the app", {})

    def git(self, *args: str, check: bool = True) -> Any:
        return gitrepo.git(self.path, *args, ssh=self.ssh, check=check)

    @property
    def head(self) -> str:
        return gitrepo.head(self.path)

    def commit(self, message: str, files: dict[str, str | None]) -> str:
        """Write (or, for None, delete) ``files`` (paths relative to the repository), commit all."""
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head

    def revert_to(self, revision: str, message: str) -> str:
        """A new commit whose tree is ``revision``'s (as a developer repairs a red pipeline)."""
        self.git("read-tree", "-u", "--reset", revision)
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head

    def push(self, branch: str = "main") -> tuple[str, float]:
        """Push HEAD to ``branch``; (what the remote said, when the push returned). GitError if refused."""
        proc = self.git("push", "origin", f"HEAD:{branch}", check=False)
        if proc.returncode != 0:
            said = " | ".join(ln.removeprefix("remote: ") for ln in proc.stderr.strip().splitlines() if ln.strip())
            raise gitrepo.GitError(f"git push to {branch} was refused: {said}")
        return str(proc.stderr), time.monotonic()

    def push_commit(self, files: dict[str, str | None] | None = None, message: str = "a change", *,
                    timeout: float = 600.0) -> Release:
        """Commit ``files`` (none: push HEAD as it is), push, wait for the build to finish and,
        when it succeeded, for the app's address to serve it; return what happened."""
        if files is not None:
            self.commit(message, files)
        revision = self.head
        output, pushed_at = self.push()
        checkpoint("build")
        build = buildbot.wait_for_build(self.state.ci_url, revision, timeout=timeout)
        if build.result == "success":
            site.wait_serving(self.state, revision, timeout=60)
            self.state.live_revision = revision
            self.state.save()
        release = Release(revision=revision, build=build, push_output=output, pushed_at=pushed_at,
                          serving_revision=serving_revision(self.state), serving_instance=app_holder(self.backend, self.state),
                          steps={s.name: s.result for s in build.steps})
        release.artifact_key, release.artifact_sha256 = published_artifact(self.backend, self.state, revision)
        return release


def serving_revision(state: EnvState) -> str | None:
    obs = probe(*state.app_address, timeout=3.0)
    return str((obs.version or {}).get("revision")) if obs.health_status == 200 and obs.version else None


def app_holder(backend: Backend, state: EnvState) -> str | None:
    """The instance the app's Elastic IP points to."""
    ip, _ = state.app_address
    found = backend.client("ec2").describe_addresses(PublicIps=[ip])["Addresses"]
    return str(found[0].get("InstanceId")) if found and found[0].get("InstanceId") else None


def published_artifact(backend: Backend, state: EnvState, revision: str) -> tuple[str | None, str | None]:
    """(key, sha256) of the revision's artifact, its bytes checked against the published checksum
    (PublishError if they differ); (None, None) when nothing was published."""
    import tempfile

    from phoenixci.errors import PublishError
    from phoenixci.pipeline.publish import fetch_and_verify, find_published

    s3 = backend.client("s3")
    infra = stacks.describe(backend.client("cloudformation"), state.infra_stack, resources=False)
    if infra is None:
        return None, None
    try:
        found = find_published(s3, infra.output("ArtifactBucket"), revision)
    except PublishError:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        fetch_and_verify(s3, found.bucket, found.key, Path(tmp))
    return found.key, found.sha256


def pin_app_server(backend: Backend, state: EnvState, instance_id: str) -> str:
    """Pin an app server's host key from its console; return its private address (reached
    through the CI server as jump host: the run's ssh_config says so)."""
    from phoenixci.env import hostkeys

    ec2 = backend.client("ec2")
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    hostkeys.pin(ec2, state.known_hosts, instance_id, [inst["PrivateIpAddress"]])
    return str(inst["PrivateIpAddress"])


def testinfra_host(state: EnvState, name_or_ip: str, *, sudo: bool = False) -> Any:
    """A testinfra host over the run's ssh_config (host keys pinned, app servers via jump host)."""
    import testinfra

    return testinfra.get_host(f"ssh://{name_or_ip}", ssh_config=str(state.ssh_config), sudo=sudo)


def remove_run_directory(state: EnvState) -> None:
    """Secrets and keys of a removed run are of no use to anyone: delete them, keep the logs."""
    state.discard()
    if not any(state.path.iterdir()):
        os.rmdir(state.path)
