"""Root conftest: the phoenixci plugin is loaded through its pytest11 entry point.

When the package is not installed (a bare checkout), load the plugin explicitly so the
fixtures and options exist either way.
"""
from __future__ import annotations

import importlib.metadata

try:
    _eps = importlib.metadata.entry_points(group="pytest11")
    _installed = any(ep.value == "phoenixci.plugin" for ep in _eps)
except Exception:  # noqa: BLE001 - metadata lookup is best effort
    _installed = False

if not _installed:
    pytest_plugins = ["phoenixci.plugin"]
