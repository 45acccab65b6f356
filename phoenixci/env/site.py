"""What an environment's pieces need from each other: the key pair, the playbook's variables,
the app's address, the worker's stop before teardown."""
from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from phoenixci import stacks
from phoenixci.backends import Backend
from phoenixci.env.state import EnvState
from phoenixci.errors import PhoenixError
from phoenixci.pipeline.health import probe
from phoenixci.util import WaitTimeout, wait_until

log = logging.getLogger(__name__)

CI_WEB_PORT = 8010
REPO_PATH = "/srv/git/app.git"
#: seconds a new app server has to serve: a local instance boots and serves in ~3 s (30 leaves room for
#: a loaded machine), EC2 in ~1-2 min
LOCAL_HEALTH_TIMEOUT = 30
AWS_HEALTH_TIMEOUT = 600
#: seconds the old app server keeps its open connections after the address moved (the deploy's
#: drain): on the local cloud the address moves before AssociateAddress answers and a request
#: takes milliseconds; on AWS the association spreads for seconds (an ELB deregistration delay)
LOCAL_DRAIN = 1.0
AWS_DRAIN = 5.0


def health_timeout(state: EnvState) -> float:
    """Seconds the pipeline's deploy step gives a new server to serve its release."""
    if state.health_timeout:
        return state.health_timeout
    return LOCAL_HEALTH_TIMEOUT if state.backend.startswith("moto:") else AWS_HEALTH_TIMEOUT


def drain(state: EnvState) -> float:
    """The pipeline deploy's drain for this environment's backend."""
    return LOCAL_DRAIN if state.backend.startswith("moto:") else AWS_DRAIN


def import_key(ec2: Any, state: EnvState) -> None:
    """A new ed25519 key for the environment, imported as its EC2 key pair (tagged)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    state.ssh_key.touch(mode=0o600)
    state.ssh_key.write_bytes(private)
    state.ssh_key.with_suffix(".pub").write_text(public + "\n")
    try:
        ec2.import_key_pair(KeyName=state.key_name, PublicKeyMaterial=public.encode(),
                            TagSpecifications=[{"ResourceType": "key-pair", "Tags": [
                                {"Key": stacks.RUN_ID_TAG, "Value": state.run_id}]}])
    except ClientError as e:
        raise PhoenixError(f"cannot import key pair {state.key_name}: {e.response['Error'].get('Message')}") from e


def public_ip(ec2: Any, instance_id: str) -> str:
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(inst.get("PublicIpAddress") or "")


def _local_cloud_subnet(backend: Backend, subnet_cidr: str) -> dict[str, str]:
    """The local cloud's gateway services for the run's subnet (API and wheelhouse)."""
    found: dict[str, str] = {}

    def listed() -> bool:
        nonlocal found
        found = backend.local_subnet(subnet_cidr)  # type: ignore[attr-defined]
        return bool(found)

    wait_until(listed, timeout=60, interval=0.2, what=f"the local cloud to serve subnet {subnet_cidr}")
    return found


def runs_local_instances(backend: Backend) -> bool:
    return bool(getattr(backend, "runs_instances", False))


def playbook_vars(state: EnvState, backend: Backend, wheel: Path) -> dict[str, Any]:
    """Everything site.yml needs that differs per run. On moto:// the only differences are the
    package source (the cloud's wheelhouse), the API endpoint the instances use and the CA bundle
    that verifies it there (the system store, where cloud-init put the cloud's CA)."""
    cfn = backend.client("cloudformation")
    infra = stacks.describe(cfn, state.infra_stack, resources=False)
    if infra is None:
        raise PhoenixError(f"infrastructure stack {state.infra_stack} does not exist on {backend.url}: "
                           "`phoenixci up` creates it")
    pip_source_args, endpoint, ca_bundle = "", "", ""
    if runs_local_instances(backend):
        from phoenixci.localcloud.instance_layer import INSTANCE_CA_BUNDLE

        subnet = infra.parameters["SubnetCidr"]
        gateway = _local_cloud_subnet(backend, subnet)
        host = str(ipaddress.ip_address(gateway["gateway"]))
        pip_source_args = f"--no-index --find-links {gateway['mirror_url']} --trusted-host {host}"
        endpoint, ca_bundle = gateway["api_url"], INSTANCE_CA_BUNDLE
    state.instance_endpoint = endpoint
    push_key = state.ssh_key.with_suffix(".pub").read_text().strip()
    server = state.hosts["ci-server"]
    return {
        "phoenixci_run_id": state.run_id,
        "phoenixci_secrets_dir": str(state.secrets_dir),
        "phoenixci_wheel": str(wheel),
        "pip_source_args": pip_source_args,
        "aws_region": backend.region,
        "aws_endpoint_url": endpoint,
        "aws_ca_bundle": ca_bundle,
        "infra_stack": state.infra_stack,
        "git_push_keys": [push_key],
        "ci_server_private_ip": server.private_ip,
        "ci_buildbot_url": state.ci_url,
        "phoenixci_health_timeout": health_timeout(state),
        "phoenixci_drain": drain(state),
    }


def wait_serving(state: EnvState, revision: str, *, timeout: float = 600.0) -> None:
    """Wait until the app address serves ``revision``; a failed build ends the wait at once."""
    from phoenixci.env import buildbot

    host, port = state.app_address
    last: Any = None

    def serving() -> bool:
        nonlocal last
        obs = probe(host, port, timeout=2.0)
        if obs.healthy_for(revision):
            return True
        build = buildbot.build_of(state.ci_url, revision)
        if build is not None and build.complete and build.result != "success":
            raise PhoenixError(f"the build of {revision[:12]} failed ({build.state}); see {state.ci_url}#/builders")
        last = obs
        return False

    try:
        wait_until(serving, timeout=timeout, interval=0.5, what=f"{state.app_url} to serve {revision[:12]}")
    except WaitTimeout as e:
        raise PhoenixError(f"{state.app_url} did not serve {revision[:12]} within {timeout:g}s "
                           f"(last answer: {json.dumps(last.__dict__) if last else 'none'}); see {state.ci_url}") from e


def stop_worker(state: EnvState) -> None:
    """Stop the Buildbot worker first, so no release starts while teardown lists app stacks."""
    agent = state.hosts.get("ci-agent")
    if agent is None or not state.known_hosts.exists():
        return
    cmd = state.ssh_argv(agent, "sudo", "systemctl", "stop", "buildbot-worker.service")
    try:
        subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        log.warning("could not stop the worker on %s in time", agent.address)
