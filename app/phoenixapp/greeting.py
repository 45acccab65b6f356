"""The app's one piece of business logic: a pure function with a unit test.

Workshop exercise ("fail fast"): change the text below, commit and push; the pipeline's
test stage fails on ``tests/test_greeting.py`` and nothing is packaged or deployed.
"""
from __future__ import annotations


def greeting(name: str) -> str:
    """Return the greeting shown on the home page, e.g. ``Hello, world!``."""
    name = name.strip() or "world"
    return f"Hello, {name}!"
