"""``localstack://HOST:PORT``: a LocalStack the user runs (only on loopback)."""
from __future__ import annotations

import ipaddress
import socket

import boto3

from phoenixci.backends.base import Backend
from phoenixci.errors import ConfigError


class LocalstackBackend(Backend):
    scheme = "localstack"
    allowed_options = frozenset({"region"})

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        host, _, port = (self.netloc or "127.0.0.1:4566").rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"backend {self.url!r}: expected localstack://HOST:PORT")
        addr = socket.gethostbyname(host or "127.0.0.1")
        if not ipaddress.ip_address(addr).is_loopback:
            raise ConfigError(f"backend {self.url!r}: LocalStack must listen on 127.0.0.0/8, not {addr}")
        self._endpoint = f"http://{addr}:{port}"
        self._region = self.options.get("region", "us-east-1")

    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint_url(self) -> str:
        return self._endpoint

    def make_session(self) -> boto3.Session:
        return boto3.Session(aws_access_key_id="test", aws_secret_access_key="test",
                             region_name=self._region)

    def start(self) -> None:
        self.check_credentials()
