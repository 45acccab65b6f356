"""The WSGI application and a stdlib server for it.

Routes: ``/`` (HTML: ``templates/index.html``), ``/health`` (JSON readiness), ``/version`` (JSON from the package
manifest), anything else 404 (JSON). Configuration comes from the environment:
``PHOENIXAPP_MANIFEST`` (manifest path), ``HOST`` and ``PORT`` (listen address).
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import os
import string
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from phoenixapp.greeting import greeting

log = logging.getLogger(__name__)

APP_NAME = "phoenixapp"
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080

StartResponse = Callable[..., Any]


def manifest_path() -> Path:
    """Where the manifest is: ``$PHOENIXAPP_MANIFEST`` or ``manifest.json`` beside the package."""
    env = os.environ.get("PHOENIXAPP_MANIFEST")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "manifest.json"


def app_version() -> str:
    """The release number from ``VERSION`` beside the package (``unknown`` if absent)."""
    try:
        return (Path(__file__).resolve().parent.parent / "VERSION").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def read_version() -> dict[str, str]:
    """Name, revision and build from the manifest; revision ``unknown`` without one."""
    info = {"name": APP_NAME, "revision": "unknown", "build": "unknown"}
    path = manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return info
    except (OSError, ValueError) as e:
        log.warning("cannot read manifest %s: %s", path, e)
        return info
    if isinstance(data, dict):
        for key in info:
            if data.get(key) not in (None, ""):
                info[key] = str(data[key])
    return info


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(payload)))])
    return [payload]


TEMPLATE = Path(__file__).resolve().parent / "templates" / "index.html"


def render_home(name: str = "") -> bytes:
    """The home page: ``templates/index.html`` with its ``${…}`` fields filled in, HTML-escaped."""
    version = read_version()
    fields = {"greeting": greeting(name), "version": app_version(), "revision": version["revision"],
              "build": version["build"]}
    page = string.Template(TEMPLATE.read_text(encoding="utf-8"))
    return page.safe_substitute({k: html.escape(v) for k, v in fields.items()}).encode()


def _home(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    page = render_home(query.get("name", [""])[0])
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(page)))])
    return [page]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point."""
    path = environ.get("PATH_INFO", "/") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return _json(start_response, "405 Method Not Allowed", {"error": "method not allowed"})
    if path == "/":
        return _home(environ, start_response)
    if path == "/health":
        return _json(start_response, "200 OK", {"status": "ok"})
    if path == "/version":
        return _json(start_response, "200 OK", read_version())
    return _json(start_response, "404 Not Found", {"error": "not found", "path": path})


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s - %s", self.address_string(), format % args)


def make_app_server(host: str, port: int) -> WSGIServer:
    """A wsgiref server bound to ``host:port`` (port 0 picks a free one)."""
    return make_server(host, port, application, handler_class=_QuietHandler)


def main(argv: list[str] | None = None) -> int:
    """Serve the app until interrupted. ``--port``/``--host`` override ``PORT``/``HOST``."""
    parser = argparse.ArgumentParser(prog="phoenixapp", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    with make_app_server(args.host, args.port) as server:
        log.info("phoenixapp serving on http://%s:%d", args.host, server.server_port)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("stopping")
    return 0
