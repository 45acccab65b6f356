"""The lifecycle context managers: teardown always, --keep as asked, leaks found by tag."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phoenixci import leaks, stacks
from phoenixci.errors import LeakError
from phoenixci.harness import infra_stack_name, infrastructure, new_run_id

pytestmark = pytest.mark.integration


class Boom(Exception):
    pass


def key_pairs(backend: Any) -> set[str]:
    return {k["KeyName"] for k in backend.client("ec2").describe_key_pairs()["KeyPairs"]}


def test_teardown_runs_when_the_body_fails(phoenix_backend: Any, tmp_path: Path) -> None:
    run_id = new_run_id()
    with pytest.raises(Boom), infrastructure(phoenix_backend, run_id, workdir=tmp_path) as infra:
        assert infra.key.private_key.exists()
        raise Boom
    assert stacks.describe(phoenix_backend.client("cloudformation"), infra_stack_name(run_id)) is None
    assert f"phoenixci-{run_id}" not in key_pairs(phoenix_backend)
    assert not infra.key.private_key.exists()
    assert leaks.leftovers(phoenix_backend, run_id) == []


def test_keep_on_failure_keeps_everything_for_a_look_then_clean_sweeps(phoenix_backend: Any) -> None:
    run_id = new_run_id()
    with pytest.raises(Boom), infrastructure(phoenix_backend, run_id, keep="on-failure") as infra:
        raise Boom
    try:
        assert stacks.describe(phoenix_backend.client("cloudformation"), infra.stack.name) is not None
        assert infra.key.name in key_pairs(phoenix_backend)
        assert infra.key.private_key.exists(), "the kept servers must stay reachable over SSH"
        left = leaks.leftovers(phoenix_backend, run_id)
        assert any(item.startswith(f"stack {infra.stack.name}") for item in left)
        with pytest.raises(LeakError):
            leaks.assert_no_leftovers(phoenix_backend, run_id)
    finally:
        removed = leaks.sweep(phoenix_backend, run_id)
        infra.key.private_key.unlink(missing_ok=True)
    assert f"stack {infra.stack.name}" in removed and f"key-pair {infra.key.name}" in removed
    assert leaks.leftovers(phoenix_backend, run_id) == []


def test_keep_on_failure_tears_down_on_success(phoenix_backend: Any) -> None:
    run_id = new_run_id()
    with infrastructure(phoenix_backend, run_id, keep="on-failure") as infra:
        pass
    assert stacks.describe(phoenix_backend.client("cloudformation"), infra.stack.name) is None
    assert leaks.leftovers(phoenix_backend, run_id) == []
