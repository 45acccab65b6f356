"""``localstack://[HOST:PORT][?region=R]``: a LocalStack the user runs (only on loopback).

Clients are built by localstack-client (the ``host`` extra, imported lazily: the CI agent's
boto3-only install never loads this module). LocalStack's own environment conventions are
honoured; where it answers is the first of:

``localstack://HOST:PORT``  the URL (``localstack://HOST`` alone: port 4566)
``LOCALSTACK_HOST``         ``host[:port]``, LocalStack's variable (a missing port: ``EDGE_PORT``, else 4566)
``EDGE_PORT``               LocalStack's older variable: that port on 127.0.0.1
(none of them)              127.0.0.1:4566

``USE_SSL=1|true`` speaks https (LocalStack's certificate is for localhost.localstack.cloud, so
— as localstack-client does — it is not verified; the address is loopback). Credentials are
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, default ``test``/``test`` (LocalStack's account
000000000000); the region is ``?region=``, else ``AWS_DEFAULT_REGION``, else us-east-1.

``AWS_ENDPOINT_URL`` is not followed, although localstack-client would send every call there: in
phoenixci it is what a local cloud's env file sets (moto), and the URL must win. The endpoint
above is pinned on each localstack-client session.

LocalStack's EC2 records instances as rows and runs nothing, so what needs a real instance is
refused (``phoenixci up``) or skipped (tests, :data:`NO_INSTANCES`).
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import boto3

from phoenixci.backends.base import _CLIENT_CONFIG, Backend
from phoenixci.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4566
HEALTH_PATH = "/_localstack/health"
CONNECT_TIMEOUT = 1.0
HEALTH_TIMEOUT = 3.0

#: the skip reason of tests that need real instances
NO_INSTANCES = "LocalStack's EC2 only records rows: needs moto:// or aws://"

_START_HINT = "start LocalStack (`localstack start`) or point LOCALSTACK_HOST/the URL at it"


class LocalstackBackend(Backend):
    scheme = "localstack"
    allowed_options = frozenset({"region"})

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        host, port, self.origin = _where(self.url, self.netloc)
        try:
            addr = socket.gethostbyname(host)
        except OSError as e:
            raise ConfigError(f"backend {self.origin}: cannot resolve {host!r} ({e}); "
                              "use 127.0.0.1") from e
        if not ipaddress.ip_address(addr).is_loopback:
            raise ConfigError(f"backend {self.origin}: LocalStack must listen on 127.0.0.0/8, not {addr}")
        protocol = "https" if _env_true("USE_SSL") else "http"
        self.host, self.port = addr, port
        self._endpoint = f"{protocol}://{addr}:{port}"
        self._region = self.options.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._session_class = _localstack_session_class()

    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint_url(self) -> str:
        return self._endpoint

    def make_session(self) -> boto3.Session:
        """A plain boto3 session holding the credentials (clients come from :meth:`client`)."""
        return boto3.Session(aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "test",
                             aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
                             region_name=self._region)

    def client(self, service: str, session: boto3.Session | None = None) -> Any:
        """A client for ``service`` built by localstack-client, with ``session``'s credentials."""
        creds = (session or self.session).get_credentials()
        if creds is None:
            raise ConfigError(f"backend {self.url}: the session for {service} has no credentials")
        frozen = creds.get_frozen_credentials()
        local = self._session_class(aws_access_key_id=frozen.access_key,
                                    aws_secret_access_key=frozen.secret_key,
                                    aws_session_token=frozen.token, region_name=self._region,
                                    localstack_host=f"{self.host}:{self.port}")
        # pin the endpoint: localstack-client lets AWS_ENDPOINT_URL override localstack_host
        local._service_endpoint_mapping = dict.fromkeys(local._service_endpoint_mapping, self._endpoint)
        if service not in local._service_endpoint_mapping:
            raise ConfigError(f"backend {self.url}: localstack-client knows no service {service!r}")
        # localstack-client passes the session token only when asked (it is not one of its own kwargs)
        extra = {"aws_session_token": frozen.token} if frozen.token else {}
        return local.client(service, config=_CLIENT_CONFIG, **extra)

    def start(self) -> None:
        """Fail fast, before any AWS call, unless a LocalStack answers; then check the credentials."""
        status, detail = probe(self._endpoint)
        if status == "nothing":
            raise ConfigError(f"nothing answers at {self._endpoint} ({self.origin}): {_START_HINT}")
        if status != "ok":
            raise ConfigError(f"something answers at {self._endpoint} ({self.origin}) but {detail}: "
                              f"{_START_HINT}")
        self.check_credentials()


