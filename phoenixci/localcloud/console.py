"""An instance's console, as GetConsoleOutput shows it.

EC2's console of a Debian instance carries the kernel's and cloud-init's output (including the
SSH host keys cloud-init prints). A local instance has no kernel of its own: its console is what
PID 1 printed (``console.log`` of the runtime) followed by cloud-init's output log, read from
the instance's overlay (``/var/log/cloud-init-output.log``).
"""
from __future__ import annotations

from pathlib import Path

PARTS = ("console.log", "upper/var/log/cloud-init-output.log")


def console_text(instance_dir: Path) -> str | None:
    """The console of the instance whose runtime directory is ``instance_dir``; None if unknown."""
    if not instance_dir.is_dir():
        return None
    chunks = []
    for rel in PARTS:
        path = instance_dir / rel
        if path.is_file():
            chunks.append(path.read_text(errors="replace"))
    return "".join(chunks)
