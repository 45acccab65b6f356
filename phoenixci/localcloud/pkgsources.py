"""The host's configured package sources: which names a package proxy may serve.

Read at run time from the host's own configuration, never written down here:

* apt: ``etc/apt/sources.list`` and ``etc/apt/sources.list.d/*.list`` (one-line
  ``deb [opts] URI suite comps``) and ``*.sources`` (deb822 stanzas, ``URIs:`` may hold
  several; stanzas with ``Enabled: no`` are skipped).
* pip: ``index-url`` and ``extra-index-url`` as pip itself resolves them (files in pip's
  override order, ``[global]`` then ``[install]``, then ``PIP_CONFIG_FILE`` and the
  ``PIP_INDEX_URL`` / ``PIP_EXTRA_INDEX_URL`` variables). Without an ``index-url`` pip's own
  default index applies; its address and the host its files come from are asked of pip.

Only ``http://`` on port 80 and ``https://`` on port 443 count (the proxy serves those two);
other ports are skipped with a warning, other schemes (``file:``, ``cdrom:``, ``mirror+file:``…)
silently. URLs may carry credentials: only host names are ever logged or kept.
"""
from __future__ import annotations

import configparser
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_FALSE = {"no", "false", "off", "without", "disable"}  # apt's words for "Enabled: no"


@dataclass(frozen=True)
class PackageSources:
    """Host names reached over plain http (port 80) and over https (port 443)."""

    http: frozenset[str] = frozenset()
    https: frozenset[str] = frozenset()

    def __or__(self, other: PackageSources) -> PackageSources:
        return PackageSources(self.http | other.http, self.https | other.https)

    def describe(self) -> str:
        def names(hosts: frozenset[str]) -> str:
            return ", ".join(sorted(hosts)) or "none"
        return f"package sources: http {names(self.http)}; https {names(self.https)}"

    @classmethod
    def from_urls(cls, urls: Iterable[str]) -> PackageSources:
        """Classify URLs by scheme; other schemes and non-default ports are left out."""
        http: set[str] = set()
        https: set[str] = set()
        for url in urls:
            try:
                parts = urlsplit(url.strip())
                port = parts.port
            except ValueError:
                log.warning("package source with an unreadable address skipped")
                continue
            scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
            if scheme not in _DEFAULT_PORTS or not host:
                log.debug("package source scheme %r not served by the proxy", scheme)
                continue
            if port is not None and port != _DEFAULT_PORTS[scheme]:
                log.warning("package source %s:%d skipped: the proxy serves %s on port %d only",
                            host, port, scheme, _DEFAULT_PORTS[scheme])
                continue
            (http if scheme == "http" else https).add(host.lower())
        return cls(frozenset(http), frozenset(https))


# --- apt -----------------------------------------------------------------------------------

def _one_line_uris(text: str) -> list[str]:
    """URIs of ``deb``/``deb-src`` lines; ``[opts]`` may contain spaces."""
    uris = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, *more = line.split(None, 1)
        if kind not in ("deb", "deb-src") or not more:
            continue
        rest = more[0].strip()
        if rest.startswith("["):
            rest = rest.partition("]")[2].strip()
        if rest:
            uris.append(rest.split()[0])
    return uris


def _deb822_uris(text: str) -> list[str]:
    """URIs of every enabled stanza (blank lines separate stanzas; fields may continue)."""
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.lstrip().startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() in _FALSE:
            continue
        uris.extend(fields.get("uris", "").split())
    return uris


def apt_sources(root: Path = Path("/")) -> PackageSources:
    """The hosts apt fetches from, read under ``root`` (``/`` on the host)."""
    apt = root / "etc" / "apt"
    uris: list[str] = []
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        uris.extend(_one_line_uris(_read(path)))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        uris.extend(_deb822_uris(_read(path)))
    return PackageSources.from_urls(uris)


# --- pip -----------------------------------------------------------------------------------

def _pip_files(root: Path, home: Path, env: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in its override order (later wins); PIP_CONFIG_FILE last."""
    xdg_dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [root / d.lstrip("/") / "pip" / "pip.conf" for d in xdg_dirs.split(":") if d]
    files.append(root / "etc" / "pip.conf")
    config_file = env.get("PIP_CONFIG_FILE")
    if not (config_file and Path(config_file).exists()):  # as pip: that file replaces the user's
        xdg_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
        files += [home / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf"]
    if config_file:
        files.append(Path(config_file))
    return files


def _pip_settings(root: Path, home: Path, env: Mapping[str, str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    if env.get("PIP_CONFIG_FILE") != os.devnull:  # pip: os.devnull means "no files at all"
        for path in _pip_files(root, home, env):
            parser = configparser.RawConfigParser()
            try:
                parser.read_string(_read(path), source=str(path))
            except configparser.Error as e:
                log.warning("pip configuration %s unreadable: %s", path, e)
                continue
            for section in ("global", "install"):
                if parser.has_section(section):
                    for key, value in parser.items(section):
                        settings[key.replace("_", "-").lstrip("-")] = value
    for key in ("index-url", "extra-index-url"):
        from_env = env.get("PIP_" + key.upper().replace("-", "_"))
        if from_env:
            settings[key] = from_env
    return settings


def pip_default_index() -> list[str]:
    """pip's own default index and the host its files are downloaded from (as pip says)."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        log.warning("pip is not importable: its default index is unknown and not served")
        return []
    return [PyPI.url, f"https://{PyPI.file_storage_domain}/"]


def pip_sources(root: Path = Path("/"), *, home: Path | None = None,
                env: Mapping[str, str] | None = None) -> PackageSources:
    """The hosts pip installs from: its configured indexes, else its default index."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    settings = _pip_settings(root, home, env)
    urls = settings.get("extra-index-url", "").split()
    index = settings.get("index-url", "").strip()
    urls += [index] if index else pip_default_index()
    return PackageSources.from_urls(urls)


def read_sources(root: Path = Path("/"), *, home: Path | None = None,
                         env: Mapping[str, str] | None = None) -> PackageSources:
    """apt's and pip's sources of this host together."""
    sources = apt_sources(root) | pip_sources(root, home=home, env=env)
    log.info("%s", sources.describe())
    return sources


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ""
    except OSError as e:
        log.warning("cannot read %s: %s", path, e)
        return ""
