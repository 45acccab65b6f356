"""Signals and teardown: SIGTERM behaves like Ctrl-C (so every ``finally`` runs), and teardown,
once started, is shielded from further signals: it finishes, or says exactly what is left.

``checkpoint(name)`` is the test-only hook that makes a signal land in a named phase for sure:
with ``PHOENIXCI_TEST_SIGNAL_AT=name`` (or ``name:+SECONDS``) the process sends itself SIGTERM
when it reaches that phase (after that delay). Stack creation takes a fraction of a second on
the local cloud, so timing a signal from outside would hit a phase only by luck.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

TEST_SIGNAL_AT = "PHOENIXCI_TEST_SIGNAL_AT"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def terminate_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def shielded(what: str) -> Iterator[None]:
    """Run ``what`` (a teardown) to its end: SIGINT/SIGTERM only print that it is running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: FrameType | None) -> None:
        print(f"{what} is running and finishes by itself (signal {signal.Signals(signum).name} ignored)",
              file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        checkpoint("teardown")
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def checkpoint(name: str) -> None:
    """Test-only: signal this process on reaching phase ``name`` (see the module docstring)."""
    wanted = os.environ.get(TEST_SIGNAL_AT, "")
    if not wanted:
        return
    phases = dict((p.partition(":")[0], p.partition(":")[2]) for p in wanted.split(","))
    if name not in phases:
        return
    delay = float(phases[name].lstrip("+") or 0)
    log.warning("test hook: SIGTERM at phase %s (+%gs)", name, delay)
    if delay:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)).start()
    else:
        os.kill(os.getpid(), signal.SIGTERM)
