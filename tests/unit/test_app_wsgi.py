"""The dummy app's WSGI contract, as the deploy health gate and /version checks rely on it."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

pytestmark = pytest.mark.unit

APP_DIR = Path(__file__).resolve().parents[2] / "app"


@pytest.fixture(scope="module")
def web() -> Iterator[ModuleType]:
    sys.path.insert(0, str(APP_DIR))
    try:
        from phoenixapp import web as module
        yield module
    finally:
        sys.path.remove(str(APP_DIR))


def call(web: ModuleType, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=dict(headers))

    body = b"".join(web.application(environ, start_response))
    return seen["status"], seen["headers"], body


def test_health(web: ModuleType) -> None:
    status, headers, body = call(web, "/health")
    assert (status, headers["Content-Type"]) == ("200 OK", "application/json")
    assert json.loads(body) == {"status": "ok"}


def test_version_from_manifest(web: ModuleType, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"name": "phoenixapp", "revision": "b" * 40, "build": "12",
                                    "files": []}))
    monkeypatch.setenv("PHOENIXAPP_MANIFEST", str(manifest))
    status, _, body = call(web, "/version")
    assert status == "200 OK"
    assert json.loads(body) == {"name": "phoenixapp", "revision": "b" * 40, "build": "12"}
    assert ("b" * 40).encode() in call(web, "/")[2]


def test_version_without_manifest(web: ModuleType, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIXAPP_MANIFEST", str(tmp_path / "absent.json"))
    assert json.loads(call(web, "/version")[2])["revision"] == "unknown"


def test_default_manifest_is_beside_the_package(web: ModuleType,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHOENIXAPP_MANIFEST", raising=False)
    assert web.manifest_path() == APP_DIR / "manifest.json"


def test_unknown_path_is_404_json(web: ModuleType) -> None:
    status, headers, body = call(web, "/admin")
    assert status == "404 Not Found"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "not found", "path": "/admin"}
