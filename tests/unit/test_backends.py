"""Backends chosen by URL: parsing, the registry, and clear errors for bad URLs."""
from __future__ import annotations

import pytest

from phoenixci.backends import get_backend, parse_url
from phoenixci.backends.aws import AwsBackend
from phoenixci.backends.localstack import LocalstackBackend
from phoenixci.backends.moto import MotoBackend
from phoenixci.errors import ConfigError

pytestmark = pytest.mark.unit


def test_default_is_moto() -> None:
    backend = get_backend(None)
    assert isinstance(backend, MotoBackend)
    assert backend.region == "us-east-1"


@pytest.mark.parametrize("url, cls", [
    ("moto://", MotoBackend),
    ("moto://?region=eu-west-1", MotoBackend),
    ("aws://?region=eu-west-1&profile=ci", AwsBackend),
    ("localstack://localhost:4566", LocalstackBackend),
])
def test_registry_picks_the_backend_class(url: str, cls: type) -> None:
    assert isinstance(get_backend(url), cls)


def test_aws_options_are_read() -> None:
    backend = get_backend("aws://?region=eu-west-1&profile=ci")
    assert backend.region == "eu-west-1"
    assert backend.options["profile"] == "ci"
    assert backend.endpoint_url is None


@pytest.mark.parametrize("url, fragment", [
    ("gcp://", "unknown backend 'gcp://'"),
    ("moto", "has no scheme"),
    ("moto://somehost:5000", "moto:// takes no host"),
    ("aws://?region=eu-west-1&colour=blue", "unknown option(s) colour"),
    ("aws://?region=a&region=b", "given 2 times"),
    ("aws://host?region=eu-west-1", "aws:// takes no host"),
    ("localstack://localhost:notaport", "expected localstack://HOST:PORT"),
    ("localstack://10.1.2.3:4566", "must listen on 127.0.0.0/8"),
])
def test_bad_urls_name_the_problem(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_backend(url)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"moto://, aws://\?region"):
        get_backend("azure://")


def test_aws_without_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError, match="no region"):
        get_backend("aws://")


def test_parse_url() -> None:
    assert parse_url("aws://?region=x&profile=y") == ("aws", "", {"region": "x", "profile": "y"})
