"""Package the app at a git revision into a deterministic, checksummed tarball.

Files are read from git objects (never from the working tree), so uncommitted changes cannot
leak into an artifact, and the same revision and build always give byte-identical output:
sorted entries, mtime = commit time, uid/gid 0, empty owner names, modes 0644/0755, and a gzip
stream with mtime 0 and no file name. A ``manifest.json`` (name, revision, build, version and
every file's sha256 and size) sits at the root of the tarball beside the app's files.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phoenixci.errors import PackageError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ARTIFACT_PREFIX = "app"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackageResult:
    """An artifact on disk and what it holds."""

    path: Path
    sha256_path: Path
    sha256: str
    revision: str
    build: str
    manifest: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class _Entry:
    path: str
    mode: int  # git mode: 0o100644, 0o100755 or 0o120000
    data: bytes


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_name(revision: str) -> str:
    """The artifact's file name for a full revision: ``app-<sha40>.tar.gz``."""
    return f"{ARTIFACT_PREFIX}-{revision}.tar.gz"


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], input=stdin,
                              capture_output=True, check=False)
    except FileNotFoundError as e:
        raise PackageError("git is not installed; install git to package the app") from e
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise PackageError(f"git {' '.join(args[:2])} failed in {repo}: {err[-1] if err else '?'}")
    return proc.stdout


def _resolve(repo: Path, revision: str) -> tuple[str, int]:
    """Full commit sha and commit time (seconds) of ``revision``."""
    if not repo.is_dir():
        raise PackageError(f"{repo} does not exist; pass the path of the app's git repository")
    try:
        _git(repo, "rev-parse", "--git-dir")
    except PackageError as e:
        raise PackageError(f"{repo} is not a git repository; pass the path of the repo "
                           "that has the app committed (git init && git commit)") from e
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                   f"{revision}^{{commit}}").decode().strip()
    except PackageError as e:
        raise PackageError(f"unknown revision {revision!r} in {repo}; use a commit sha, branch "
                           "or tag that exists there (see git log --oneline)") from e
    ctime = int(_git(repo, "show", "-s", "--format=%ct", sha).decode().strip())
    return sha, ctime


def _read_tree(repo: Path, sha: str, subdir: str) -> list[_Entry]:
    """Every file under ``subdir`` at commit ``sha``, paths relative to ``subdir``."""
    sub = subdir.strip("/")
    treeish = f"{sha}:{sub}" if sub and sub != "." else f"{sha}^{{tree}}"
    try:
        kind = _git(repo, "cat-file", "-t", treeish).decode().strip()
    except PackageError:
        kind = ""
    if kind != "tree":
        raise PackageError(f"directory {sub!r} does not exist at revision {sha[:12]} in {repo}; "
                           "commit it there or pass the right subdir")
    listing = _git(repo, "ls-tree", "-r", "-z", "--full-tree", treeish)
    wanted: list[tuple[str, int, str]] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, raw_path = record.split(b"\t", 1)
        git_mode, otype, oid = meta.decode().split()
        name = raw_path.decode("utf-8", errors="surrogateescape")
        if otype != "blob":
            log.warning("skipping %s %s in %s (not a file)", otype, name, treeish)
            continue
        wanted.append((name, int(git_mode, 8), oid))
    out = _git(repo, "cat-file", "--batch", stdin="".join(f"{o}\n" for _, _, o in wanted).encode())
    entries: list[_Entry] = []
    pos = 0
    for path, mode, oid in wanted:
        header_end = out.index(b"\n", pos)
        got_oid, _, size = out[pos:header_end].decode().split()
        if got_oid != oid:
            raise PackageError(f"git cat-file returned {got_oid} for {oid}; repository is corrupt?")
        start = header_end + 1
        entries.append(_Entry(path, mode, out[start:start + int(size)]))
        pos = start + int(size) + 1
    return sorted(entries, key=lambda e: e.path)


def _manifest(entries: list[_Entry], *, name: str, revision: str, build: str) -> dict[str, Any]:
    version = next((e.data.decode(errors="replace").strip() for e in entries if e.path == "VERSION"),
                   None)
    files = [{"path": e.path, "sha256": hashlib.sha256(e.data).hexdigest(), "size": len(e.data),
              "mode": "symlink" if e.mode == 0o120000 else oct(_tar_mode(e.mode))[2:]}
             for e in entries]
    return {"name": name, "revision": revision, "build": build, "version": version, "files": files}


def _tar_mode(git_mode: int) -> int:
    if git_mode == 0o120000:
        return 0o777
    return 0o755 if git_mode & 0o111 else 0o644


def _tar_bytes(entries: list[_Entry], mtime: int) -> bytes:
    def info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    dirs = sorted({str(Path(e.path).parents[i]) for e in entries
                   for i in range(len(Path(e.path).parents) - 1)})
    items: list[tuple[str, tarfile.TarInfo, bytes | None]] = [
        (d + "/", info(d, tarfile.DIRTYPE, 0o755), None) for d in dirs]
    for e in entries:
        if e.mode == 0o120000:
            ti = info(e.path, tarfile.SYMTYPE, 0o777)
            ti.linkname = e.data.decode("utf-8", errors="surrogateescape")
            items.append((e.path, ti, None))
        else:
            items.append((e.path, info(e.path, tarfile.REGTYPE, _tar_mode(e.mode), len(e.data)),
                          e.data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _, ti, data in sorted(items, key=lambda item: item[0]):
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def package(repo: Path, revision: str = "HEAD", *, build: str, out_dir: Path,
            subdir: str = "app", name: str = "phoenixapp") -> PackageResult:
    """Package ``subdir`` of ``repo`` at ``revision`` into ``out_dir/app-<sha40>.tar.gz``.

    Also writes ``<artifact>.sha256`` in ``sha256sum`` format. Raises ``PackageError`` for a
    path that is not a git repository, an unknown revision or a missing ``subdir``.
    """
    repo = Path(repo)
    build = str(build)
    if not build.strip():
        raise PackageError("build number is empty; pass the CI build number (e.g. --build 42)")
    sha, ctime = _resolve(repo, revision)
    entries = _read_tree(repo, sha, subdir)
    if any(e.path == MANIFEST_NAME for e in entries):
        raise PackageError(f"{subdir}/{MANIFEST_NAME} is committed at {sha[:12]}, but the package "
                           "step writes that file; rename or remove it from the app")
    manifest = _manifest(entries, name=name, revision=sha, build=build)
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    entries.append(_Entry(MANIFEST_NAME, 0o100644, manifest_bytes))
    payload = _gzip(_tar_bytes(entries, ctime))

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / artifact_name(sha)
        digest = hashlib.sha256(payload).hexdigest()
        sha256_path = path.with_name(path.name + ".sha256")
        _write_atomic(path, payload)
        _write_atomic(sha256_path, f"{digest}  {path.name}\n".encode())
    except OSError as e:
        raise PackageError(f"cannot write the artifact to {out_dir}: {e.strerror or e}; "
                           "pass a writable --out-dir") from e
    log.info("packaged %s at %s (build %s): %s, %d files, sha256 %s",
             subdir, sha[:12], build, path, len(manifest["files"]), digest)
    return PackageResult(path=path, sha256_path=sha256_path, sha256=digest, revision=sha,
                         build=build, manifest=manifest)
