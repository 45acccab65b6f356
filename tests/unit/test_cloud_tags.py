"""Two state dirs sharing a name tag must never both run: the second is refused, not swept."""
from __future__ import annotations

from pathlib import Path

import pytest

from phoenixci.localcloud import addressing, cloudtags
from phoenixci.localcloud.cloudtags import LocalCloudError, claim_tag, release_tag, write_env_file

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def tag_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cloudtags, "TAG_DIR", tmp_path / "tags")
    return tmp_path / "tags"


def test_claim_is_idempotent_for_the_owner(tmp_path: Path) -> None:
    claim_tag("phxabc", tmp_path / "a")
    claim_tag("phxabc", tmp_path / "a")
    release_tag("phxabc", tmp_path / "a")
    claim_tag("phxabc", tmp_path / "b")


def test_another_state_dir_is_refused_with_the_owner_named(tmp_path: Path) -> None:
    claim_tag("phxabc", tmp_path / "a")
    with pytest.raises(LocalCloudError) as info:
        claim_tag("phxabc", tmp_path / "b")
    assert str(tmp_path / "a") in str(info.value) and "another --state-dir" in str(info.value)


def test_release_by_a_non_owner_keeps_the_claim(tmp_path: Path, tag_dir: Path) -> None:
    claim_tag("phxabc", tmp_path / "a")
    release_tag("phxabc", tmp_path / "b")
    assert (tag_dir / "phxabc").read_text().strip() == str(tmp_path / "a")


def test_env_file_is_private_and_sourceable(tmp_path: Path) -> None:
    path = tmp_path / "env"
    write_env_file(path, {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "AKIA"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "export AWS_ACCESS_KEY_ID=AKIA\nexport AWS_ENDPOINT_URL=http://127.0.0.1:1\n"


def test_free_vpc_cidr_avoids_routed_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    first = addressing.free_vpc_cidr("run-a")
    taken = [(ipaddress.ip_network(first), "phxb1"), (ipaddress.ip_network("10.0.0.0/9"), "eth9")]
    monkeypatch.setattr(addressing, "routed_networks", lambda: taken)
    again = addressing.free_vpc_cidr("run-a")
    assert again != first
    assert not ipaddress.ip_network(again).overlaps(ipaddress.ip_network("10.0.0.0/9"))
    assert ipaddress.ip_network(again).subnet_of(ipaddress.ip_network("10.0.0.0/8"))


def test_overlapping_subnet_is_refused_naming_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    monkeypatch.setattr(addressing, "routed_networks", lambda: [(ipaddress.ip_network("10.77.0.0/16"), "phxb2")])
    with pytest.raises(addressing.AddressingError, match=r"10.77.1.0/24 overlaps 10.77.0.0/16 .*dev phxb2"):
        addressing.refuse_overlap("10.77.1.0/24")
    addressing.refuse_overlap("10.78.1.0/24")


def test_a_tag_taken_by_another_state_dir_moves_this_cloud_to_its_next_candidate(tmp_path: Path) -> None:
    from phoenixci.localcloud.cloudtags import claim_free_tag
    from phoenixci.localcloud.hostcheck import candidate_tags, cloud_tag, tag_of
    from phoenixci.localcloud.runtime import Runtime

    state = tmp_path / "a"
    runtime_dir = state / "runtime"
    first, second = candidate_tags(runtime_dir)[:2]
    assert tag_of(runtime_dir) == first == cloud_tag(state)  # no tag file: the first candidate
    claim_tag(first, tmp_path / "someone-else")  # a random state dir that hashes the same
    assert claim_free_tag(runtime_dir, state) == second
    assert (runtime_dir / "tag").read_text().strip() == second
    assert tag_of(runtime_dir) == cloud_tag(state) == Runtime(runtime_dir).tag == second  # every reader agrees
    release_tag(second, state)
    release_tag(first, tmp_path / "someone-else")
    assert claim_free_tag(runtime_dir, state) == second  # a restart keeps the tag it had: it sweeps by it


def test_a_forged_tag_file_is_ignored(tmp_path: Path) -> None:
    from phoenixci.localcloud.hostcheck import candidate_tags, tag_of

    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    (runtime_dir / "tag").write_text("phx")  # not one of its candidates: would match every cloud's names
    assert tag_of(runtime_dir) == candidate_tags(runtime_dir)[0]


def test_every_candidate_taken_is_a_clear_error(tmp_path: Path) -> None:
    from phoenixci.localcloud.cloudtags import claim_free_tag
    from phoenixci.localcloud.hostcheck import candidate_tags

    runtime_dir = tmp_path / "a" / "runtime"
    for tag in candidate_tags(runtime_dir):
        claim_tag(tag, tmp_path / "other")
    with pytest.raises(LocalCloudError, match=r"every name tag .* belongs to another local cloud"):
        claim_free_tag(runtime_dir, tmp_path / "a")
