"""Instance runtime names: short enough for Linux, distinct per cloud (state dir), all phx-prefixed."""
from __future__ import annotations

from pathlib import Path

import pytest

from phoenixci.localcloud.runtime import InstanceError, Runtime

pytestmark = pytest.mark.unit


def test_names_fit_ifnamsiz_and_start_with_prefix(tmp_path: Path) -> None:
    rt = Runtime(tmp_path)
    iid = "i-0123456789abcdef0"
    for name in (rt.veth(iid), rt.bridge_name("10.250.7.0/24")):
        assert len(name) <= 15 and name.startswith(rt.tag)
    assert rt.netns(iid).startswith(rt.tag + "-") and rt.netns_name(iid) == rt.netns(iid)
    assert rt.tag.startswith("phx") and rt.table == f"phoenixci_{rt.tag}"


def test_clouds_on_different_state_dirs_do_not_collide() -> None:
    a, b = Runtime(Path("/var/lib/phoenixci/cloud-a")), Runtime(Path("/var/lib/phoenixci/cloud-b"))
    assert a.tag != b.tag  # fixed paths: 3 hex digits could collide for arbitrary ones
    assert a.netns("i-1") != b.netns("i-1") and a.bridge_name("10.0.0.0/24") != b.bridge_name("10.0.0.0/24")
    assert Runtime(Path("/var/lib/phoenixci/cloud-a")).tag == a.tag  # stable: a restarted cloud finds its own leftovers


def test_instance_ids_are_validated(tmp_path: Path) -> None:
    with pytest.raises(InstanceError):
        Runtime(tmp_path).boot_phase("../etc")
