"""phoenixci: a phoenix-server CI pipeline and the pytest harness that proves it."""
from __future__ import annotations

__version__ = "0.1.0"
