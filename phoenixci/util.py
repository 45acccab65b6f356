"""Small helpers shared by the library: waiting, free ports."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

from phoenixci.errors import PhoenixError

T = TypeVar("T")


class WaitTimeout(PhoenixError):
    """``wait_until`` ran out of time; carries the last value or error seen."""

    def __init__(self, message: str, *, last_state: object = None) -> None:
        super().__init__(message)
        self.last_state = last_state


def wait_until(check: Callable[[], T], *, timeout: float, interval: float = 0.2,
               what: str = "condition") -> T:
    """Call ``check`` until it returns a truthy value; return that value.

    Exceptions raised by ``check`` count as "not yet". On timeout raise ``WaitTimeout``
    naming ``what`` and the last state seen (a value or an exception).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - any failure of the probe means "not yet"
            last = e
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r}",
                              last_state=last)
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
