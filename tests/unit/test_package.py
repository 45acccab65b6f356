"""package(): deterministic, checksummed tarballs of the app at a git revision."""
from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from phoenixci.errors import PackageError
from phoenixci.pipeline.package import package

pytestmark = pytest.mark.unit

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    app = repo / "app"
    (app / "phoenixapp").mkdir(parents=True)
    (app / "tests").mkdir()
    (app / "phoenixapp" / "__init__.py").write_text('"""app"""\n')
    (app / "phoenixapp" / "web.py").write_text("def application(e, s):\n    return []\n")
    (app / "tests" / "test_x.py").write_text("def test_x():\n    assert True\n")
    (app / "VERSION").write_text("1.0.0\n")
    (app / "run.sh").write_text("#!/bin/sh\nexec python3 -m phoenixapp\n")
    (app / "run.sh").chmod(0o755)
    (repo / "README.md").write_text("outside the app\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "app")
    return repo


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_same_revision_and_build_give_identical_bytes(repo: Path, tmp_path: Path) -> None:
    a = package(repo, build="1", out_dir=tmp_path / "a")
    (repo / "app" / "VERSION").touch()  # working-tree mtimes must not matter
    b = package(repo, build="1", out_dir=tmp_path / "b")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == b.sha256 == hashlib.sha256(a.path.read_bytes()).hexdigest()


def test_artifact_name_checksum_file_and_revision(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    result = package(repo, "main", build="3", out_dir=tmp_path / "out")
    assert result.revision == head
    assert result.path.name == f"app-{head}.tar.gz"
    assert result.sha256_path.read_text() == f"{result.sha256}  app-{head}.tar.gz\n"
    check = subprocess.run(["sha256sum", "-c", result.sha256_path.name], cwd=result.path.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_tarball_is_normalised(repo: Path, tmp_path: Path) -> None:
    result = package(repo, build="1", out_dir=tmp_path)
    raw = result.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert raw[3] & 0x08 == 0  # no FNAME in the gzip header
    found = members(result.path)
    names = list(found)
    assert names == sorted(names, key=lambda n: n + "/" if found[n].isdir() else n)
    assert "README.md" not in names and not any(n.startswith("app/") for n in names)
    assert {"phoenixapp/web.py", "tests/test_x.py", "VERSION", "manifest.json"} <= set(names)
    for m in found.values():
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == found["VERSION"].mtime
    assert found["run.sh"].mode == 0o755
    assert found["phoenixapp/web.py"].mode == 0o644
    assert found["phoenixapp"].isdir() and found["phoenixapp"].mode == 0o755


def test_manifest_lists_every_file_with_its_sha256(repo: Path, tmp_path: Path) -> None:
    result = package(repo, build="9", out_dir=tmp_path)
    manifest = json.loads(read_member(result.path, "manifest.json"))
    assert manifest == result.manifest
    assert manifest["name"] == "phoenixapp"
    assert manifest["revision"] == result.revision and manifest["build"] == "9"
    assert manifest["version"] == "1.0.0"
    files = {f["path"]: f for f in manifest["files"]}
    assert [f["path"] for f in manifest["files"]] == sorted(files)
    with tarfile.open(result.path) as tar:
        regular = {m.name for m in tar.getmembers() if m.isfile()} - {"manifest.json"}
    assert set(files) == regular
    for name in regular:
        data = read_member(result.path, name)
        assert files[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert files[name]["size"] == len(data)


def test_different_build_changes_only_the_manifest(repo: Path, tmp_path: Path) -> None:
    a = package(repo, build="1", out_dir=tmp_path / "a")
    b = package(repo, build="2", out_dir=tmp_path / "b")
    assert a.sha256 != b.sha256
    assert a.manifest["files"] == b.manifest["files"]
    assert json.loads(read_member(b.path, "manifest.json"))["build"] == "2"


def test_uncommitted_changes_are_not_packaged(repo: Path, tmp_path: Path) -> None:
    clean = package(repo, build="1", out_dir=tmp_path / "clean")
    (repo / "app" / "phoenixapp" / "web.py").write_text("BROKEN = True\n")
    (repo / "app" / "untracked.py").write_text("x = 1\n")
    git(repo, "add", "app/untracked.py")  # staged but not committed
    dirty = package(repo, build="1", out_dir=tmp_path / "dirty")
    assert dirty.path.read_bytes() == clean.path.read_bytes()
    assert b"BROKEN" not in read_member(dirty.path, "phoenixapp/web.py")
    assert "untracked.py" not in members(dirty.path)


def test_older_revision_is_packaged_as_it_was(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    (repo / "app" / "VERSION").write_text("2.0.0\n")
    git(repo, "commit", "-q", "-am", "bump")
    old = package(repo, first, build="1", out_dir=tmp_path)
    new = package(repo, build="1", out_dir=tmp_path)
    assert old.manifest["version"] == "1.0.0" and new.manifest["version"] == "2.0.0"
    assert old.path != new.path and old.path.exists() and new.path.exists()


def test_unknown_revision_is_a_clear_package_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"unknown revision 'nope'.*git log") as err:
        package(repo, "nope", build="1", out_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*.tar.gz"))


def test_not_a_repository_is_a_clear_package_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(PackageError, match="is not a git repository"):
        package(plain, build="1", out_dir=tmp_path / "out")
    with pytest.raises(PackageError, match="does not exist"):
        package(tmp_path / "missing", build="1", out_dir=tmp_path / "out")


def test_missing_subdir_is_a_clear_package_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"directory 'web' does not exist at revision"):
        package(repo, build="1", out_dir=tmp_path, subdir="web")


def test_committed_manifest_json_is_refused(repo: Path, tmp_path: Path) -> None:
    (repo / "app" / "manifest.json").write_text("{}")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "oops")
    with pytest.raises(PackageError, match="manifest.json is committed"):
        package(repo, build="1", out_dir=tmp_path)


def test_real_app_packages_and_its_manifest_is_served(tmp_path: Path) -> None:
    """The packaged tree is runnable as-is: its /version reads the bundled manifest."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "app" / "phoenixapp" / "web.py").exists():
        pytest.skip("app/ not present")
    repo = tmp_path / "repo"
    repo.mkdir()
    for src in (root / "app").rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts and ".pytest_cache" not in src.parts:
            dst = repo / "app" / src.relative_to(root / "app")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "app")
    result = package(repo, build="5", out_dir=tmp_path / "out")
    dest = tmp_path / "installed"
    with tarfile.open(result.path) as tar:
        tar.extractall(dest, filter="data")
    code = ("from phoenixapp.web import application;"
            "env={'PATH_INFO':'/version','REQUEST_METHOD':'GET'};"
            "print(b''.join(application(env, lambda s, h: None)).decode())")
    proc = subprocess.run(["python3", "-c", code], cwd=dest, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, check=True)
    assert json.loads(proc.stdout) == {"name": "phoenixapp", "revision": result.revision,
                                       "build": "5"}
