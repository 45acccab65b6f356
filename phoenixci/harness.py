"""The lifecycle as plain context managers, shared by the CLI and the pytest fixtures.

``run_context`` → ``key_pair`` → ``infrastructure``: each creates one thing, yields it and
removes it in ``finally``, so the CLI and the tests have one code path for teardown.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from phoenixci import images, stacks
from phoenixci.backends import Backend
from phoenixci.errors import ConfigError, PhoenixError
from phoenixci.leaks import assert_no_leftovers
from phoenixci.pipeline.retire import APP_STACK_PREFIX
from phoenixci.templates import load_template

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return f"phx-{secrets.token_hex(4)}"


def infra_stack_name(run_id: str) -> str:
    return f"phoenixci-{run_id}"


@dataclass(frozen=True)
class KeyPair:
    name: str
    private_key: Path
    public_key: str


@dataclass(frozen=True)
class Infrastructure:
    run_id: str
    stack: stacks.Stack
    key: KeyPair


@contextlib.contextmanager
def key_pair(ec2: Any, run_id: str, directory: Path,
             keep: Callable[[], bool] = lambda: False) -> Iterator[KeyPair]:
    """Generate an ed25519 key, import it as key pair ``phoenixci-<run_id>``, delete it after
    (unless ``keep()`` says the run's resources are being kept for a look)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    name = f"phoenixci-{run_id}"
    path = directory / f"{name}.key"
    path.touch(mode=0o600)
    path.write_bytes(private)
    try:
        ec2.import_key_pair(KeyName=name, PublicKeyMaterial=public.encode(),
                            TagSpecifications=[{"ResourceType": "key-pair", "Tags": [
                                {"Key": stacks.RUN_ID_TAG, "Value": run_id}]}])
    except ClientError as e:
        path.unlink(missing_ok=True)
        raise PhoenixError(f"cannot import key pair {name}: {e.response['Error'].get('Message')}") from e
    try:
        yield KeyPair(name=name, private_key=path, public_key=public)
    finally:
        if keep():
            log.warning("keeping key pair %s; its private key is %s", name, path)
        else:
            with contextlib.suppress(ClientError):
                ec2.delete_key_pair(KeyName=name)
            path.unlink(missing_ok=True)


def default_image_id(ec2: Any) -> str:
    """The AMI to use when none is given: the first image the account can see, by id."""
    images = ec2.describe_images(Owners=["self", "amazon"])["Images"]
    if not images:
        raise ConfigError("no AMI is available: pass --image-id")
    return str(sorted(i["ImageId"] for i in images)[0])


@contextlib.contextmanager
def infrastructure(backend: Backend, run_id: str, *, admin_cidr: str = "127.0.0.1/32",
                   image_id: str | None = None, keep: str = "never",
                   workdir: Path | None = None) -> Iterator[Infrastructure]:
    """Create the infrastructure stack for ``run_id`` (and its key pair); tear both down after.

    ``keep`` follows Molecule: never | on-failure | always. After teardown nothing tagged with
    the run id may remain (LeakError otherwise).
    """
    cfn, ec2, s3 = backend.client("cloudformation"), backend.client("ec2"), backend.client("s3")
    template = load_template("infrastructure")
    failed = False

    def keeping() -> bool:
        return keep == "always" or (keep == "on-failure" and failed)

    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"phoenixci-{run_id}-"))
            cleanup.callback(lambda: None if keeping() else shutil.rmtree(workdir, ignore_errors=True))
        key = cleanup.enter_context(key_pair(ec2, run_id, workdir, keep=keeping))
        params = {"RunId": run_id, "AdminCidr": admin_cidr, "KeyName": key.name,
                  "ImageId": image_id or images.image_for(backend)}
        if getattr(backend, "cloud", None) is not None:
            # real networks on this machine: take a VPC range no other run uses right now
            from phoenixci.localcloud.addressing import free_vpc_cidr

            vpc = free_vpc_cidr(run_id)
            params.update(VpcCidr=vpc, SubnetCidr=vpc.replace(".0.0/16", ".1.0/24"))
        name = infra_stack_name(run_id)
        with stacks.managed(cfn, s3, name, template, params, run_id=run_id, keep=keep) as stack:
            try:
                yield Infrastructure(run_id=run_id, stack=stack, key=key)
            except BaseException:
                failed = True
                raise
            finally:
                if not keeping():
                    # the app servers the pipeline released live in this network: they go first
                    for app in stacks.list_stacks(cfn, prefix=APP_STACK_PREFIX, run_id=run_id):
                        stacks.delete(cfn, s3, app.name)
    if keep != "always":
        assert_no_leftovers(backend, run_id)
