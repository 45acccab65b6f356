"""``python3 -m phoenixapp`` serves the app (see ``phoenixapp.web.main``)."""
from __future__ import annotations

from phoenixapp.web import main

if __name__ == "__main__":
    raise SystemExit(main())
