"""The socket work behind Elastic IP forwarding: a listener thread and spliced connections.

``Listener`` accepts on one address in its own thread (a selector with a wake-up socket, so
closing it is immediate and nothing polls). ``Connection`` splices a client to a target with one
thread per direction (so a full buffer one way never stalls the other), forwards half-closes
(EOF one way becomes ``shutdown(SHUT_WR)`` on the other), ends after ``idle_timeout`` seconds
without traffic either way, and turns errors into resets on both sides.
"""
from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

BUFSIZE = 65536


def no_delay(sock: socket.socket) -> None:
    """TCP_NODELAY: a relay passes each piece on at once. With Nagle, a response written in
    two pieces (headers, then body) waits for the peer's delayed ACK: ~40 ms per request."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER 0) instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Listener:
    """Accept TCP connections on (ip, port) and hand each to ``on_accept(sock, peer)``."""

    def __init__(self, ip: str, port: int, on_accept: Callable[[socket.socket, tuple[str, int]], None],
                 *, name: str, backlog: int = 128) -> None:
        self._on_accept = on_accept
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((ip, port))
            self._sock.listen(backlog)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-accept", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return not self._closed.is_set()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._accept_one()

    def _accept_one(self) -> None:
        try:
            sock, peer = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EMFILE and friends: back off instead of spinning
            log.warning("accept failed: %s", e)
            self._closed.wait(0.1)
            return
        sock.setblocking(True)
        no_delay(sock)
        try:
            self._on_accept(sock, peer)
        except Exception:  # noqa: BLE001 - one bad connection must not stop the listener
            log.exception("handling connection from %s failed", peer)
            reset(sock)

    def close(self) -> None:
        """Stop accepting (idempotent); returns when the accept thread has ended."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()


class Connection:
    """One client spliced to ``target``; ``on_done(self)`` runs when both directions ended."""

    def __init__(self, client: socket.socket, target: tuple[str, int], *, connect_timeout: float,
                 idle_timeout: float, on_done: Callable[[Connection], None], name: str) -> None:
        self.client = client
        self.target = target
        self._connect_timeout = connect_timeout
        self._idle = idle_timeout
        self._on_done = on_done
        self._upstream: socket.socket | None = None
        self._lock = threading.Lock()
        self._aborted = False
        self._last = time.monotonic()
        self._name = name
        self._thread = threading.Thread(target=self._run, name=f"{name}-conn", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def abort(self) -> None:
        """Cut both directions now (the blocked threads wake up and reset both sides)."""
        with self._lock:
            self._aborted = True
            socks = [s for s in (self.client, self._upstream) if s is not None]
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self) -> None:
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=self._connect_timeout)
            except OSError as e:
                log.warning("forwarding to %s:%d failed: %s", *self.target, e)
                reset(self.client)
                return
            with self._lock:
                self._upstream = upstream
                aborted = self._aborted
            if aborted:
                reset(upstream)
                reset(self.client)
                return
            no_delay(upstream)
            for s in (self.client, upstream):
                s.settimeout(self._idle)
            back = threading.Thread(target=self._pump, args=(upstream, self.client),
                                    name=f"{self._name}-back", daemon=True)
            back.start()
            self._pump(self.client, upstream)
            back.join()
            self.client.close()
            upstream.close()
        finally:
            self._on_done(self)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy src → dst until EOF (then half-close dst), an error or the idle timeout (abort)."""
        while True:
            try:
                data = src.recv(BUFSIZE)
            except TimeoutError:
                if time.monotonic() - self._last < self._idle:
                    continue  # the other direction was busy: keep waiting
                log.info("connection to %s:%d idle for %gs; closing", *self.target, self._idle)
                self.abort()
                return
            except OSError:
                self.abort()
                return
            if not data:
                if self._aborted:
                    return
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            self._last = time.monotonic()
            try:
                dst.sendall(data)
            except OSError:
                self.abort()
                return
