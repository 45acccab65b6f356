"""In-process fixes to moto's IAM evaluation, so the local cloud decides like AWS.

moto 5.2.x evaluates identity policies against resource ``*`` for most services,
never checks ``iam:PassRole`` and mis-evaluates trust policies. Each fix lives in
its own module (see DESIGN.md, "Where moto must be extended in-process") and
patches moto internals, hence the pinned version range.

``apply()`` installs every fix once (thread-safe, idempotent); ``is_applied()``
tells whether it ran.
"""
from __future__ import annotations

import importlib
import logging
import threading
from importlib import metadata

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

SUPPORTED_MOTO = ((5, 2, 5), (5, 3, 0))  # >= first, < second

# Install order matters: resource ARNs and the caller capture wrap the
# authorization entry point before PassRole wraps it again.
_MODULES = (
    "phoenixci.localcloud.patches._caller",
    "phoenixci.localcloud.patches.resource_arns",
    "phoenixci.localcloud.patches.ec2_denial",
    "phoenixci.localcloud.patches.trust",
    "phoenixci.localcloud.patches.cfn_instance",  # before passrole, which wraps it
    "phoenixci.localcloud.patches.cfn_bucket",
    "phoenixci.localcloud.patches.cfn_sg_egress",
    "phoenixci.localcloud.patches.passrole",
    "phoenixci.localcloud.patches.cfn_rollback",
    "phoenixci.localcloud.patches.cfn_delete",
    "phoenixci.localcloud.patches.ec2_nacl",
    "phoenixci.localcloud.patches.cfn_nacl",  # after ec2_nacl, whose semantics it uses
    "phoenixci.localcloud.patches.cfn_role_policies",
    "phoenixci.localcloud.patches.cfn_yaml_dates",
    "phoenixci.localcloud.patches.cfn_vpc_attributes",
    "phoenixci.localcloud.patches.cfn_bucket_policy",
    "phoenixci.localcloud.patches.request_conditions",  # identity-policy conditions, tag-on-create
    "phoenixci.localcloud.patches.cfn_caller",  # after cfn_rollback and cfn_delete, which it relies on
    "phoenixci.localcloud.patches.eip_semantics",
    "phoenixci.localcloud.patches.auto_public_ip",  # after eip_semantics, whose pool it shares
    "phoenixci.localcloud.patches.eip_events",  # after eip_semantics: a move is one outermost call
    "phoenixci.localcloud.patches.console_output",
    "phoenixci.localcloud.patches.availability_zones",
    "phoenixci.localcloud.patches.secure_transport",  # aws:SecureTransport from the request's transport
    "phoenixci.localcloud.patches.bucket_policy_deny",  # a bucket policy's Deny on bucket requests too
    "phoenixci.localcloud.patches.expired_credentials",  # expired role credentials refused
    "phoenixci.localcloud.patches.region_refusal",  # last: the outermost check, before any authorization
)

_lock = threading.Lock()
_applied = False


class MotoCompatError(PhoenixError):
    """The installed moto is not one these patches were written and tested for."""


def _parse_version(text: str) -> tuple[int, int, int]:
    parts: list[int] = []
    for chunk in text.split(".")[:3]:
        digits = "".join(ch for ch in chunk if ch.isdigit()) or "0"
        parts.append(int(digits))
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def check_moto_version(version: str | None = None) -> str:
    """Return the moto version, or raise MotoCompatError when it is outside the pin."""
    if version is None:
        try:
            version = metadata.version("moto")
        except metadata.PackageNotFoundError as exc:
            raise MotoCompatError("moto is not installed") from exc
    low, high = SUPPORTED_MOTO
    if not low <= _parse_version(version) < high:
        raise MotoCompatError(
            f"moto {version} is not supported by phoenixci.localcloud.patches "
            f"(need >={'.'.join(map(str, low))},<{'.'.join(map(str, high))}); "
            "re-verify every patch against the new moto before widening the pin")
    return version


def require(owner: object, name: str) -> object:
    """Return ``owner.name`` or raise MotoCompatError naming the missing symbol."""
    try:
        return getattr(owner, name)
    except AttributeError as exc:
        owner_name = getattr(owner, "__qualname__", getattr(owner, "__name__", repr(owner)))
        raise MotoCompatError(
            f"moto changed: {owner_name}.{name} is missing; the patch needs updating") from exc


def apply() -> None:
    """Install every fix into the running process's moto (safe to call repeatedly)."""
    global _applied
    if _applied:
        return
    with _lock:
        if _applied:
            return
        version = check_moto_version()
        modules = [importlib.import_module(name) for name in _MODULES]
        for module in modules:  # every symbol first, so a mismatch installs nothing
            module.check()
        for module in modules:
            module.install()
        _applied = True
        log.info("applied %d moto patches to moto %s", len(_MODULES), version)


def is_applied() -> bool:
    """True once apply() has installed the fixes in this process."""
    return _applied


__all__ = ["MotoCompatError", "apply", "check_moto_version", "is_applied", "require"]
