"""The package path's pieces that need no cloud: what instances get beside the image, the host's
locally added CAs, and a clear refusal where the machine has no package sources."""
from __future__ import annotations

from pathlib import Path

import pytest

from phoenixci.localcloud import pkgpath
from phoenixci.localcloud.pkgpath import PackagePath, PackagePathError, local_cas
from phoenixci.localcloud.pkgsources import PackageSources

pytestmark = pytest.mark.unit

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SOURCES = PackageSources(http=frozenset({"deb.example.test"}), https=frozenset({"pkgs.example.test"}))


def test_instances_get_the_gateways_dns_and_nothing_else_without_local_cas() -> None:
    path = PackagePath(SOURCES, Path("/nonexistent"))
    assert path.names == ("deb.example.test", "pkgs.example.test")
    assert path.layer_files("10.9.0.1") == {
        "etc/resolv.conf": "# phoenixci local cloud: the subnet's DNS (package sources only)\nnameserver 10.9.0.1\n"}


def test_locally_added_cas_go_to_the_instances_with_pips_trust_in_them(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "egress.crt").write_text(PEM)
    (tmp_path / "sub" / "corp.crt").write_text(PEM)
    (tmp_path / "notes.crt").write_text("not a certificate")
    (tmp_path / "other.pem").write_text(PEM)  # update-ca-certificates reads .crt only
    cas = local_cas(tmp_path)
    assert cas == {"corp": PEM, "egress": PEM}
    files = PackagePath(SOURCES, tmp_path, cas).layer_files("10.9.0.1")
    assert files["usr/local/share/ca-certificates/phoenixci-host-egress.crt"] == PEM
    assert files["etc/pip.conf"].endswith("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    assert local_cas(tmp_path / "absent") == {}


def test_a_machine_without_package_sources_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkgpath.pkgsources, "read_sources", lambda: PackageSources())
    with pytest.raises(PackagePathError, match=r"^--package-proxy: this machine has no package sources configured"):
        PackagePath.from_host()


def test_a_taken_port_on_the_gateway_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def taken(self: object) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(pkgpath.PackageProxy, "start", taken)
    with pytest.raises(PackagePathError, match=r"cannot listen on 10.9.0.1 ports 80 and 443 .*Address already in use"):
        PackagePath(SOURCES, tmp_path).serve("10.9.0.1")
