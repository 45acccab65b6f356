"""``moto://``: the local cloud — moto in-process with IAM enforced, plus real instances.

``moto://``                    a local cloud in this process: the API, and every running EC2
                               instance a real system container (needs root)
``moto://?instances=off``      the API alone (no root needed; instances stay rows in a table)
``moto://?state-dir=DIR``      attach to the local cloud daemon of ``phoenixci cloud start``
``…&region=REGION``            the region (default us-east-1; attached: the daemon's region)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import boto3

from phoenixci.backends.base import Backend
from phoenixci.errors import ConfigError


class MotoBackend(Backend):
    scheme = "moto"
    allowed_options = frozenset({"region", "instances", "state-dir"})

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if self.netloc:
            raise ConfigError(f"backend {self.url!r}: moto:// takes no host (the API is started "
                              "in-process on 127.0.0.1); use moto://, moto://?instances=off or "
                              "moto://?state-dir=DIR")
        self._region = self.options.get("region", "us-east-1")
        instances = self.options.get("instances", "on")
        if instances not in {"on", "off"}:
            raise ConfigError(f"backend {self.url!r}: instances={instances!r}: use on or off")
        self._instances = instances == "on"
        self._attach = self.options.get("state-dir")
        self._api: Any = None
        self._cloud: Any = None
        self._tmp_state: Path | None = None
        self._attached: dict[str, str] | None = None

    @property
    def region(self) -> str:
        return self._region

    @property
    def cloud(self) -> Any:
        """The in-process LocalCloud (None with instances=off or when attached)."""
        return self._cloud

    @property
    def endpoint_url(self) -> str:
        if self._attached is not None:
            return self._attached["AWS_ENDPOINT_URL"]
        if self._api is None:
            raise ConfigError("the moto:// backend is not started: use it as a context manager")
        return str(self._api.endpoint_url)

    @property
    def ca_bundle(self) -> str | None:
        """The local cloud's CA (the API speaks HTTPS with a certificate it issued)."""
        if self._attached is not None:
            return self._attached.get("AWS_CA_BUNDLE") or None
        return str(self._api.ca_bundle) if self._api is not None else None

    @property
    def http_endpoint_url(self) -> str | None:
        """The in-process API's plain-HTTP listener on 127.0.0.1 (aws:SecureTransport false there)."""
        return str(self._api.http_endpoint_url) if self._api is not None else None

    def start(self) -> None:
        if self._attach:
            self._attached = _read_env(Path(self._attach))
            if "region" not in self.options:  # the region the daemon serves (`cloud start --region`)
                self._region = self._attached.get("AWS_DEFAULT_REGION", self._region)
            return
        if self._instances:
            from phoenixci.localcloud.cloud import LocalCloud, LocalCloudError

            if os.geteuid() != 0:
                raise LocalCloudError("moto:// runs real instances and needs root; run as root, or use "
                                      "moto://?instances=off for the API alone")
            self._tmp_state = Path(tempfile.mkdtemp(prefix="phoenixci-cloud-"))
            cloud = LocalCloud(self._tmp_state, region=self._region)
            try:
                cloud.start()
            except BaseException:
                shutil.rmtree(self._tmp_state, ignore_errors=True)
                raise
            self._cloud, self._api = cloud, cloud.api
            return
        from phoenixci.localcloud.api import ApiServer

        api = ApiServer(region=self._region)
        api.start()
        self._api = api

    def stop(self) -> None:
        cloud, api = self._cloud, self._api
        self._cloud = self._api = self._attached = None
        self._session = None
        self._account_id = None
        try:
            if cloud is not None:
                cloud.stop()
            elif api is not None:
                api.stop()
        finally:
            if self._tmp_state is not None:
                shutil.rmtree(self._tmp_state, ignore_errors=True)
                self._tmp_state = None

    @property
    def image_id(self) -> str | None:
        """The local cloud's base image (an AMI id), when instances are real."""
        if self._cloud is not None:
            return str(self._cloud.image_id)
        if self._attach:
            ready = Path(self._attach) / "ready.json"
            return str(json.loads(ready.read_text())["image_id"]) if ready.exists() else None
        return None

    @property
    def runs_instances(self) -> bool:
        """Real instances behind the API (in this process or in an attached daemon)."""
        return self._cloud is not None or bool(self._attach)

    def local_subnet(self, cidr: str) -> dict[str, str]:
        """The local cloud's gateway services for a subnet it serves (api_url, mirror_url,
        gateway, bridge); empty until the cloud has made the subnet's bridge."""
        if self._cloud is not None:
            status = self._cloud.status()
        elif self._attach:  # the daemon's (or an in-process cloud's) last status
            try:
                status = json.loads((Path(self._attach) / "status.json").read_text())
            except (OSError, ValueError):
                return {}
        else:
            return {}
        return dict(status.get("subnets", {}).get(cidr) or {})

    def instance_role_session(self, role_arn: str, session_name: str = "phoenixci-test") -> boto3.Session:
        if self._attached is not None:
            return super().instance_role_session(role_arn, session_name)
        from phoenixci.localcloud.rolecreds import mint_role_credentials

        creds = mint_role_credentials(self.account_id, role_arn, session_name, region=self._region)
        return self.session_for(creds)

    def make_session(self) -> boto3.Session:
        if self._attached is not None:
            return boto3.Session(aws_access_key_id=self._attached["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=self._attached["AWS_SECRET_ACCESS_KEY"],
                                 region_name=self._region)
        admin = self._api.admin if self._api is not None else None
        if admin is None:
            raise ConfigError("the moto:// backend is not started: use it as a context manager")
        return boto3.Session(aws_access_key_id=admin.access_key_id,
                             aws_secret_access_key=admin.secret_access_key, region_name=self._region)


def _read_env(state_dir: Path) -> dict[str, str]:
    env_file = state_dir / "env"
    if not env_file.exists():
        raise ConfigError(f"no local cloud runs on {state_dir} (no {env_file}): "
                          f"start one with `phoenixci cloud start --state-dir {state_dir}`")
    env = {}
    for line in env_file.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    return env
