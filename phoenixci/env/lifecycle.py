"""`phoenixci up` and `phoenixci down`: one environment (cloud, stack, CI hosts, app repository).

``up`` records its state after every step (``EnvState``), so ``down`` removes exactly what
exists, after a crash too. A failed ``up`` tears down what it made before it re-raises.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from phoenixci import harness, images, leaks, stacks
from phoenixci.backends import Backend, get_backend, parse_url
from phoenixci.env import ansible, gitrepo, hostkeys, site
from phoenixci.env.state import EnvState, Host
from phoenixci.errors import ConfigError, LeakError, PhoenixError
from phoenixci.pipeline.retire import APP_STACK_PREFIX
from phoenixci.signals import checkpoint, shielded
from phoenixci.templates import load_template

log = logging.getLogger(__name__)

Say = Callable[[str], None]
APP_SOURCE = Path(__file__).resolve().parents[2] / "app"


def check_backend(url: str) -> str:
    """The scheme, if ``up`` can make an environment there; ConfigError otherwise."""
    scheme, _, options = parse_url(url)
    get_backend(url)  # unknown scheme or options → one clear ConfigError
    if scheme == "localstack":
        raise ConfigError("localstack:// runs no instances, and the CI server and agent must really run: "
                          "use moto:// (the local cloud) or aws://")
    if scheme == "moto":
        if options.get("instances") == "off" or "state-dir" in options:
            raise ConfigError("`phoenixci up` starts its own local cloud: use plain moto:// (or moto://?region=R)")
        if os.geteuid() != 0:
            raise ConfigError("`phoenixci up` on moto:// runs real instances on this machine (namespaces, "
                              "bridges, mounts) and needs root: run it as root")
    return scheme


def up(backend_url: str, directory: Path, *, admin_cidr: str | None, say: Say, keep_on_failure: bool = False,
       app_source: Path = APP_SOURCE, run_id: str | None = None, health_timeout: float = 0) -> EnvState:
    scheme = check_backend(backend_url)
    existing = EnvState.load(directory)
    if existing is not None:
        if existing.phase == "up":
            raise ConfigError(f"an environment is already up in {directory} (run {existing.run_id}, app "
                              f"{existing.app_url}): use it (`phoenixci status`), or `phoenixci down` first")
        raise ConfigError(f"an earlier `phoenixci up` in {directory} did not finish (phase {existing.phase}): "
                          "run `phoenixci down` first to remove what it left")
    if scheme == "aws" and not admin_cidr:
        raise ConfigError("on aws:// pass --admin-cidr with your own public address (e.g. 203.0.113.7/32): "
                          "only it may reach the CI server's SSH and web UI")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if health_timeout < 0:
        raise ConfigError(f"health timeout {health_timeout}: give a number of seconds > 0")
    state = EnvState(directory=str(directory), backend=backend_url, run_id=run_id or harness.new_run_id(),
                     health_timeout=health_timeout)
    if scheme == "moto":
        state.cloud_dir = str(directory / "cloud")
        query = parse_url(backend_url)[2]
        state.backend = f"moto://?state-dir={state.cloud_dir}" + (f"&region={query['region']}" if "region" in query else "")
    state.save()
    try:
        if state.cloud_dir:
            from phoenixci.localcloud import daemon

            say("starting the local cloud (a daemon: it outlives this command) ...")
            daemon.start(Path(state.cloud_dir), region=parse_url(backend_url)[2].get("region", "us-east-1"))
            checkpoint("cloud")
        with get_backend(state.backend) as backend:
            _create(state, backend, admin_cidr=admin_cidr or "127.0.0.1/32", say=say, app_source=app_source)
    except BaseException as e:
        state.phase, state.error = "failed", str(e) or type(e).__name__
        state.save()
        save_run_directory(state, say)
        if not keep_on_failure:
            say(f"`phoenixci up` failed ({state.error}); removing what it made ...")
            try:
                down(directory, say=say)
            except PhoenixError as left:
                say(f"teardown incomplete: {left}; remove the rest with `phoenixci down` "
                    f"(PHOENIXCI_ENV_DIR={directory})")
        raise
    state.phase = "up"
    state.save()
    return state


def _create(state: EnvState, backend: Backend, *, admin_cidr: str, say: Say, app_source: Path) -> None:
    ec2 = backend.client("ec2")
    key_dir = state.ssh_key.parent
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.key_name = f"phoenixci-{state.run_id}"
    site.import_key(ec2, state)
    state.save()
    say(f"creating the infrastructure stack {harness.infra_stack_name(state.run_id)} ...")
    infra = create_infra(state, backend, admin_cidr=admin_cidr)
    checkpoint("stack")
    say("waiting for the CI server and agent to boot (host keys from their consoles) ...")
    pin_ci_hosts(state, backend, infra)
    converge(state, backend, say=say)
    say("pushing the app as the first commit of its own repository ...")
    revision = push_app(state, app_source)
    checkpoint("push")
    say(f"waiting until {revision[:12]} is built, deployed and served at {state.app_url} ...")
    site.wait_serving(state, revision)
    state.live_revision = revision


def create_infra(state: EnvState, backend: Backend, *, admin_cidr: str) -> stacks.Stack:
    """Create the run's infrastructure stack (the key pair exists); record its hosts and URLs."""
    cfn, ec2, s3 = backend.client("cloudformation"), backend.client("ec2"), backend.client("s3")
    params = {"RunId": state.run_id, "AdminCidr": admin_cidr, "KeyName": state.key_name,
              "ImageId": images.image_for(backend)}
    if site.runs_local_instances(backend):
        from phoenixci.localcloud.addressing import free_vpc_cidr

        vpc = free_vpc_cidr(state.run_id)
        params.update(VpcCidr=vpc, SubnetCidr=vpc.replace(".0.0/16", ".1.0/24"))
    state.infra_stack = harness.infra_stack_name(state.run_id)
    state.save()
    infra = stacks.create(cfn, s3, state.infra_stack, load_template("infrastructure"), params, run_id=state.run_id)
    record_hosts(state, ec2, infra)
    return infra


