"""What an instance's boot has reached, read from its own /run (through /proc/<PID 1>/root).

Phases: ``booting`` (systemd is up, cloud-init has not started), ``cloud-init`` (it runs, or its
result cannot be read yet), ``ready`` (cloud-init's result.json lists no errors) and ``failed``
(it lists some). The runtime adds the phases before PID 1: absent, stopped, starting.
"""
from __future__ import annotations

import json
from pathlib import Path


def cloud_init_phase(run: Path) -> str:
    """booting | cloud-init | ready | failed, from the instance's /run directory ``run``."""
    result = run / "cloud-init/result.json"
    if result.exists():
        try:
            errors = json.loads(result.read_text())["v1"].get("errors", [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "cloud-init"  # being written, or not cloud-init's: the next look decides
        return "failed" if errors else "ready"
    if (run / "cloud-init").exists():
        return "cloud-init"
    return "booting"
