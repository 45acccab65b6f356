"""The deploy's phase clock: seconds per phase for its report (and bench/pipeline.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def _process_age() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat), None where unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PhaseClock:
    """Seconds per phase, for the deploy's report (and bench/pipeline.py). ``setup`` is what
    came before the first phase: the interpreter, imports, clients and the lookups."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        age = _process_age()
        if age is not None:
            self.laps["setup"] = round(age, 3)
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self._last, 3)
        self._last = now
