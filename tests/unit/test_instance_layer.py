"""The overlay layer that gives instances the API's CA (in the system store, built once) and its address."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from phoenixci.localcloud.instance_layer import INSTANCE_CA_BUNDLE, ensure_layer

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\nbase64==\n-----END CERTIFICATE-----\n"
ENDPOINT = "https://10.1.2.1:4443"


def image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ca-certificates.crt").write_text("IMAGE BUNDLE\n")
    os.chmod(root / "etc", 0o751)  # an odd mode, to see the layer copy it
    (root / "etc/environment").write_text("")
    return root


def test_the_system_store_trusts_the_ca_and_every_process_gets_the_two_variables(tmp_path: Path) -> None:
    layer = ensure_layer(tmp_path / "layers", image(tmp_path), ENDPOINT, PEM)
    assert not (layer / "etc/cloud").exists()  # no cloud-init ca_certs: nothing to do at boot
    assert (layer / "etc/environment").read_text() == \
        f"AWS_ENDPOINT_URL={ENDPOINT}\nAWS_CA_BUNDLE={INSTANCE_CA_BUNDLE}\n"
    assert not (layer / "etc/systemd").exists()  # services keep AWS's environment (no AWS_ variable)
    assert INSTANCE_CA_BUNDLE == "/etc/ssl/certs/ca-certificates.crt"  # where update-ca-certificates writes
    # as update-ca-certificates leaves it: the image's bundle, then the local CAs in name order
    assert (layer / "etc/ssl/certs/ca-certificates.crt").read_text() == "IMAGE BUNDLE\n" + PEM
    assert (layer / "etc/ssl/certs/phoenixci-local-cloud.pem").read_text() == PEM
    # every later update-ca-certificates (user data with its own ca_certs included) adds it again:
    assert (layer / "usr/local/share/ca-certificates/phoenixci-local-cloud.crt").read_text() == PEM


def test_extra_local_cas_join_the_bundle(tmp_path: Path) -> None:
    other = PEM.replace("fake", "host")
    layer = ensure_layer(tmp_path / "layers", image(tmp_path), ENDPOINT, PEM,
                         {"usr/local/share/ca-certificates/phoenixci-host-egress.crt": other})
    assert (layer / "etc/ssl/certs/ca-certificates.crt").read_text() == "IMAGE BUNDLE\n" + other + PEM


def test_a_real_certificate_gets_its_capath_entry(tmp_path: Path) -> None:
    from phoenixci.localcloud.tls import CertificateAuthority

    ca = CertificateAuthority(tmp_path / "tls")
    layer = ensure_layer(tmp_path / "layers", image(tmp_path), ENDPOINT, ca.pem)
    [entry] = sorted((layer / "etc/ssl/certs").glob("*.0"))
    assert entry.read_text().strip() == ca.pem.strip() and len(entry.stem) == 8


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
