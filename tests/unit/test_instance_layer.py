"""The overlay layer that gives instances the API's CA (cloud-init ca_certs) and its address."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from phoenixci.localcloud.instance_layer import INSTANCE_CA_BUNDLE, ensure_layer

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\nbase64==\n-----END CERTIFICATE-----\n"
ENDPOINT = "https://10.1.2.1:4443"


def image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    os.chmod(root / "etc", 0o751)  # an odd mode, to see the layer copy it
    (root / "etc/environment").write_text("")
    return root


def test_cloud_init_gets_the_ca_and_every_process_the_two_variables(tmp_path: Path) -> None:
    layer = ensure_layer(tmp_path / "layers", image(tmp_path), ENDPOINT, PEM)
    cfg = yaml.safe_load((layer / "etc/cloud/cloud.cfg.d/91_phoenixci_api.cfg").read_text())
    assert cfg == {"ca_certs": {"trusted": [PEM]}}
    assert (layer / "etc/environment").read_text() == \
        f"AWS_ENDPOINT_URL={ENDPOINT}\nAWS_CA_BUNDLE={INSTANCE_CA_BUNDLE}\n"
    assert not (layer / "etc/systemd").exists()  # services keep AWS's environment (no AWS_ variable)
    assert INSTANCE_CA_BUNDLE == "/etc/ssl/certs/ca-certificates.crt"  # where update-ca-certificates writes
    # user data with its own ca_certs replaces the config above; every update-ca-certificates adds this:
    assert (layer / "usr/local/share/ca-certificates/phoenixci-local-cloud.crt").read_text() == PEM


def test_directories_keep_the_images_modes(tmp_path: Path) -> None:
    """An upper overlay layer's directory attributes win: a 0700 /etc would break the instance."""
    layer = ensure_layer(tmp_path / "layers", image(tmp_path), ENDPOINT, PEM)
    assert stat.S_IMODE((layer / "etc").stat().st_mode) == 0o751
    assert stat.S_IMODE((layer / "usr/local/share/ca-certificates").stat().st_mode) == 0o755  # new in the layer
    assert stat.S_IMODE((layer / "etc/environment").stat().st_mode) == 0o644
    assert stat.S_IMODE(layer.stat().st_mode) == 0o755


def test_a_layer_is_made_once_and_never_rewritten(tmp_path: Path) -> None:
    root = image(tmp_path)
    first = ensure_layer(tmp_path / "layers", root, ENDPOINT, PEM)
    assert ensure_layer(tmp_path / "layers", root, ENDPOINT, PEM) == first
    other = ensure_layer(tmp_path / "layers", root, "https://10.1.3.1:4443", PEM)
    assert other != first and "10.1.2.1" in (first / "etc/environment").read_text()
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == sorted([first.name, other.name])
