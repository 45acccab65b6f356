"""The wheelhouse mirror serves files read-only over HTTP and stops cleanly."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from phoenixci.localcloud.mirror import MirrorServer

pytestmark = pytest.mark.unit


def test_serves_files_read_only(tmp_path: Path) -> None:
    (tmp_path / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    server = MirrorServer(tmp_path, host="127.0.0.1").start()
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert b"demo-1.0-py3-none-any.whl" in resp.read()
        with urllib.request.urlopen(server.url + "demo-1.0-py3-none-any.whl", timeout=5) as resp:
            assert resp.read() == b"wheel"
        put = urllib.request.Request(server.url + "x.whl", data=b"evil", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(put, timeout=5)
        assert info.value.code == 405
        assert not (tmp_path / "x.whl").exists()
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
