"""The default health gate against the real app over real HTTP on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phoenixci.errors import HealthCheckError
from phoenixci.pipeline.health import Target, http_health_check, probe
from phoenixci.util import free_port, wait_until

pytestmark = pytest.mark.integration

APP_DIR = Path(__file__).resolve().parents[2] / "app"
REVISION = "c0ffee" + "0" * 34


@pytest.fixture(scope="module")
def app_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """phoenixapp serving a manifest for REVISION, as it would on a new server."""
    manifest = tmp_path_factory.mktemp("release") / "manifest.json"
    manifest.write_text(json.dumps({"name": "phoenixapp", "revision": REVISION, "build": "7"}))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(APP_DIR), PHOENIXAPP_MANIFEST=str(manifest),
               HOST="127.0.0.1", PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "phoenixapp"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: probe("127.0.0.1", port).health_status == 200, timeout=15, what="phoenixapp")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_passes_when_the_new_server_reports_its_revision(app_port: int) -> None:
    http_health_check(Target("i-new", "127.0.0.1", app_port, REVISION), timeout=5)


def test_fails_when_the_server_serves_another_revision(app_port: int) -> None:
    with pytest.raises(HealthCheckError) as info:
        http_health_check(Target("i-new", "127.0.0.1", app_port, "f" * 40), timeout=1)
    message = str(info.value)
    assert "i-new" in message and "/health=200" in message and REVISION in message


def test_fails_when_nothing_listens() -> None:
    port = free_port()
    with pytest.raises(HealthCheckError) as info:
        http_health_check(Target("i-dead", "127.0.0.1", port, REVISION), timeout=1)
    assert "did not become healthy within 1s" in str(info.value)
    assert "Connection refused" in str(info.value)


def test_stops_at_once_when_the_server_gave_up() -> None:
    port, calls = free_port(), []

    def gave_up() -> str:
        calls.append(1)
        return "its bootstrap failed: phoenixapp.service keeps exiting" if len(calls) >= 2 else ""

    started = time.monotonic()
    with pytest.raises(HealthCheckError) as info:
        http_health_check(Target("i-dead", "127.0.0.1", port, REVISION, gave_up=gave_up), timeout=60)
    assert time.monotonic() - started < 10, "the gate waited instead of stopping when the server gave up"
    assert str(info.value) == (f"new server i-dead (127.0.0.1:{port}) will not serve {REVISION}: its bootstrap "
                               "failed: phoenixapp.service keeps exiting (not waiting out the 60s health timeout)")


def test_a_healthy_server_passes_whatever_its_console_says(app_port: int) -> None:
    http_health_check(Target("i-new", "127.0.0.1", app_port, REVISION, gave_up=lambda: "stale"), timeout=5)
