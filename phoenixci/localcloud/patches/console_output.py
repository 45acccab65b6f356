"""GetConsoleOutput answers with the instance's real console, as EC2 does.

AWS behaviour restored: ``GetConsoleOutput`` returns what the instance printed on its serial
console — on Debian's EC2 images that includes cloud-init's output with the
``-----BEGIN SSH HOST KEY KEYS-----`` block, which is how clients pin host keys without
trusting the first connection. An instance that printed nothing has no ``Output``.
moto 5.2.5: a fixed sample text from 2006 for every instance.

The local cloud registers where consoles live with ``set_source`` (instance id → text or None).

moto 5.2.5 hook: ``moto.ec2.responses.general.General.get_console_output``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

ConsoleSource = Callable[[str], "str | None"]
_source: ConsoleSource | None = None


def set_source(source: ConsoleSource | None) -> None:
    """Where console text comes from (the local cloud's runtime); None restores 'no output'."""
    global _source
    _source = source


def _get_console_output(self: object) -> object:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.utils import Base64EncodedString

    instance_id = self._get_param("InstanceId")  # type: ignore[attr-defined]
    instance = self.ec2_backend.get_instance(instance_id)  # type: ignore[attr-defined]  # raises NotFound
    text = None
    if _source is not None:
        try:
            text = _source(instance.id)
        except OSError as e:
            log.warning("console of %s unreadable: %s", instance.id, e)
    result: dict[str, object] = {"InstanceId": instance.id, "Timestamp": utcnow()}
    if text:
        result["Output"] = Base64EncodedString.from_raw_string(text[-65536:])  # EC2 keeps the last 64 KB
    return ActionResult(result)


def check() -> None:
    from moto.ec2.responses.general import General

    from phoenixci.localcloud.patches import require

    require(General, "get_console_output")


def install() -> None:
    from moto.ec2.responses.general import General

    from phoenixci.localcloud.patches._caller import is_patched, mark

    if is_patched(General.get_console_output):
        return
    General.get_console_output = mark(_get_console_output)