def record_hosts(state: EnvState, ec2: object, infra: stacks.Stack) -> None:
    """The CI hosts and the run's URLs, from the infrastructure stack's outputs."""
    out = infra.outputs
    state.hosts = {
        "ci-server": Host("ci-server", out["CiServerInstanceId"], out["CiServerPrivateIp"], out.get("CiServerPublicIp", "")),
        "ci-agent": Host("ci-agent", out["CiAgentInstanceId"], out["CiAgentPrivateIp"],
                         site.public_ip(ec2, out["CiAgentInstanceId"])),
    }
    server = state.hosts["ci-server"]
    state.ci_url = f"http://{server.address}:{site.CI_WEB_PORT}/"
    state.git_remote = f"ssh://git@{server.address}{site.REPO_PATH}"
    state.app_url = f"http://{out['AppPublicIp']}:8080/"
    state.save()


def pin_ci_hosts(state: EnvState, backend: Backend, infra: stacks.Stack) -> None:
    """Pin the CI hosts' SSH host keys from their consoles; write the run's ssh_config."""
    ec2 = backend.client("ec2")
    lines: list[str] = []
    for host in state.hosts.values():
        keys = hostkeys.wait_for_host_keys(ec2, host.instance_id)
        lines += hostkeys.known_hosts_lines([host.private_ip, host.public_ip], keys)
    hostkeys.write_known_hosts(state.known_hosts, lines)
    hostkeys.ssh_config(state.ssh_config, key=state.ssh_key, known_hosts=state.known_hosts,
                        hosts={name: h.address for name, h in state.hosts.items()},
                        jump_pattern=_host_pattern(infra.parameters.get("SubnetCidr", "")))


def push_app(state: EnvState, app_source: Path = APP_SOURCE) -> str:
    """Push ``app_source`` as the first commit of the CI server's repository; return its revision."""
    ssh = gitrepo.ssh_command(state.ssh_key, state.known_hosts)
    revision = gitrepo.create_app_repo(app_source, state.path / "app", state.git_remote)
    gitrepo.push(state.path / "app", ssh)
    return revision


