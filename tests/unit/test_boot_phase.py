"""An instance's boot phase from its /run: cloud-init's result decides ready or failed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from phoenixci.localcloud.boot_phase import cloud_init_phase

pytestmark = pytest.mark.unit


def _result(run: Path, text: str) -> None:
    (run / "cloud-init").mkdir(parents=True, exist_ok=True)
    (run / "cloud-init/result.json").write_text(text)


def test_before_cloud_init_the_instance_is_booting(tmp_path: Path) -> None:
    assert cloud_init_phase(tmp_path) == "booting"


def test_while_cloud_init_runs(tmp_path: Path) -> None:
    (tmp_path / "cloud-init").mkdir()
    assert cloud_init_phase(tmp_path) == "cloud-init"


def test_a_result_without_errors_is_ready_and_with_errors_failed(tmp_path: Path) -> None:
    _result(tmp_path, json.dumps({"v1": {"datasource": "DataSourceEc2", "errors": []}}))
    assert cloud_init_phase(tmp_path) == "ready"
    _result(tmp_path, json.dumps({"v1": {"errors": ["('scripts_user', RuntimeError('1 failed'))"]}}))
    assert cloud_init_phase(tmp_path) == "failed"


@pytest.mark.parametrize("text", ["", "{", "[]", json.dumps({"v2": {}}), json.dumps({"v1": []})])
def test_a_result_being_written_or_foreign_still_counts_as_cloud_init(tmp_path: Path, text: str) -> None:
    _result(tmp_path, text)
    assert cloud_init_phase(tmp_path) == "cloud-init"
