"""The local cloud's CA and server certificate (tls.py) and the API's TLS listener (api_listen.py),
with a trivial WSGI app on 127.0.0.1: real handshakes, real verification."""
from __future__ import annotations

import datetime
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from phoenixci.localcloud.api_listen import Listener
from phoenixci.localcloud.tls import CertificateAuthority, TlsIdentity, addresses_of


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["wsgi.url_scheme"].encode()]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    served = Listener("127.0.0.1", 0, app, TlsIdentity(tmp_path / "tls"))
    try:
        yield served
    finally:
        served.stop()


def get(url: str, cafile: Path | None) -> str:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:  # noqa: S310 - loopback
        return str(resp.read().decode())


def test_the_ca_is_made_once_with_a_private_key_only_root_reads(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "tls")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc > datetime.timedelta(days=3000)
    again = CertificateAuthority(tmp_path / "tls")
    assert again.cert.serial_number == ca.cert.serial_number  # an env file stays valid across restarts


def test_https_verifies_against_the_ca_only(listener: Listener) -> None:
    cafile = listener.server.identity.ca_path  # type: ignore[attr-defined]
    assert listener.url.startswith("https://127.0.0.1:")
    assert get(listener.url + "/", cafile) == "https"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(listener.url + "/", None)  # the system store does not know the cloud's CA


def test_the_certificate_covers_each_address_it_is_served_on(tmp_path: Path) -> None:
    identity = TlsIdentity(tmp_path / "tls")
    first = x509.load_pem_x509_certificate(identity.cert_path.read_bytes())
    assert addresses_of(first) == {"127.0.0.1"}
    identity.cover("10.9.8.1")
    second = x509.load_pem_x509_certificate(identity.cert_path.read_bytes())
    assert addresses_of(second) == {"127.0.0.1", "10.9.8.1"}
    assert second.issuer == identity.ca.cert.subject
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600


def test_a_certificate_near_its_end_is_renewed(listener: Listener) -> None:
    identity: TlsIdentity = listener.server.identity  # type: ignore[attr-defined]
    before = identity.context
    identity.renew_if_due()
    assert identity.context is before  # not due
    identity._renew_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    assert get(listener.url + "/", identity.ca_path) == "https"  # a new connection renews
    assert identity.context is not before


def test_plain_http_to_the_tls_port_gets_a_clear_400(listener: Listener) -> None:
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(listener.url.replace("https:", "http:") + "/", timeout=5)  # noqa: S310
    assert answer.value.code == 400 and b"HTTPS only" in answer.value.read()


def test_a_silent_client_does_not_stall_the_others(listener: Listener) -> None:
    """werkzeug would shake hands in accept(): one connection that sends nothing blocks all."""
    with socket.create_connection(("127.0.0.1", listener.port)):
        started = time.monotonic()
        assert get(listener.url + "/", listener.server.identity.ca_path) == "https"  # type: ignore[attr-defined]
        assert time.monotonic() - started < 2


def test_a_plain_listener_says_http(tmp_path: Path) -> None:
    plain = Listener("127.0.0.1", 0, app, None)
    try:
        assert plain.url.startswith("http://") and get(plain.url + "/", None) == "http"
    finally:
        plain.stop()