def _host_pattern(cidr: str) -> str:
    """``10.64.1.0/24`` → ``10.64.1.*`` (ssh_config patterns have no CIDR)."""
    net = ipaddress.ip_network(cidr or "0.0.0.0/0")
    octets = str(net.network_address).split(".")
    keep = net.prefixlen // 8
    return ".".join(octets[:keep] + ["*"])


def converge(state: EnvState, backend: Backend, *, say: Say) -> ansible.PlaybookResult:
    """Run the playbook against the environment's CI hosts (again)."""
    say("configuring the CI server and agent with Ansible ...")
    checkpoint("playbook")
    wheel = build_wheel(state.path / "dist")
    extra = site.playbook_vars(state, backend, wheel)
    inventory = ansible.write_inventory(state.path, run_id=state.run_id, region=backend.region,
                                        endpoint_url=backend.endpoint_url, ssh_key=state.ssh_key,
                                        known_hosts=state.known_hosts)
    return ansible.run_playbook(inventory=inventory, extra_vars=extra, aws_env=backend.env(), log_dir=state.logs)


def build_wheel(out: Path) -> Path:
    """phoenixci's own wheel from this checkout (reproducible: same code, same bytes)."""
    root = Path(__file__).resolve().parents[2]
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "-w", str(out), str(root)], capture_output=True, text=True, env=env, cwd=root)
    wheels = sorted(out.glob("phoenixci-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise PhoenixError(f"cannot build phoenixci's wheel: {proc.stderr.strip()[-400:]}")
    shutil.rmtree(root / "build", ignore_errors=True)
    return wheels[0]


def save_run_directory(state: EnvState, say: Say) -> None:
    """Gather builds' logs, consoles, journals and stack events before teardown (best effort)."""
    from phoenixci.env.collect import collect

    try:
        with get_backend(state.backend) as backend:
            say(f"run directory (logs, consoles, journals, stack events): {collect(state, backend)}")
    except (PhoenixError, OSError) as e:
        say(f"run directory {state.logs}: could not gather everything ({e})")


def down(directory: Path, *, say: Say, collect: bool = False) -> list[str]:
    """Remove everything of the environment and prove nothing is left (``collect``: save the
    run directory first)."""
    state = EnvState.load(directory)
    if state is None:
        raise ConfigError(f"no environment is up in {directory}: nothing to take down")
    with shielded("teardown of the environment"):
        if collect:
            save_run_directory(state, say)
        return _down(state, directory, say)


def _down(state: EnvState, directory: Path, say: Say) -> list[str]:
    state.phase = "removing"
    state.save()
    removed: list[str] = []
    cloud_ready = bool(state.cloud_dir) and _cloud_ready(state.cloud_dir)
    if not state.cloud_dir or cloud_ready:
        # on the local cloud this proves the run's resources are gone through the API before the
        # daemon (and with it everything it made) stops; on AWS it is the teardown itself
        removed += _remove_by_tag(state, say)
    if state.cloud_dir:
        from phoenixci.localcloud import daemon

        say("stopping the local cloud ...")
        swept = daemon.stop(Path(state.cloud_dir))
        removed += [f"swept {s}" for s in swept]
    state.discard()
    return removed


def _remove_by_tag(state: EnvState, say: Say) -> list[str]:
    removed: list[str] = []
    with get_backend(state.backend) as backend:
        site.stop_worker(state)  # no release may start after the listing below
        cfn, s3, ec2 = backend.client("cloudformation"), backend.client("s3"), backend.client("ec2")
        for app in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=state.run_id):
            say(f"deleting {app.name} ...")
            stacks.delete(cfn, s3, app.name)
            removed.append(f"stack {app.name}")
        removed += leaks.sweep(backend, state.run_id)
        with contextlib.suppress(Exception):
            ec2.delete_key_pair(KeyName=state.key_name)
        left = leaks.leftovers(backend, state.run_id)
        if left:
            raise LeakError(f"still left after down: {'; '.join(left)}", leftovers=left)
    return removed


def _cloud_ready(cloud_dir: str) -> bool:
    """The environment's cloud daemon runs and answers (an interrupted start may not have)."""
    from phoenixci.localcloud import daemon

    return daemon.running_pid(Path(cloud_dir)) is not None and (Path(cloud_dir) / "env").exists()
