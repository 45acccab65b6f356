"""Unit tests of the greeting. Break ``phoenixapp/greeting.py`` to watch the pipeline stop."""
from __future__ import annotations

from phoenixapp.greeting import greeting


def test_greets_by_name() -> None:
    assert greeting("Ada") == "Hello, Ada!"


def test_greets_the_world_when_no_name() -> None:
    assert greeting("") == "Hello, world!"
    assert greeting("   ") == "Hello, world!"
