"""Shared by tests/unit/test_fetch_artifact.py and tests/integration/test_fetch_artifact_moto.py:
the artifact fetcher (as a module and as a subprocess) and a tiny fake IMDSv2 on 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "files" / "fetch_artifact.py"
REGION = "us-east-1"


def load_fetch_artifact() -> Any:
    """infra/files/fetch_artifact.py imported as a module (for its functions and exit codes)."""
    spec = importlib.util.spec_from_file_location("fetch_artifact", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_fetch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the fetcher as the app server does: its own process, only the given environment."""
    base = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


class _FakeImds(http.server.BaseHTTPRequestHandler):
    token = "imds-token-123"
    creds: dict[str, str] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802
        ok = self.path == "/latest/api/token" and \
            self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._reply(200 if ok else 400, self.token if ok else "")

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self._reply(401, "")
        elif self.path == "/latest/meta-data/iam/security-credentials/":
            self._reply(200, "app-role")
        elif self.path == "/latest/meta-data/iam/security-credentials/app-role":
            self._reply(200, json.dumps({"Code": "Success", "Token": "", **self.creds}))
        elif self.path == "/latest/meta-data/placement/region":
            self._reply(200, REGION)
        else:
            self._reply(404, "")

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def fake_imds(creds: dict[str, str]) -> Iterator[str]:
    """An IMDSv2 (token required) handing out ``creds`` for role ``app-role``; yields its URL."""
    handler = type("Imds", (_FakeImds,), {"creds": creds})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
