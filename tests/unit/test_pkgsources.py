"""The host's package sources, read from a made-up machine under tmp_path (never the real one)."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from phoenixci.localcloud.pkgsources import PackageSources, apt_sources, pip_sources, read_sources

pytestmark = pytest.mark.unit


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home" / "user"


def pip_only(root: Path, home: Path, **env: str) -> PackageSources:
    """pip's sources of the machine at ``root`` with the variables ``env`` and nothing else."""
    return pip_sources(root, home=home, env=env)


def test_one_line_sources_with_options_comments_and_deb_src(tmp_path: Path) -> None:
    write(tmp_path, "etc/apt/sources.list", """\
# deb http://commented.example.test/debian stable main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://deb.example.test/debian stable main
deb [ arch=amd64 ] https://Secure.Example.TEST/debian stable main  # trailing comment
deb-src\thttp://src.example.test/debian stable main
deb cdrom:[Install disc]/ stable main
deb file:///srv/local-repo ./
deb mirror+file:///etc/apt/mirrors.txt stable main

""")
    write(tmp_path, "etc/apt/sources.list.d/extra.list", "deb http://extra.example.test/x stable main\n")
    write(tmp_path, "etc/apt/sources.list.d/ignored.txt", "deb http://not-a-list.example.test/ stable main\n")
    assert apt_sources(tmp_path) == PackageSources(
        http=frozenset({"deb.example.test", "src.example.test", "extra.example.test"}),
        https=frozenset({"secure.example.test"}))


def test_deb822_sources_several_uris_and_disabled_stanzas(tmp_path: Path) -> None:
    write(tmp_path, "etc/apt/sources.list.d/main.sources", """\
Types: deb deb-src
URIs: http://deb.example.test/debian https://pkgs.example.test/debian
Suites: stable stable-updates
Components: main
Signed-By: /usr/share/keyrings/example.gpg

# a disabled one
Types: deb
URIs: http://disabled.example.test/debian
Suites: stable
Enabled: no

Types: deb
# a comment inside a stanza
URIs: http://security.example.test/debian-security
 http://continued.example.test/debian
Suites: stable-security
""")
    assert apt_sources(tmp_path) == PackageSources(
        http=frozenset({"deb.example.test", "security.example.test", "continued.example.test"}),
        https=frozenset({"pkgs.example.test"}))


def test_no_apt_configuration_is_no_sources(tmp_path: Path) -> None:
    assert apt_sources(tmp_path) == PackageSources()


def test_non_default_ports_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        sources = PackageSources.from_urls([
            "http://deb.example.test:8080/debian", "https://pkgs.example.test:443/simple",
            "http://user:secret@files.example.test:80/x", "https://odd.example.test:8443/"])
    assert sources == PackageSources(http=frozenset({"files.example.test"}),
                                     https=frozenset({"pkgs.example.test"}))
    assert "deb.example.test:8080" in caplog.text and "odd.example.test:8443" in caplog.text
    assert "secret" not in caplog.text


def test_pip_files_in_pips_order_install_over_global(tmp_path: Path, home: Path) -> None:
    write(tmp_path, "etc/xdg/pip/pip.conf", "[global]\nindex-url = https://xdg.example.test/simple\n")
    write(tmp_path, "etc/pip.conf", "[global]\nindex-url = https://etc.example.test/simple\n"
                                    "extra-index-url = https://extra-etc.example.test/simple\n")
    assert pip_only(tmp_path, home).https == {"etc.example.test", "extra-etc.example.test"}

    write(home, ".pip/pip.conf", "[global]\nindex_url = https://legacy.example.test/simple\n")
    write(home, ".config/pip/pip.conf", """\
[global]
index-url = https://user.example.test/simple
[install]
index-url = http://install.example.test/simple
extra-index-url =
    https://a.example.test/simple
    https://b.example.test/simple
""")
    assert pip_only(tmp_path, home) == PackageSources(
        http=frozenset({"install.example.test"}),
        https=frozenset({"a.example.test", "b.example.test"}))  # a later key replaces, as in pip


def test_pip_environment_overrides_files(tmp_path: Path, home: Path) -> None:
    write(tmp_path, "etc/pip.conf", "[global]\nindex-url = https://etc.example.test/simple\n")
    env_file = write(tmp_path, "elsewhere/pip.conf", "[global]\nindex-url = https://envfile.example.test/simple\n")
    assert pip_only(tmp_path, home, PIP_CONFIG_FILE=str(env_file)).https == {"envfile.example.test"}
    assert pip_only(tmp_path, home, PIP_CONFIG_FILE=str(env_file),
                    PIP_INDEX_URL="https://pkgs.example.test/simple",
                    PIP_EXTRA_INDEX_URL="https://one.example.test/s http://two.example.test/s"
                    ) == PackageSources(http=frozenset({"two.example.test"}),
                                        https=frozenset({"pkgs.example.test", "one.example.test"}))


def test_pip_file_urls_are_ignored(tmp_path: Path, home: Path) -> None:
    write(tmp_path, "etc/pip.conf", "[global]\nindex-url = https://pkgs.example.test/simple\n"
                                    "extra-index-url = file:///srv/wheels file:/srv/more\n")
    assert pip_only(tmp_path, home) == PackageSources(https=frozenset({"pkgs.example.test"}))


def test_without_index_url_pips_own_default_index_applies(tmp_path: Path, home: Path) -> None:
    from pip._internal.models.index import PyPI

    write(tmp_path, "etc/pip.conf", "[global]\nextra-index-url = https://extra.example.test/simple\n")
    expected = {urlsplit(PyPI.url).hostname, PyPI.file_storage_domain, "extra.example.test"}
    assert pip_only(tmp_path, home) == PackageSources(https=frozenset(expected))


def test_read_sources_joins_apt_and_pip_and_describes_them(tmp_path: Path, home: Path) -> None:
    write(tmp_path, "etc/apt/sources.list", "deb http://deb.example.test/debian stable main\n")
    write(tmp_path, "etc/pip.conf", "[global]\nindex-url = https://pkgs.example.test/simple\n")
    sources = read_sources(tmp_path, home=home, env={})
    assert sources == PackageSources(http=frozenset({"deb.example.test"}),
                                     https=frozenset({"pkgs.example.test"}))
    assert sources.describe() == "package sources: http deb.example.test; https pkgs.example.test"
    assert PackageSources().describe() == "package sources: http none; https none"
