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
