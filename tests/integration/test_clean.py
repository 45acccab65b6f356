"""`phoenixci clean`: finds runs by tag, removes them in dependency order, never touches a
resource without the tag; `--older-than` keeps fresh runs."""
from __future__ import annotations

import time
from typing import Any

import pytest

from phoenixci import leaks, stacks
from phoenixci.templates import load_template
from phoenixci.util import wait_until

pytestmark = pytest.mark.integration

PUBLIC_KEY = (b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8ZcJf2zv7wYtqkS0V5q4x6l0wqJ9vJtL2c0P0Qm6Hk "
              b"phoenixci-test")
BUCKET_ONLY = '{"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}'


def make_run(backend: Any, run_id: str, tmp: Any) -> None:
    ec2, cfn, s3 = backend.client("ec2"), backend.client("cloudformation"), backend.client("s3")
    ec2.import_key_pair(KeyName=f"clean-{run_id}", PublicKeyMaterial=PUBLIC_KEY, TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": [{"Key": stacks.RUN_ID_TAG, "Value": run_id}]}])
    path = tmp / f"{run_id}.json"
    path.write_text(BUCKET_ONLY)
    stacks.create(cfn, s3, f"clean-{run_id}", load_template(path), {}, run_id=run_id, timeout=60)


def test_older_than_removes_the_old_run_only(phoenix_backend: Any, tmp_path: Any) -> None:
    ec2 = phoenix_backend.client("ec2")
    ec2.import_key_pair(KeyName="clean-untagged", PublicKeyMaterial=PUBLIC_KEY)
    try:
        make_run(phoenix_backend, "phx-clean-old", tmp_path)
        made = time.time()
        # creation times may be whole seconds: age the first run well past the threshold
        wait_until(lambda: time.time() - made > 4.5, timeout=15, interval=0.5, what="the first run to age")
        make_run(phoenix_backend, "phx-clean-new", tmp_path)
        ages = leaks.run_ages(phoenix_backend)
        assert ages["phx-clean-old"] > ages["phx-clean-new"] + 2.5

        # the session's own runs share this backend: scope each sweep to a run of this test
        assert leaks.sweep_older_than(phoenix_backend, 3.0, run_id="phx-clean-new") == []
        removed = leaks.sweep_older_than(phoenix_backend, 3.0, run_id="phx-clean-old")
        assert "stack clean-phx-clean-old" in removed and "key-pair clean-phx-clean-old" in removed
        assert not leaks.leftovers(phoenix_backend, "phx-clean-old")
        assert leaks.leftovers(phoenix_backend, "phx-clean-new"), "the fresh run must stay"
        names = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
        assert "clean-untagged" in names, "clean touched a resource without the tag"
    finally:
        leaks.sweep(phoenix_backend, "phx-clean-new")
        leaks.sweep(phoenix_backend, "phx-clean-old")
        ec2.delete_key_pair(KeyName="clean-untagged")
    assert not leaks.leftovers(phoenix_backend, "phx-clean-new")


@pytest.mark.unit
@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                                ("0.5h", 1800)])
def test_durations(text: str, seconds: float) -> None:
    assert leaks.parse_duration(text) == seconds


@pytest.mark.unit
@pytest.mark.parametrize("text", ["3x", "h", "", "-2h", "soon"])
def test_a_duration_that_makes_no_sense_is_one_clear_error(text: str) -> None:
    from phoenixci.errors import ConfigError

    with pytest.raises(ConfigError, match="older-than"):
        leaks.parse_duration(text)
