"""The package proxy's cache of immutable files: which paths may be kept (``cacheable``), one
entry per host+path under a hashed name (``Cache``), written under a temporary name and renamed
into place only when complete (``PendingEntry``), bodies up to ``MAX_CACHED`` bytes."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("phoenixci.localcloud.pkgproxy")  # the package proxy's log lines, as before

MAX_CACHED = 512 * 1024 * 1024
KEPT_HEADERS = ("content-type", "last-modified", "etag")  # response headers a cache hit repeats
_IMMUTABLE = re.compile(r"/(pool|by-hash)/|\.(deb|udeb|whl|tar\.gz|zip)$")
_INDEX = re.compile(r"/(InRelease|Release(\.gpg)?|(Packages|Sources|Contents-|Translation-)[^/]*)$")


def cacheable(path: str) -> bool:
    """Immutable content (pool/, by-hash/, package files); never an index file or a listing."""
    path = path.split("?", 1)[0]
    return bool(_IMMUTABLE.search(path)) and not _INDEX.search(path) and not path.endswith("/")


class Cache:
    """200 responses in ``directory``: one file per host+path (a JSON line with the length and
    a few headers, then the body), written under a temporary name and renamed when complete."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for part in self.directory.glob(".part-*"):  # left by a crash
            part.unlink(missing_ok=True)

    def entry(self, host: str, path: str) -> Path:
        return self.directory / hashlib.sha256(f"{host}{path}".encode()).hexdigest()

    def open(self, entry: Path) -> tuple[BinaryIO, list[tuple[str, str]], int] | None:
        """(file positioned at the body, headers, body length) of a complete entry, else None."""
        try:
            f = entry.open("rb")
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(f.readline())
            size = os.fstat(f.fileno()).st_size - f.tell()
            if size == meta["length"]:
                return f, [(str(k), str(v)) for k, v in meta["headers"]], size
        except (ValueError, KeyError, TypeError):
            pass
        f.close()
        log.warning("cache entry %s is damaged; fetching it again", entry.name)
        entry.unlink(missing_ok=True)
        return None


class PendingEntry:
    """One cache entry being written; a failed write only means it is not kept."""

    def __init__(self, entry: Path, headers: list[tuple[str, str]], length: int) -> None:
        self.entry, self.length, self.written = entry, length, 0
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".part-")
        self.tmp, self.file = Path(tmp), os.fdopen(fd, "wb")
        self.ok = self._do(json.dumps({"length": length, "headers": headers}).encode() + b"\n")

    def _do(self, data: bytes) -> bool:
        try:
            self.file.write(data)
            return True
        except OSError as e:
            log.warning("cache write failed (%s); %s not cached", e, self.entry.name)
            return False

    def write(self, data: bytes) -> None:
        self.ok = self.ok and self._do(data)
        self.written += len(data)

    def finish(self) -> None:
        """Rename into place when every byte came, else drop."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.ok and self.written == self.length:
                os.replace(self.tmp, self.entry)
                return
        except OSError as e:
            log.warning("cache entry %s not kept: %s", self.entry.name, e)
        self.file.close()
        self.tmp.unlink(missing_ok=True)
