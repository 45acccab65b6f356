"""Render a page as a visitor sees it: Debian's headless Chromium, a fresh profile each time."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from phoenixci.errors import ConfigError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=30000", "--run-all-compositor-stages-before-draw"]


def render(url: str, work_dir: Path, *, screenshot: Path | None = None, timeout: float = 120) -> str:
    """The text of ``url`` after its scripts ran (and a PNG screenshot if asked)."""
    binary = shutil.which("chromium")
    if binary is None:
        raise ConfigError("Debian's chromium is not installed: `make setup` installs it (apt-get install chromium)")
    with tempfile.TemporaryDirectory(dir=work_dir) as profile:
        args = [binary, *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=timeout,
                             check=True).stdout
        if screenshot is not None:
            subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, timeout=timeout,
                           check=True)
    text = re.sub(r"<(svg|style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))
