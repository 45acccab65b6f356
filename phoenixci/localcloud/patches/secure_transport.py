"""``aws:SecureTransport`` is true only for requests that came over TLS.

AWS behaviour restored (IAM User Guide, "AWS global condition context keys", aws:SecureTransport:
"whether the request was sent using TLS"): a bucket policy that denies ``aws:SecureTransport``
``false`` refuses a plain ``http://`` request and allows the same request over HTTPS.
moto 5.2.5 evaluates no Bool conditions at all (and the local cloud used to count its plain-HTTP
loopback API as secure). The local cloud's API now speaks HTTPS (api.py, tls.py) and keeps one
plain-HTTP listener on 127.0.0.1, where this key is false.

Decided from the request being served: werkzeug's ``Request.is_secure`` follows the WSGI
``wsgi.url_scheme`` (``https`` on a TLS listener; never taken from X-Forwarded-Proto). A call
CloudFormation makes for its caller has no HTTP request of its own: AWS services call each
other over TLS, so it counts as secure.

Hook: ``_request_context.set_secure_transport`` (no moto symbol is replaced).
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def came_over_tls(http_request: Any) -> bool:
    """True when ``http_request`` arrived over TLS (None: a service acting for the caller)."""
    if http_request is None:
        return True
    return bool(getattr(http_request, "is_secure", False))


def check() -> None:
    from werkzeug.wrappers import Request

    from phoenixci.localcloud.patches import require

    require(Request, "is_secure")


def install() -> None:
    from phoenixci.localcloud.patches._request_context import set_secure_transport

    set_secure_transport(came_over_tls)
    log.debug("aws:SecureTransport follows the request's transport")
