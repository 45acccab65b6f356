"""The local cloud's EC2 Instance Metadata Service (IMDSv1 and IMDSv2), stdlib HTTP.

The host DNATs 169.254.169.254:80 arriving from a subnet's bridge to this server on its gateway
(hostsg.py), so the TCP source address is the instance's private IP — which its link lets it
send from alone: that is how the caller is identified (a directory maps it to an ``InstanceInfo``;
unknown → 403).

As in EC2:
- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) returns a
  session token bound to the instance; a missing/bad TTL is 400, a request carrying
  ``X-Forwarded-For`` is 403 (tokens must not leave the instance through a proxy).
- Every GET: a valid token → served; an invalid or expired one → 401; none → 401 when the
  instance's ``HttpTokens`` is ``required``, otherwise served (IMDSv1). ``HttpEndpoint``
  ``disabled`` → 403.
- ``iam/security-credentials/<role>`` hands out real short-lived STS credentials of the
  instance profile's role (cached per instance and role, re-minted ``refresh_before``
  seconds before they expire).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from phoenixci.errors import PhoenixError
from phoenixci.localcloud.imds_creds import CredentialCache, CredentialsProvider, mint_for_instance
from phoenixci.localcloud.imds_tree import VERSIONS, Tree, iso_z, metadata_root
from phoenixci.localcloud.instances import (
    DictInstanceDirectory,
    InstanceDirectory,
    InstanceInfo,
    MotoInstanceDirectory,
)

log = logging.getLogger(__name__)

__all__ = ["CredentialCache", "DictInstanceDirectory", "ImdsError", "ImdsServer", "InstanceDirectory",
           "InstanceInfo", "MotoInstanceDirectory", "mint_for_instance"]

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600

class ImdsError(PhoenixError):
    """The metadata service could not be started."""


class ImdsServer:
    """An IMDS for the instances of ``directory``, on ``host:port`` (0 = any free port)."""

    def __init__(self, directory: InstanceDirectory, *, host: str, port: int = 0,
                 credentials: CredentialsProvider | None = None,
                 source_ip_header: str | None = None, refresh_before: float = 900.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.host = host
        self.requested_port = port
        self.source_ip_header = source_ip_header
        self.clock = clock
        self.credentials = CredentialCache(credentials or mint_for_instance,
                                           refresh_before=refresh_before, clock=clock)
        self._tokens: dict[str, tuple[str, float]] = {}  # token → (instance id, expires at)
        self._tokens_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise ImdsError("the metadata service is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            return
        handler = type("BoundImdsHandler", (_Handler,), {"imds": self})
        try:
            httpd = ThreadingHTTPServer((self.host, self.requested_port), handler)
        except OSError as e:
            raise ImdsError(f"cannot listen on {self.host}:{self.requested_port}: {e}") from e
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name=f"imds-{self.port}",
                                        daemon=True)
        self._thread.start()
        log.info("instance metadata service on %s", self.url)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ImdsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- tokens ---------------------------------------------------------------------------------
    def issue_token(self, instance_id: str, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        now = self.clock()
        with self._tokens_lock:
            for stale in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
                del self._tokens[stale]
            self._tokens[token] = (instance_id, now + ttl)
        return token

    def token_ttl(self, token: str, instance_id: str) -> int | None:
        """Seconds the token has left if it is valid for ``instance_id``, else None."""
        with self._tokens_lock:
            entry = self._tokens.get(token)
        if entry is None or entry[0] != instance_id:
            return None
        left = entry[1] - self.clock()
        return int(left) if left > 0 else None


class _Handler(BaseHTTPRequestHandler):
    imds: ImdsServer
    server_version = "EC2ws"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body are two writes; with Nagle the body waits for the client's
    # delayed ACK, ~40 ms per request on a kept-alive connection (botocore keeps them alive)
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.client_address[0], format % args)

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | str = b"", content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "none")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int) -> None:
        self._send(status, f"{status} - {self.responses[status][0]}\n")

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(min(length, 65536))

    def _source(self) -> str:
        peer = self.client_address[0]
        name = self.imds.source_ip_header
        if name and self.headers.get(name) and ipaddress.ip_address(peer).is_loopback:
            return str(self.headers[name]).strip()
        return peer

    def _caller(self) -> InstanceInfo | None:
        try:
            info = self.imds.directory.by_private_ip(self._source())
        except Exception:
            log.exception("instance lookup for %s failed", self._source())
            self._error(500)
            return None
        if info is None:
            log.warning("metadata request from unknown address %s", self._source())
            self._error(403)
            return None
        if info.http_endpoint != "enabled":
            self._error(403)
            return None
        return info

    # -- methods --------------------------------------------------------------------------------
    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        self._drain()
        if self.path.split("?", 1)[0] != TOKEN_PATH:
            return self._error(405)
        if "X-Forwarded-For" in self.headers:
            return self._error(403)
        info = self._caller()
        if info is None:
            return None
        raw = (self.headers.get(TTL_HEADER) or "").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TTL:
            return self._error(400)
        token = self.imds.issue_token(info.instance_id, int(raw))
        return self._send(200, token, headers={TTL_HEADER: raw})

    def do_GET(self) -> None:  # noqa: N802
        self._drain()
        path = self.path.split("?", 1)[0]
        if path.rstrip("/") == TOKEN_PATH:
            return self._error(405)
        info = self._caller()
        if info is None:
            return None
        headers: dict[str, str] = {}
        token = self.headers.get(TOKEN_HEADER)
        if token is not None:
            left = self.imds.token_ttl(token.strip(), info.instance_id)
            if left is None:
                return self._error(401)
            headers[TTL_HEADER] = str(left)
        elif info.http_tokens == "required":
            return self._error(401)
        return self._serve(info, path, headers)

    do_HEAD = do_GET

    def _method_not_allowed(self) -> None:
        self._drain()
        self._error(405)

    do_POST = do_DELETE = do_PATCH = _method_not_allowed

    # -- content --------------------------------------------------------------------------------
    def _serve(self, info: InstanceInfo, path: str, headers: dict[str, str]) -> None:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._send(200, "\n".join(VERSIONS), headers=headers)
        if parts[0] not in VERSIONS:
            return self._error(404)
        now = datetime.datetime.fromtimestamp(self.imds.clock(), datetime.UTC)
        credentials = (lambda: self._credentials_document(info)) if info.role_arn else None
        node = metadata_root(info, credentials, now).resolve(parts[1:])
        if node is None:
            return self._error(404)
        if isinstance(node, Tree):
            return self._send(200, node.listing(), headers=headers)
        if isinstance(node, bytes):  # user-data
            return self._send(200, node, "application/octet-stream", headers=headers)
        if isinstance(node, str):
            return self._send(200, node, headers=headers)
        try:
            body = node()
        except Exception:
            log.exception("metadata %s for %s failed", path, info.instance_id)
            return self._error(500)
        return self._send(200, body, headers=headers)

    def _credentials_document(self, info: InstanceInfo) -> str:
        now = iso_z(datetime.datetime.fromtimestamp(self.imds.clock(), datetime.UTC))
        try:
            creds = self.imds.credentials.get(info)
        except PhoenixError as e:  # e.g. the role does not trust ec2.amazonaws.com
            log.warning("no credentials for %s: %s", info.instance_id, e)
            return json.dumps({"Code": "AssumeRoleUnauthorizedAccess", "Message": str(e),
                               "LastUpdated": now}, indent=2)
        return json.dumps({
            "Code": "Success", "LastUpdated": iso_z(creds["LastUpdated"]), "Type": "AWS-HMAC",
            "AccessKeyId": creds["AccessKeyId"], "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["Token"], "Expiration": iso_z(creds["Expiration"]),
        }, indent=2)
