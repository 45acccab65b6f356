"""One base error with specific subclasses that carry context.

The CLI prints ``str(error)`` and exits 1; a traceback is shown only with ``--debug``.
"""
from __future__ import annotations


class PhoenixError(Exception):
    """Base class of every error phoenixci raises on purpose."""


class ConfigError(PhoenixError):
    """Bad input from the user: an unknown backend URL, a missing option, a bad value."""


class CredentialsError(PhoenixError):
    """No usable AWS credentials for the chosen backend."""


class TemplateError(PhoenixError):
    """A CloudFormation template that cannot be read or is rejected."""


class StackError(PhoenixError):
    """A stack operation failed; carries the stack name, failing resource and events."""

    def __init__(self, message: str, *, stack: str, events: list[dict] | None = None,
                 resource: str | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.stack = stack
        self.events = events or []
        self.resource = resource
        self.status = status


class PackageError(PhoenixError):
    """Packaging the application failed (bad revision, not a git repo, ...)."""


class PublishError(PhoenixError):
    """Publishing an artifact failed or would overwrite different bytes."""


class DeployError(PhoenixError):
    """A phoenix deploy failed; the previous version keeps serving. ``console`` holds the end of
    the failed server's console, saved before its stack was deleted (empty if unavailable)."""

    def __init__(self, message: str, *, console: str = "") -> None:
        super().__init__(message)
        self.console = console


class HealthCheckError(DeployError):
    """The new server did not become healthy in time; carries the last observed state."""

    def __init__(self, message: str, *, last_state: object = None) -> None:
        super().__init__(message)
        self.last_state = last_state


class LeakError(PhoenixError):
    """Resources tagged with a run id are still present after teardown."""

    def __init__(self, message: str, *, leftovers: list[str]) -> None:
        super().__init__(message)
        self.leftovers = leftovers
