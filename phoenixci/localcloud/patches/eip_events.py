"""Elastic IP association changes are reported the moment moto makes them.

Not a moto bug but a hook the local cloud needs: its Elastic IPs are host-side forwarders, and
a forwarder must follow an association *before the API call returns*, or a client that moves
an address and then retires the old server sends traffic to a server that is going away (AWS
applies an association with a delay too; the local cloud is stricter, never looser).

Listeners (``add_listener``) are called with the EC2 backend after every outermost
``associate_address``, ``disassociate_address`` and ``release_address`` of moto's
``ElasticAddressBackend`` — so AssociateAddress (a move included), DisassociateAddress,
ReleaseAddress, the disassociation that terminating an instance causes (patches/eip_semantics)
and the EIP resources of CloudFormation stacks. A move's internal disassociate is not reported
on its own: listeners never see the address detached half-way through a move. Listeners run in
the thread of the API request; their errors are logged, never returned to the API caller.

moto 5.2.5 hooks: ``moto.ec2.models.elastic_ip_addresses.ElasticAddressBackend``
``.associate_address``, ``.disassociate_address``, ``.release_address`` (installed after
eip_semantics, so the move it implements is one outermost call).
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[Any], None]

_METHODS = ("associate_address", "disassociate_address", "release_address")
_MARK = "_phoenixci_eip_events"
_listeners: list[Listener] = []
_listeners_lock = threading.Lock()
_depth = threading.local()


def add_listener(listener: Listener) -> None:
    """Call ``listener(ec2_backend)`` after every Elastic IP association change."""
    with _listeners_lock:
        if listener not in _listeners:
            _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _listeners_lock:
        if listener in _listeners:
            _listeners.remove(listener)


def _notify(backend: Any) -> None:
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(backend)
        except Exception:  # noqa: BLE001 - the API call itself succeeded; the listener's owner retries
            log.exception("Elastic IP listener %r failed", listener)


def _reporting(original: Any) -> Any:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_depth, "n", 0)
        _depth.n = depth + 1
        try:
            return original(self, *args, **kwargs)
        finally:
            _depth.n = depth
            if depth == 0:  # the outermost call: moto's state is final now (even after an error)
                _notify(self)

    setattr(wrapper, _MARK, True)
    return wrapper


def check() -> None:
    from moto.ec2.models.elastic_ip_addresses import ElasticAddressBackend

    from phoenixci.localcloud.patches import require

    for name in _METHODS:
        require(ElasticAddressBackend, name)


def install() -> None:
    from moto.ec2.models.elastic_ip_addresses import ElasticAddressBackend

    if getattr(ElasticAddressBackend.release_address, _MARK, False):
        return
    for name in _METHODS:
        setattr(ElasticAddressBackend, name, _reporting(getattr(ElasticAddressBackend, name)))
    log.debug("Elastic IP change events installed")
