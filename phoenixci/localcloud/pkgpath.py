"""The package path of ``phoenixci cloud start --package-proxy``: user data written for AWS
(``apt-get install …``, ``pip install …``, no proxy settings) works unchanged.

Off by default; then nothing changes (no DNS, no listener, no rule). With it, per subnet:

- the gateway's dnsmasq answers DNS for the names of the host's configured package sources
  (pkgsources: apt's sources, pip's indexes) with the gateway's address, and refuses every other
  name: nothing else resolves (dnsmasq.Dnsmasq); instances name the gateway in /etc/resolv.conf
  (instance_layer) and the host-side rules let DNS to the gateway pass, as Amazon DNS does (hostsg);
- instances trust what the host's package clients trust: where this machine's HTTPS is re-signed
  by a CA of its own (locally added ones: /usr/local/share/ca-certificates), the instances get those
  CAs too (cloud-init's update-ca-certificates adds them to the system store) and an /etc/pip.conf
  naming the system store (pip reads only its own bundle); without such CAs, neither;
- a PackageProxy (pkgproxy) listens on the gateway's ports 80 and 443: plain HTTP to those names
  goes through its cache (immutable files only), HTTPS is passed through by server name (SNI)
  without interception, and any other name is refused. Instances still have no route: the proxy
  connects, from the host, to those names alone. Security groups and network ACLs apply to ports
  80 and 443 of the gateway like to any internet address.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from phoenixci.errors import PhoenixError
from phoenixci.localcloud import pkgsources
from phoenixci.localcloud.instance_layer import INSTANCE_CA_BUNDLE, LOCAL_CAS
from phoenixci.localcloud.pkgproxy import PackageProxy

log = logging.getLogger(__name__)

#: shared by every cloud on the machine (cached files are immutable: pool/, by-hash/, wheels)
DEFAULT_CACHE = Path("/var/cache/phoenixci/pkgproxy")
#: CAs added to this machine's store by hand (update-ca-certificates' local directory)
HOST_LOCAL_CAS = Path("/", LOCAL_CAS)


def local_cas(directory: Path = HOST_LOCAL_CAS) -> dict[str, str]:
    """The locally added CAs (file stem → PEM), PEM files only."""
    if not directory.is_dir():
        return {}
    out = {}
    for path in sorted(directory.rglob("*.crt")):
        text = path.read_text(errors="replace")
        if "-----BEGIN CERTIFICATE-----" in text:
            out[path.stem] = text.strip() + "\n"
    return out


class PackagePathError(PhoenixError):
    """The package path cannot be offered (no package sources, a port taken on the gateway)."""


class PackagePath:
    """The host's package sources, served on each subnet gateway of one cloud."""

    def __init__(self, sources: Any, cache_dir: Path = DEFAULT_CACHE, cas: dict[str, str] | None = None) -> None:
        self.sources, self.cache_dir, self.cas = sources, cache_dir, dict(cas or {})
        self._proxies: dict[str, PackageProxy] = {}  # gateway ip → its proxy

    @classmethod
    def from_host(cls, cache_dir: Path = DEFAULT_CACHE) -> PackagePath:
        sources = pkgsources.read_sources()
        if not sources.http and not sources.https:
            raise PackagePathError("--package-proxy: this machine has no package sources configured (apt's "
                                   "sources.list(.d), pip's index-url): configure apt or pip first, or start the "
                                   "cloud without --package-proxy")
        cas = local_cas()
        log.info("package path: %s; %d locally added CA(s) go to the instances", sources.describe(), len(cas))
        return cls(sources, cache_dir, cas)

    @property
    def names(self) -> tuple[str, ...]:
        """What the gateway's DNS answers."""
        return tuple(sorted(self.sources.http | self.sources.https))

    def layer_files(self, gateway: str) -> dict[str, str]:
        """What an instance on ``gateway``'s subnet gets beside the image (instance_layer)."""
        files = {"etc/resolv.conf": "# phoenixci local cloud: the subnet's DNS (package sources only)\n"
                                    f"nameserver {gateway}\n"}
        for stem, pem in self.cas.items():
            files[f"{LOCAL_CAS}phoenixci-host-{stem}.crt"] = pem
        if self.cas:
            files["etc/pip.conf"] = ("# phoenixci local cloud: this machine's HTTPS is re-signed by its own CA\n"
                                     f"[global]\ncert = {INSTANCE_CA_BUNDLE}\n")
        return files

    def serve(self, gateway: str) -> None:
        """Start the proxy on ``gateway`` (ports 80 and 443); idempotent."""
        if gateway in self._proxies:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        proxy = PackageProxy(gateway, self.sources, self.cache_dir)
        try:
            proxy.start()
        except OSError as e:
            raise PackagePathError(f"--package-proxy: cannot listen on {gateway} ports 80 and 443 ({e}): does "
                                   "a server on this machine hold port 80 or 443 on all addresses? Stop it, or "
                                   "start the cloud without --package-proxy") from e
        self._proxies[gateway] = proxy

    def close(self) -> None:
        """Stop every proxy (their threads and sockets end with them)."""
        for gateway in list(self._proxies):
            self._proxies.pop(gateway).close()

    def status(self) -> dict[str, Any]:
        return {"names": list(self.names), "cache": str(self.cache_dir),
                "gateways": {gw: proxy.stats() for gw, proxy in sorted(self._proxies.items())}}
