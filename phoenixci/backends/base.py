"""The small abstract base every backend implements."""
from __future__ import annotations

import abc
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from phoenixci.errors import ConfigError, CredentialsError

_CLIENT_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)


class Backend(abc.ABC):
    """Where the AWS API answers. Use as a context manager: ``with backend: ...``."""

    #: the URL scheme this backend answers to
    scheme: str = ""
    #: options the URL may carry after ``?``
    allowed_options: frozenset[str] = frozenset()

    def __init__(self, *, url: str, netloc: str, options: dict[str, str]) -> None:
        unknown = set(options) - self.allowed_options
        if unknown:
            allowed = ", ".join(sorted(self.allowed_options)) or "none"
            raise ConfigError(f"backend {url!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                              f"allowed: {allowed}")
        self.url = url
        self.netloc = netloc
        self.options = options
        self._session: boto3.Session | None = None
        self._account_id: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:  # noqa: B027 - optional hook: most backends need no start-up
        """Make the API reachable (start a server, check credentials)."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release whatever ``start`` made."""

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def region(self) -> str:
        """The region requests go to."""

    @property
    def endpoint_url(self) -> str | None:
        """The API endpoint, or None for AWS's own endpoints."""
        return None

    @property
    def ca_bundle(self) -> str | None:
        """The CA certificate(s) the endpoint's TLS is verified with, or None for the default store."""
        return None

    @abc.abstractmethod
    def make_session(self) -> boto3.Session:
        """A boto3 session with the backend's administrative credentials."""

    @property
    def session(self) -> boto3.Session:
        if self._session is None:
            self._session = self.make_session()
        return self._session

    def client(self, service: str, session: boto3.Session | None = None) -> Any:
        """A boto3 client for ``service`` on this backend (optionally with other credentials)."""
        session = session or self.session
        return session.client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                              config=_CLIENT_CONFIG, verify=self.ca_bundle)

    def session_for(self, credentials: dict[str, str]) -> boto3.Session:
        """A session with explicit (e.g. role) credentials on this backend."""
        return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                             aws_secret_access_key=credentials["SecretAccessKey"],
                             aws_session_token=credentials.get("SessionToken"),
                             region_name=self.region)

    def instance_role_session(self, role_arn: str, session_name: str = "phoenixci-test") -> boto3.Session:
        """A session acting as an instance profile's role, as code on an instance would.

        Only the local cloud can hand these out from outside an instance (on AWS only EC2
        may assume a role trusted by ``ec2.amazonaws.com``).
        """
        raise ConfigError(f"backend {self.url} cannot act as instance role {role_arn}: only EC2 "
                          "instances may assume it there; run role tests on moto://")

    @property
    def account_id(self) -> str:
        if self._account_id is None:
            self._account_id = self.check_credentials()
        return self._account_id

    def check_credentials(self) -> str:
        """Return the account id, or raise CredentialsError in one clear line."""
        try:
            identity = self.client("sts").get_caller_identity()
        except NoCredentialsError as e:
            raise CredentialsError(
                f"no AWS credentials found for backend {self.url}: set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass ?profile=NAME") from e
        except ClientError as e:
            raise CredentialsError(f"backend {self.url} rejected the credentials: "
                                   f"{e.response['Error'].get('Message', e)}") from e
        except BotoCoreError as e:
            raise CredentialsError(f"cannot reach the AWS API of backend {self.url}: {e}") from e
        return str(identity["Account"])

    def env(self) -> dict[str, str]:
        """Environment variables that point an AWS client (CLI, SDK) at this backend."""
        creds = self.session.get_credentials()
        env = {"AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.ca_bundle:
            env["AWS_CA_BUNDLE"] = self.ca_bundle
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            env["AWS_ACCESS_KEY_ID"] = str(frozen.access_key)
            env["AWS_SECRET_ACCESS_KEY"] = str(frozen.secret_key)
            if frozen.token:
                env["AWS_SESSION_TOKEN"] = frozen.token
        return env

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
