"""A CPU reference for the benchmarks: the same fixed pure-Python loop before and after a run.

This machine is a VM whose CPU speed varies with what else its host runs: with the project's
.venv Python the loop below took 0.10 s at one moment and 0.14-0.20 s within the same minute, with
nothing of ours running and no steal time reported. The benchmarks print this figure beside their
timings, so a run on a slowed machine can be told apart from one on the same footing.
"""
from __future__ import annotations

import time

LOOP = 5_000_000


def cpu_reference(repeat: int = 3) -> float:
    """Seconds for the loop on one core: the best of ``repeat`` runs (lower is faster)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        total = 0
        for i in range(LOOP):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)
