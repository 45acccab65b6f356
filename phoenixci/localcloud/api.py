"""The AWS API of the local cloud: moto in server mode, in this process, IAM enforced, over HTTPS.

Start-up order: apply the in-process moto fixes, make (or load) the cloud's CA and a server
certificate (tls.py), serve HTTPS on 127.0.0.1 (a free port), create the administrator (an IAM
user with an inline ``*`` policy and an access key) while moto still accepts unauthenticated
calls, then switch enforcement on with ``POST /moto-api/reset-auth`` (body ``0``). From then on
every request needs valid credentials and is checked against IAM policies.

``listen_on(gateway)`` serves the same API on a subnet gateway (same port, the certificate
reissued to cover it). One plain-HTTP listener on 127.0.0.1 (``http_endpoint_url``) stands for
the ``http://`` endpoints AWS still answers (S3): requests there have ``aws:SecureTransport``
false, so TLS-only policies can be tried locally.
"""
from __future__ import annotations

import json
import logging
import shutil
import ssl
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from phoenixci.errors import PhoenixError
from phoenixci.localcloud.api_changes import ChangeNotifier

log = logging.getLogger(__name__)
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request at INFO

ADMIN_USER = "phoenixci-admin"
ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

_lock = threading.Lock()
_running: ApiServer | None = None


class ApiServerError(PhoenixError):
    """The embedded API could not be started or stopped."""


@dataclass(frozen=True)
class AdminCredentials:
    access_key_id: str
    secret_access_key: str


class ApiServer:
    """moto's WSGI app over HTTPS on loopback with IAM enforcement switched on.

    moto keeps its state per process, so one process runs at most one ApiServer. ``tls_dir``
    keeps the CA and the server certificate (a temporary directory, removed on stop, if None).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1",
                 tls_dir: Path | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.region = region
        self.tls_dir = tls_dir
        self.port: int | None = None
        self.admin: AdminCredentials | None = None
        self.tls: Any = None  # TlsIdentity while running
        self._app: Any = None
        self._tmp_tls: Path | None = None
        self._listeners: dict[str, Any] = {}  # address → Listener (TLS)
        self._plain: Any = None               # the http:// Listener on 127.0.0.1
        #: called after each request that may have changed something (api_changes.py)
        self.on_change: Callable[[], None] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise ApiServerError("the embedded AWS API is not running")
        return f"https://{self.host}:{self.port}"

    @property
    def http_endpoint_url(self) -> str:
        """The plain-HTTP endpoint on 127.0.0.1 (``aws:SecureTransport`` false there)."""
        if self._plain is None:
            raise ApiServerError("the embedded AWS API is not running")
        return str(self._plain.url)

    @property
    def ca_bundle(self) -> str:
        """The CA certificate clients verify the API with (``AWS_CA_BUNDLE``)."""
        if self.tls is None:
            raise ApiServerError("the embedded AWS API is not running")
        return str(self.tls.ca_path)

    def start(self) -> None:
        global _running
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from phoenixci.localcloud import patches
        from phoenixci.localcloud.api_listen import Listener
        from phoenixci.localcloud.tls import TlsIdentity

        with _lock:
            if _running is not None:
                raise ApiServerError("an embedded AWS API already runs in this process "
                                     f"at {_running.endpoint_url}; reuse it or stop it first")
            patches.apply()
            self._reset_moto()
            if self.tls_dir is None:
                self._tmp_tls = Path(tempfile.mkdtemp(prefix="phoenixci-api-tls-"))
            self.tls = TlsIdentity(self.tls_dir or self._tmp_tls, addresses=[self.host])  # type: ignore[arg-type]
            self._app = ChangeNotifier(DomainDispatcherApplication(create_backend_app), self._changed)
            try:
                main = Listener(self.host, self.requested_port, self._app, self.tls)
                self._listeners[self.host] = main
                self._plain = Listener("127.0.0.1", 0, self._app, None)
            except OSError as e:
                self._close_listeners()
                raise ApiServerError(f"cannot listen on {self.host}:{self.requested_port}: {e}") from e
            self.port = main.port
            _running = self
        try:
            self.admin = self._bootstrap_admin()
            self._post("/moto-api/reset-auth", b"0")
        except Exception:
            self.stop()
            raise
        log.info("embedded AWS API on %s (IAM enforced; CA %s)", self.endpoint_url, self.ca_bundle)

    def listen_on(self, address: str) -> str:
        """Serve the same API on ``address`` (a subnet gateway), same port; return its URL.

        The local cloud calls this for each bridge it creates, so instances reach the API at
        their gateway; it never listens on any other interface.
        """
        from phoenixci.localcloud.api_listen import Listener

        if self.port is None:
            raise ApiServerError("the embedded AWS API is not running")
        if address not in self._listeners:
            self.tls.cover(address)
            try:
                self._listeners[address] = Listener(address, self.port, self._app, self.tls)
            except OSError as e:
                raise ApiServerError(f"cannot listen on {address}:{self.port}: {e}") from e
            log.info("embedded AWS API also on https://%s:%d", address, self.port)
        return f"https://{address}:{self.port}"

    def stop_listening_on(self, address: str) -> None:
        if address == self.host:
            return
        listener = self._listeners.pop(address, None)
        if listener is not None:
            listener.stop()

    def stop(self) -> None:
        global _running
        with _lock:
            self._close_listeners()
            if _running is self:
                _running = None
            self._reset_moto()
            self.port = None
            self.tls = None
            if self._tmp_tls is not None:
                shutil.rmtree(self._tmp_tls, ignore_errors=True)
                self._tmp_tls = None

    def _close_listeners(self) -> None:
        for address in list(self._listeners):
            self._listeners.pop(address).stop()
        if self._plain is not None:
            self._plain.stop()
            self._plain = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------
    def _changed(self) -> None:
        callback = self.on_change
        if callback is not None:
            callback()

    @staticmethod
    def _reset_moto() -> None:
        """Forget every account's state and switch enforcement off (for a clean bootstrap)."""
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.moto_api._internal.models import moto_api_backend

        from phoenixci.localcloud.patches import region_refusal

        moto_api_backend.reset()
        region_refusal.serve_only(None)  # every region answers again (a LocalCloud narrows it)
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        ActionAuthenticatorMixin.request_count = 0

    def _post(self, path: str, body: bytes) -> dict:
        req = urllib.request.Request(self.endpoint_url + path, data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
        context = ssl.create_default_context(cafile=self.ca_bundle)
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:  # noqa: S310 - loopback only
            return dict(json.loads(resp.read() or b"{}"))

    def _bootstrap_admin(self) -> AdminCredentials:
        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name=self.region, verify=self.ca_bundle,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName=ADMIN_USER, Tags=[{"Key": "phoenixci:role", "Value": "admin"}])
        iam.put_user_policy(UserName=ADMIN_USER, PolicyName="administrator",
                            PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        return AdminCredentials(key["AccessKeyId"], key["SecretAccessKey"])
