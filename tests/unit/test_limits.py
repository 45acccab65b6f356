"""Kernel limits many instances need: read and raised (only upwards) under a sysctl root, or advised."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from phoenixci.localcloud import limits
from phoenixci.localcloud.limits import Limit

pytestmark = pytest.mark.unit

INSTANCES = "fs.inotify.max_user_instances"
WATCHES = "fs.inotify.max_user_watches"


def sysctl(root: Path, **values: int) -> Path:
    for key, value in values.items():
        path = limits.sysctl_path(key.replace("__", "."), root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return root


def test_read_and_write_under_a_root(tmp_path: Path) -> None:
    root = sysctl(tmp_path, fs__inotify__max_user_instances=128)
    assert limits.read_sysctl(INSTANCES, root) == 128
    limits.write_sysctl(INSTANCES, 8192, root)
    assert (root / "fs/inotify/max_user_instances").read_text() == "8192\n"
    assert limits.read_sysctl("fs.inotify.no_such_thing", root) is None


@pytest.mark.parametrize("key", ["", "fs..x", "fs/inotify", "../etc"])
def test_bad_names_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        limits.sysctl_path(key, tmp_path)


def test_low_limits_are_raised_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = sysctl(tmp_path, fs__inotify__max_user_instances=128, fs__inotify__max_user_watches=192536)
    with caplog.at_level("INFO", logger="phoenixci.localcloud.limits"):
        checks = limits.ensure(root=root, may_write=True)
    assert [(c.key, c.before, c.after, c.raised, c.short) for c in checks] == [
        (INSTANCES, 128, 8192, True, False), (WATCHES, 192536, 524288, True, False)]
    assert limits.advice(checks) is None
    assert "raised fs.inotify.max_user_instances from 128 to 8192" in caplog.text


def test_a_higher_limit_is_never_lowered(tmp_path: Path) -> None:
    root = sysctl(tmp_path, fs__inotify__max_user_instances=65536, fs__inotify__max_user_watches=524288)
    checks = limits.ensure(root=root, may_write=True)
    assert limits.read_sysctl(INSTANCES, root) == 65536
    assert not any(c.raised or c.short for c in checks)


def test_without_root_it_says_what_to_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = sysctl(tmp_path, fs__inotify__max_user_instances=128, fs__inotify__max_user_watches=600000)
    with caplog.at_level("WARNING", logger="phoenixci.localcloud.limits"):
        checks = limits.ensure(root=root, may_write=False)
    note = limits.advice(checks)
    assert note == ("kernel limits too low for many instances (fs.inotify.max_user_instances=128; could not "
                    "raise: not root): as root on the host run `sysctl -w fs.inotify.max_user_instances=8192`")
    assert note in caplog.text
    assert limits.read_sysctl(INSTANCES, root) == 128


def test_a_refused_write_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = sysctl(tmp_path, fs__inotify__max_user_instances=128)

    def refuse(key: str, value: int, root: Path) -> None:
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(limits, "write_sysctl", refuse)
    checks = limits.ensure([Limit(INSTANCES, 8192, "test")], root=root, may_write=True)
    assert checks[0].short and not checks[0].raised and checks[0].error == "Read-only file system"
    assert "could not raise: Read-only file system" in (limits.advice(checks) or "")


def test_a_missing_setting_is_skipped(tmp_path: Path) -> None:
    checks = limits.ensure(root=tmp_path, may_write=True)
    assert all(c.before is None and not c.raised for c in checks)
    assert limits.advice(checks) is None


def test_inotify_use_is_counted_per_uid(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, targets in {"1": ["anon_inode:inotify", "anon_inode:inotify", "/dev/null"],
                         "22": ["anon_inode:inotify"], "self": ["anon_inode:inotify"]}.items():
        (proc / pid / "fd").mkdir(parents=True)
        for n, target in enumerate(targets):
            (proc / pid / "fd" / str(n)).symlink_to(target)
    assert limits.inotify_in_use(proc, uid=os.geteuid()) == 3
    assert limits.inotify_in_use(proc, uid=os.geteuid() + 1) == 0
    root = sysctl(tmp_path / "sys", fs__inotify__max_user_instances=8)
    hint = limits.inotify_hint(root, proc, uid=os.geteuid())
    assert hint is not None and "root holds 3 inotify instances of fs.inotify.max_user_instances=8" in hint
    big = sysctl(tmp_path / "big", fs__inotify__max_user_instances=8192)
    assert limits.inotify_hint(big, proc, uid=os.geteuid()) is None
