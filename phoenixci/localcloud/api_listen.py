"""The API's listeners: moto's WSGI app behind werkzeug, over TLS (or plain HTTP on loopback).

werkzeug wraps the *listening* socket, so the TLS handshake runs inside ``accept()`` on the
serving thread: one client that connects and sends nothing stalls every other. Here the
listening socket stays plain and each connection is wrapped in its own thread, with a handshake
timeout. A plain-HTTP request to the TLS port gets a one-line 400 naming ``https://`` (what
AWS's TLS-only endpoints and nginx do) instead of a hang or a reset.
"""
from __future__ import annotations

import functools
import logging
import socket
import ssl
import threading
from typing import Any

from werkzeug.serving import ThreadedWSGIServer

from phoenixci.localcloud.tls import TlsIdentity

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
STOP_POLL_S = 0.05  # stop() waits for serve_forever's next poll (its default: 0.5 s per listener)
TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends
_PLAIN_HTTP_TEXT = b"This endpoint speaks HTTPS only: use https:// (and AWS_CA_BUNDLE from the env file).\n"
PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_HTTP_TEXT), _PLAIN_HTTP_TEXT))


class TlsWSGIServer(ThreadedWSGIServer):
    """werkzeug's threaded server with the handshake moved into each connection's thread."""

    def __init__(self, host: str, port: int, app: Any, handler: Any, identity: TlsIdentity) -> None:
        super().__init__(host, port, app, handler)  # a plain listening socket
        self.identity = identity
        self.ssl_context = identity.context  # werkzeug: wsgi.url_scheme = https

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first and first[0] != TLS_RECORD_HANDSHAKE:
            try:
                request.recv(65536)  # read the request, so closing does not reset the answer away
                request.sendall(PLAIN_HTTP_ANSWER)
            except OSError:
                pass
            return
        self.identity.renew_if_due()
        context = self.identity.context
        self.ssl_context = context
        try:
            tls = context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log.debug("TLS handshake with %s failed: %s", client_address[0], e)
            return
        try:
            tls.settimeout(None)
            super().finish_request(tls, client_address)
        finally:
            tls.close()


@functools.cache
def _handler() -> type:
    """moto's request handler with TCP_NODELAY. werkzeug writes a response's headers and its
    body separately (each its own TLS record); with Nagle the body waits for the client's
    delayed ACK: +15 ms per call on loopback, ~+35 ms from an instance (measured), on every
    call over a kept-alive connection, which boto3 and the CLI use."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    return type("NoDelayRequestHandler", (MotoRequestHandler,), {"disable_nagle_algorithm": True})


class Listener:
    """One address:port serving ``app`` in a daemon thread (TLS when ``identity`` is given)."""

    def __init__(self, address: str, port: int, app: Any, identity: TlsIdentity | None) -> None:
        handler = _handler()
        if identity is not None:
            self.server: ThreadedWSGIServer = TlsWSGIServer(address, port, app, handler, identity)
        else:
            self.server = ThreadedWSGIServer(address, port, app, handler)
        self.scheme = "https" if identity is not None else "http"
        self.address = address
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, args=(STOP_POLL_S,),
                                        name=f"api-{address}:{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
