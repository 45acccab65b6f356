"""Backends chosen by URL: how to reach the AWS API.

``moto://``                          the embedded local cloud (default)
``aws://?region=eu-west-1&profile=ci`` real AWS with the default credential chain
``localstack://HOST:PORT``           a LocalStack the user runs

Backends are registered as dotted paths and imported lazily, as pytest-testinfra does.
"""
from __future__ import annotations

import importlib
from urllib.parse import parse_qs, urlsplit

from phoenixci.backends.base import Backend
from phoenixci.errors import ConfigError

DEFAULT_BACKEND = "moto://"

BACKENDS: dict[str, str] = {
    "moto": "phoenixci.backends.moto:MotoBackend",
    "aws": "phoenixci.backends.aws:AwsBackend",
    "localstack": "phoenixci.backends.localstack:LocalstackBackend",
}

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "get_backend", "parse_url"]


def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split a backend URL into (scheme, netloc, single-valued query options)."""
    if "://" not in url:
        raise ConfigError(f"backend URL {url!r} has no scheme: use one of {_known()}")
    parts = urlsplit(url)
    query = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if len(values) != 1:
            raise ConfigError(f"backend URL {url!r}: option {key!r} is given {len(values)} times")
        query[key] = values[0]
    return parts.scheme, parts.netloc, query


def get_backend(url: str | None = None) -> Backend:
    """Return an (unstarted) backend for ``url``; raise ConfigError for an unknown one."""
    url = url or DEFAULT_BACKEND
    scheme, netloc, query = parse_url(url)
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(f"unknown backend {scheme + '://'!r} in {url!r}: use one of {_known()}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(url=url, netloc=netloc, options=query)
    return backend


def _known() -> str:
    return "moto://, aws://?region=REGION&profile=PROFILE, localstack://HOST:PORT"
