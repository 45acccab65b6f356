"""``moto://``: the embedded local cloud's AWS API (moto in-process, IAM enforced)."""
from __future__ import annotations

import boto3

from phoenixci.backends.base import Backend
from phoenixci.errors import ConfigError


class MotoBackend(Backend):
    scheme = "moto"
    allowed_options = frozenset({"region"})

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if self.netloc:
            raise ConfigError(f"backend {self.url!r}: moto:// takes no host (the API is started "
                              "in-process on 127.0.0.1); use moto:// or moto://?region=REGION")
        self._region = self.options.get("region", "us-east-1")
        self._api: object | None = None

    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint_url(self) -> str:
        if self._api is None:
            raise ConfigError("the moto:// backend is not started: use it as a context manager")
        return self._api.endpoint_url  # type: ignore[attr-defined]

    def start(self) -> None:
        from phoenixci.localcloud.api import ApiServer

        api = ApiServer(region=self._region)
        api.start()
        self._api = api

    def stop(self) -> None:
        api, self._api = self._api, None
        self._session = None
        self._account_id = None
        if api is not None:
            api.stop()  # type: ignore[attr-defined]

    def instance_role_session(self, role_arn: str, session_name: str = "phoenixci-test") -> boto3.Session:
        from phoenixci.localcloud.rolecreds import mint_role_credentials

        creds = mint_role_credentials(self.account_id, role_arn, session_name, region=self._region)
        return self.session_for(creds)

    def make_session(self) -> boto3.Session:
        admin = self._api.admin if self._api is not None else None  # type: ignore[attr-defined]
        if admin is None:
            raise ConfigError("the moto:// backend is not started: use it as a context manager")
        return boto3.Session(aws_access_key_id=admin.access_key_id,
                             aws_secret_access_key=admin.secret_access_key, region_name=self._region)
