"""Tell the reconciler when an API request may have changed something (WSGI middleware).

The reconciler ran a pass every 0.2 s whatever happened, so a launch waited ~0.1 s on average
before anything started. Now each request that is not plainly a read (GET/HEAD, or an action named
Describe*/Get*/List*) calls ``on_change`` once moto has answered it, and the reconciler runs a
pass at once (the interval stays as the fallback). A request of the query protocol names its
action in the form body, which is read here (when small) and handed on unchanged.
"""
from __future__ import annotations

import io
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

READ_PREFIXES = ("Describe", "Get", "List")
MAX_INSPECTED = 1 << 20  # larger bodies are not read here: the request counts as a change


def _action(environ: dict[str, Any]) -> str | None:
    """The request's action if it names one (query protocol body or JSON X-Amz-Target), else None."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return query["Action"][0]
    if not str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= MAX_INSPECTED:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return form["Action"][0] if "Action" in form else None


def may_change(environ: dict[str, Any]) -> bool:
    if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD", "OPTIONS"):
        return False
    if str(environ.get("PATH_INFO", "")).startswith("/moto-api/"):
        return True
    action = _action(environ)
    return action is None or not action.startswith(READ_PREFIXES)


class ChangeNotifier:
    def __init__(self, app: Any, on_change: Callable[[], None]) -> None:
        self.app, self.on_change = app, on_change

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        changed = may_change(environ)
        result = self.app(environ, start_response)  # moto has done the work when it returns
        if changed:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - the answer stands; the next timed pass catches up
                log.exception("change notification failed")
        return result
