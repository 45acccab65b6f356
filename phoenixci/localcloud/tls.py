"""The local cloud's own certificate authority and the API's server certificate.

Each cloud makes a CA in ``<state>/tls`` (``ca.pem``, key ``ca.key`` mode 0600; kept across
restarts of the same state dir, so an env file stays valid) and issues the API one server
certificate whose subjectAltNames are every address it listens on (127.0.0.1 and each subnet
gateway). ``TlsIdentity.cover(address)`` reissues it when a listener is added; it is also
renewed once less than ``RENEW_BEFORE`` of its life is left. New connections get the new
certificate at once (a fresh ``SSLContext`` is swapped in); open ones keep theirs.

Clients trust the CA through ``AWS_CA_BUNDLE`` (the env file, instances) or botocore's
``verify=`` (phoenixci's own clients).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import threading
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=90)
RENEW_BEFORE = datetime.timedelta(days=30)
_SKEW = datetime.timedelta(minutes=5)  # valid a little before "now": clocks of clients differ


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider, not even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """A CA kept in ``directory``: loaded if present and valid, else made."""

    def __init__(self, directory: Path, name: str = "phoenixci local cloud CA") -> None:
        self.directory = Path(directory)
        self.cert_path = self.directory / "ca.pem"
        self.key_path = self.directory / "ca.key"
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        if not self._load():
            self._create(name)

    def _load(self) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (OSError, ValueError):
            return False
        if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            return False
        self.cert, self.key = cert, key
        return True

    def _create(self, name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phoenixci")])
        now = _now()
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - _SKEW).not_valid_after(now + CA_LIFETIME)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                     .sign(key, hashes.SHA256()))
        self.key = key
        _write(self.key_path, _key_pem(key), 0o600)
        _write(self.cert_path, self.cert.public_bytes(serialization.Encoding.PEM), 0o644)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue_server(self, addresses: Iterable[str], cert_path: Path, key_path: Path,
                     lifetime: datetime.timedelta = SERVER_LIFETIME) -> x509.Certificate:
        """A server certificate for ``addresses`` (IP addresses) written to the two paths."""
        ips = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda ip: (ip.version, int(ip)))
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(ips[0]))]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _SKEW).not_valid_after(now + lifetime)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert


def addresses_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


class TlsIdentity:
    """The API's CA and server certificate, and the ``SSLContext`` new connections use."""

    def __init__(self, directory: Path, addresses: Iterable[str] = ("127.0.0.1",)) -> None:
        self.ca = CertificateAuthority(directory)
        self.cert_path = self.ca.directory / "server.pem"
        self.key_path = self.ca.directory / "server.key"
        self._lock = threading.Lock()
        self._addresses = set(addresses)
        self._renew_at = _now()
        self.context: ssl.SSLContext = self._issue()

    @property
    def ca_path(self) -> Path:
        return self.ca.cert_path

    @property
    def addresses(self) -> set[str]:
        return set(self._addresses)

    def cover(self, address: str) -> None:
        """Make the server certificate valid for ``address`` too (reissued if it is not yet)."""
        with self._lock:
            if address not in self._addresses:
                self._addresses.add(address)
                self.context = self._issue()

    def renew_if_due(self) -> None:
        if _now() >= self._renew_at:
            with self._lock:
                if _now() >= self._renew_at:
                    self.context = self._issue()

    def _issue(self) -> ssl.SSLContext:
        cert = self.ca.issue_server(self._addresses, self.cert_path, self.key_path)
        self._renew_at = cert.not_valid_after_utc - RENEW_BEFORE
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx
