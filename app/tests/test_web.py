"""Tests of the WSGI app: called directly, and once through a real server on 127.0.0.1."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from phoenixapp import web


def call(path: str, method: str = "GET", query: str = "") -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(web.application(environ, start_response))
    return seen["status"], seen["headers"], body


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"name": "phoenixapp", "revision": "a" * 40, "build": "7", "files": []}))
    monkeypatch.setenv("PHOENIXAPP_MANIFEST", str(path))
    return path


def test_health_is_ok_json() -> None:
    status, headers, body = call("/health")
    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}


def test_version_reads_the_manifest(manifest: Path) -> None:
    status, _, body = call("/version")
    assert status == "200 OK"
    assert json.loads(body) == {"name": "phoenixapp", "revision": "a" * 40, "build": "7"}


def test_version_without_manifest_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIXAPP_MANIFEST", str(tmp_path / "missing.json"))
    _, _, body = call("/version")
    assert json.loads(body)["revision"] == "unknown"


def test_home_shows_greeting_and_revision(manifest: Path) -> None:
    status, headers, body = call("/", query="name=Ada")
    assert status == "200 OK"
    assert headers["Content-Type"].startswith("text/html")
    assert b"Hello, Ada!" in body
    assert ("a" * 40).encode() in body


def test_home_is_the_static_template_filled_in(manifest: Path) -> None:
    """The page is templates/index.html: what a user edits there is what the app serves."""
    template = web.TEMPLATE.read_text(encoding="utf-8")
    _, _, body = call("/", query="name=<b>")
    page = body.decode()
    static = template.split("<h1", 1)[0]
    assert page.startswith(static)
    assert "${" not in page
    assert "&lt;b&gt;" in page and "<b>" not in page


def test_unknown_path_is_404_json() -> None:
    status, headers, body = call("/nope")
    assert status == "404 Not Found"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"] == "not found"


def test_post_is_rejected() -> None:
    status, _, _ = call("/health", method="POST")
    assert status.startswith("405")


@pytest.fixture
def server() -> Iterator[str]:
    srv = web.make_app_server("127.0.0.1", 0)
    # shutdown() waits for serve_forever's next poll: its default 0.5 s was up to half a second of every build
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_real_server_over_http(server: str, manifest: Path) -> None:
    with urllib.request.urlopen(f"{server}/health", timeout=5) as resp:
        assert resp.status == 200
        assert json.loads(resp.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{server}/version", timeout=5) as resp:
        assert json.loads(resp.read())["build"] == "7"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server}/missing", timeout=5)
    assert err.value.code == 404
