"""The local cloud's servers and relays send without Nagle (TCP_NODELAY).

They write a response in pieces (headers, then body; each its own TLS record for the API). With
Nagle, a piece after the first waits for the client's delayed ACK: ~40 ms per request on a
kept-alive connection from an instance, which every boto3 call and the pipeline's steps paid.
Checked on the sockets themselves: the option is per socket and invisible to the peer.
"""
from __future__ import annotations

import socket
import threading
import urllib.request

import pytest

from phoenixci.localcloud.api_listen import Listener as ApiListener
from phoenixci.localcloud.eip_splice import Connection, Listener, no_delay
from phoenixci.localcloud.imds import _Handler as ImdsHandler
from phoenixci.localcloud.pkghttp import HttpHandler
from phoenixci.util import free_port

pytestmark = pytest.mark.unit


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_no_delay_sets_the_option_and_ignores_a_closed_socket() -> None:
    sock = socket.socket()
    assert not _nodelay(sock)
    no_delay(sock)
    assert _nodelay(sock)
    sock.close()
    no_delay(sock)  # a connection reset meanwhile: nothing to do, no error


def test_the_api_listener_answers_on_a_nodelay_socket() -> None:
    seen: list[bool] = []

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen.append(_nodelay(environ["werkzeug.socket"]))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    listener = ApiListener("127.0.0.1", 0, app, None)
    try:
        with urllib.request.urlopen(f"{listener.url}/", timeout=5) as resp:  # noqa: S310 - our own loopback listener
            assert resp.read() == b"ok"
    finally:
        listener.stop()
    assert seen == [True]


def test_the_imds_and_package_proxy_handlers_disable_nagle() -> None:
    # socketserver's StreamRequestHandler sets TCP_NODELAY on the connection when this is true
    assert ImdsHandler.disable_nagle_algorithm is True
    assert HttpHandler.disable_nagle_algorithm is True


def test_a_spliced_connection_has_nodelay_on_both_sides() -> None:
    target = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    connections: list[Connection] = []
    done = threading.Event()

    def on_accept(sock: socket.socket, _peer: tuple[str, int]) -> None:
        accepted.append(sock)
        conn = Connection(sock, target.getsockname(), connect_timeout=5, idle_timeout=10,
                          on_done=lambda _c: done.set(), name="test-nodelay")
        connections.append(conn)
        conn.start()

    port = free_port()
    listener = Listener("127.0.0.1", port, on_accept, name="test-nodelay")
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        backend, _ = target.accept()
        client.sendall(b"x")
        assert backend.recv(1) == b"x"
        assert _nodelay(accepted[0])
        upstream = connections[0]._upstream
        assert upstream is not None and _nodelay(upstream)
        backend.close()
        client.close()
        assert done.wait(5)
    finally:
        client.close()
        listener.close()
        target.close()
