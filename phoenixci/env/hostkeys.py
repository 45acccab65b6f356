"""SSH host keys pinned from each instance's console output, never accepted on first sight.

cloud-init prints the instance's public host keys between ``-----BEGIN SSH HOST KEY KEYS-----``
and ``-----END SSH HOST KEY KEYS-----`` on the console; ``GetConsoleOutput`` returns it, on AWS
as on the local cloud. The keys become ``known_hosts`` lines for every address of the host.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from phoenixci.errors import PhoenixError
from phoenixci.util import WaitTimeout, wait_until

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S)
_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) ([A-Za-z0-9+/=]+)", re.M)


class HostKeyError(PhoenixError):
    """An instance's host key could not be read from its console."""


def parse_host_keys(console: str) -> list[str]:
    """``["ssh-ed25519 AAAA…", …]`` from a console text (the last block printed wins)."""
    blocks = _BLOCK.findall(console)
    if not blocks:
        return []
    return [f"{m.group(1)} {m.group(2)}" for m in _KEY.finditer(blocks[-1])]


def console_output(ec2: Any, instance_id: str) -> str:
    try:
        out = ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
    except ClientError as e:
        raise HostKeyError(f"cannot read the console of {instance_id}: "
                           f"{e.response.get('Error', {}).get('Message', e)}") from e
    return str(out)  # botocore has already decoded the base64


def wait_for_host_keys(ec2: Any, instance_id: str, *, timeout: float = 300.0) -> list[str]:
    """Poll the console until cloud-init has printed the host keys."""
    found: list[str] = []

    def printed() -> bool:
        nonlocal found
        found = parse_host_keys(console_output(ec2, instance_id))
        return bool(found)

    try:
        wait_until(printed, timeout=timeout, interval=1.0,
                   what=f"{instance_id} to print its SSH host keys on the console")
    except WaitTimeout as e:
        raise HostKeyError(f"{instance_id} printed no SSH host keys on its console within {timeout:g}s "
                           "(did cloud-init run? see `aws ec2 get-console-output`)") from e
    return found


def known_hosts_lines(addresses: Iterable[str], keys: Iterable[str]) -> list[str]:
    names = ",".join(a for a in addresses if a)
    return [f"{names} {key}" for key in keys]


def write_known_hosts(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    tmp.replace(path)


def pin(ec2: Any, known_hosts: Path, instance_id: str, addresses: Iterable[str], *, timeout: float = 300.0) -> None:
    """Add ``instance_id``'s host keys (from its console) for ``addresses`` to ``known_hosts``."""
    keys = wait_for_host_keys(ec2, instance_id, timeout=timeout)
    old = known_hosts.read_text().splitlines() if known_hosts.exists() else []
    write_known_hosts(known_hosts, [*old, *known_hosts_lines(addresses, keys)])


def ssh_config(path: Path, *, key: Path, known_hosts: Path, hosts: dict[str, str], jump_pattern: str) -> None:
    """An ssh_config for the environment: each CI host by name or address, app servers
    (``jump_pattern``, e.g. ``10.64.1.*``) through the CI server, every host key pinned."""
    common = (f"  User admin\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts}\n"
              "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n")
    text = "".join(f"Host {name} {address}\n  HostName {address}\n{common}" for name, address in hosts.items())
    others = " ".join(f"!{address}" for address in hosts.values())
    text += f"Host {jump_pattern} {others}\n  ProxyJump ci-server\n{common}"
    path.write_text(text)
