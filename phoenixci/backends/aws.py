"""``aws://?region=…&profile=…``: real AWS through the default credential chain."""
from __future__ import annotations

import os

import boto3
from botocore.exceptions import ProfileNotFound

from phoenixci.backends.base import Backend
from phoenixci.errors import ConfigError, CredentialsError


class AwsBackend(Backend):
    scheme = "aws"
    allowed_options = frozenset({"region", "profile"})

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if self.netloc:
            raise ConfigError(f"backend {self.url!r}: aws:// takes no host; "
                              "use aws://?region=REGION&profile=PROFILE")
        region = self.options.get("region") or os.environ.get("AWS_REGION") \
            or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError(f"backend {self.url!r}: no region: add ?region=REGION "
                              "or set AWS_DEFAULT_REGION")
        self._region = region

    @property
    def region(self) -> str:
        return self._region

    def make_session(self) -> boto3.Session:
        profile = self.options.get("profile") or None
        try:
            return boto3.Session(profile_name=profile, region_name=self._region)
        except ProfileNotFound as e:
            raise CredentialsError(f"AWS profile {profile!r} is not configured "
                                   "(see ~/.aws/config); check ?profile=") from e

    def start(self) -> None:
        self.check_credentials()