def probe(endpoint: str) -> tuple[str, str]:
    """Is LocalStack answering at ``endpoint``? ``("ok", version)``, ``("nothing", why)`` or
    ``("other", why)``: a short TCP connect, then LocalStack's health endpoint over HTTP."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or DEFAULT_HOST, parts.port or DEFAULT_PORT
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        return "nothing", f"nothing listens there ({e.strerror or e})"
    context = None
    if parts.scheme == "https":  # LocalStack's certificate names localhost.localstack.cloud
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = endpoint.rstrip("/") + HEALTH_PATH
    # straight to the loopback address: no http_proxy from the environment
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as e:
        return "other", f"it is not LocalStack (GET {HEALTH_PATH}: HTTP {e.code})"
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, TLS, not HTTP
        reason = getattr(e, "reason", e)
        return "other", f"it does not answer GET {HEALTH_PATH} ({reason})"
    try:
        health = json.loads(body)
    except ValueError:
        health = None
    if not isinstance(health, dict) or not isinstance(health.get("services"), dict):
        return "other", f"it is not LocalStack (GET {HEALTH_PATH} has no \"services\")"
    return "ok", f"LocalStack {health.get('version', '?')} ({health.get('edition', '?')})"


def skip_reason(url: str) -> str | None:
    """For the pytest plugin (call once per session): None when a LocalStack answers at the
    backend ``url``, else one line saying why the tests that need its API cannot run."""
    from phoenixci.backends import parse_url

    try:
        _, netloc, options = parse_url(url)
        backend = LocalstackBackend(url=url, netloc=netloc, options=options)
    except ConfigError as e:
        return str(e)
    status, detail = probe(backend.endpoint_url)
    if status == "ok":
        return None
    if status == "other":
        detail = f"something listens there but {detail}"
    return f"no LocalStack answers at {backend.endpoint_url} ({backend.origin}): {detail}"


def _where(url: str, netloc: str) -> tuple[str, int, str]:
    """(host, port, where they came from) by the precedence in the module docstring."""
    if netloc:
        parts = urlsplit(f"//{netloc}")
        try:
            port = parts.port
        except ValueError:
            port = None
            bad = True
        else:
            bad = parts.username is not None or not parts.hostname or port == 0
        if bad:
            raise ConfigError(f"backend {url!r}: expected localstack://HOST:PORT")
        return str(parts.hostname), port or DEFAULT_PORT, url
    edge = _env_port("EDGE_PORT")
    given = os.environ.get("LOCALSTACK_HOST", "").strip()
    if given:
        host, sep, port_s = given.rpartition(":") if ":" in given else (given, "", "")
        if sep and not (port_s.isdigit() and 0 < int(port_s) < 65536):
            raise ConfigError(f"LOCALSTACK_HOST={given!r}: expected host[:port]")
        return (host or DEFAULT_HOST, int(port_s) if sep else edge or DEFAULT_PORT,
                f"{url} with LOCALSTACK_HOST={given}")
    if edge:
        return DEFAULT_HOST, edge, f"{url} with EDGE_PORT={edge}"
    return DEFAULT_HOST, DEFAULT_PORT, f"{url}, LocalStack's default address"


def _env_port(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name}={value!r}: expected a port number")
    return int(value)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true")


def _localstack_session_class() -> Any:
    try:
        from localstack_client.session import Session
    except ImportError as e:
        raise ConfigError("localstack:// builds its clients with localstack-client, which is not "
                          "installed here: pip install 'phoenixci[host]'") from e
    return Session
