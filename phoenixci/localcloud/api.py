"""The AWS API of the local cloud: moto in server mode, in this process, IAM enforced.

Start-up order: apply the in-process moto fixes, start the server on 127.0.0.1 (a free port),
create the administrator (an IAM user with an inline ``*`` policy and an access key) while
moto still accepts unauthenticated calls, then switch enforcement on with
``POST /moto-api/reset-auth`` (body ``0``). From then on every request needs valid
credentials and is checked against IAM policies.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.request
from dataclasses import dataclass

import boto3

from phoenixci.errors import PhoenixError

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
    """moto's ThreadedMotoServer on loopback with IAM enforcement switched on.

    moto keeps its state per process, so one process runs at most one ApiServer.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1") -> None:
        self.host = host
        self.requested_port = port
        self.region = region
        self.port: int | None = None
        self.admin: AdminCredentials | None = None
        self._server: object | None = None
        self._extra: dict[str, tuple[object, threading.Thread]] = {}

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise ApiServerError("the embedded AWS API is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        global _running
        from moto.server import ThreadedMotoServer

        from phoenixci.localcloud import patches

        with _lock:
            if _running is not None:
                raise ApiServerError("an embedded AWS API already runs in this process "
                                     f"at {_running.endpoint_url}; reuse it or stop it first")
            patches.apply()
            self._reset_moto()
            server = ThreadedMotoServer(ip_address=self.host, port=self.requested_port, verbose=False)
            try:
                server.start()
            except OSError as e:
                raise ApiServerError(f"cannot listen on {self.host}:{self.requested_port}: {e}") from e
            self._server = server
            self.port = int(server.get_host_and_port()[1])
            _running = self
        try:
            self.admin = self._bootstrap_admin()
            self._post("/moto-api/reset-auth", b"0")
        except Exception:
            self.stop()
            raise
        log.info("embedded AWS API on %s (IAM enforced)", self.endpoint_url)

    def listen_on(self, address: str) -> str:
        """Serve the same API on ``address`` (a subnet gateway), same port; return its URL.

        The local cloud calls this for each bridge it creates, so instances reach the API at
        their gateway; it never listens on any other interface.
        """
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        if self.port is None:
            raise ApiServerError("the embedded AWS API is not running")
        if address not in self._extra:
            app = DomainDispatcherApplication(create_backend_app)
            try:
                server = make_server(address, self.port, app, threaded=True, request_handler=MotoRequestHandler)
            except OSError as e:
                raise ApiServerError(f"cannot listen on {address}:{self.port}: {e}") from e
            thread = threading.Thread(target=server.serve_forever, name=f"api-{address}", daemon=True)
            thread.start()
            self._extra[address] = (server, thread)
            log.info("embedded AWS API also on http://%s:%d", address, self.port)
        return f"http://{address}:{self.port}"

    def stop_listening_on(self, address: str) -> None:
        entry = self._extra.pop(address, None)
        if entry is not None:
            server, thread = entry
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            thread.join(timeout=5)

    def stop(self) -> None:
        global _running
        for address in list(self._extra):
            self.stop_listening_on(address)
        with _lock:
            server = self._server
            self._server = None
            if server is not None:
                server.stop()  # type: ignore[attr-defined]
                inner = getattr(server, "_server", None)
                if inner is not None:
                    inner.server_close()  # ThreadedMotoServer.stop leaves the socket open
            if _running is self:
                _running = None
            self._reset_moto()
            self.port = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------
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
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
            return dict(json.loads(resp.read() or b"{}"))

    def _bootstrap_admin(self) -> AdminCredentials:
        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name=self.region,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName=ADMIN_USER, Tags=[{"Key": "phoenixci:role", "Value": "admin"}])
        iam.put_user_policy(UserName=ADMIN_USER, PolicyName="administrator",
                            PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        return AdminCredentials(key["AccessKeyId"], key["SecretAccessKey"])
