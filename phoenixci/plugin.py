"""pytest plugin (entry point ``pytest11``): options, hooks, and the fixtures of
``phoenixci.fixtures`` (see there, and the README's "Testing your pipeline").

Options (each with an environment fallback):
  --backend URL        PHOENIXCI_BACKEND   moto:// (default), aws://?region=…&profile=…, localstack://
  --keep WHEN          PHOENIXCI_KEEP      never | on-failure | always (what to keep after the session)
  --run-id ID          PHOENIXCI_RUN_ID    the run id every resource of the session is tagged with
  --run-dir DIR        PHOENIXCI_RUN_DIR   where run directories go (default artifacts/runs/)
  --admin-cidr CIDR    PHOENIXCI_ADMIN_CIDR
  --app-source DIR     PHOENIXCI_APP_SOURCE the app an empty CI repository is seeded with (default app/)
  --health-timeout S   PHOENIXCI_HEALTH_TIMEOUT  seconds a release gets to serve (the pipeline's deploy step)
  --accept-aws-cost    PHOENIXCI_ACCEPT_AWS_COST=1  required on aws:// (it creates billable instances)
"""
from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from phoenixci import runctl
from phoenixci.fixtures import (  # noqa: F401 - fixtures are registered by being names of the plugin
    app_server_host,
    ci_agent_host,
    ci_server_host,
    phoenix_backend,
    phoenix_ci,
    phoenix_cli,
    phoenix_env,
    phoenix_infra,
    phoenix_key_pair,
    phoenix_release,
    phoenix_repo,
    phoenix_run_dir,
    phoenix_run_id,
    push_commit,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    env = os.environ.get
    group = parser.getgroup("phoenixci")
    group.addoption("--backend", default=env("PHOENIXCI_BACKEND", "moto://"),
                    help="where the AWS API answers: moto:// (default), aws://?region=R&profile=P, "
                         "localstack://HOST:PORT [env PHOENIXCI_BACKEND]")
    group.addoption("--keep", default=env("PHOENIXCI_KEEP", "never"), metavar="WHEN",
                    help="keep the session's run afterwards: never (default), on-failure, always; on moto:// "
                         "the local cloud then runs as a daemon that outlives pytest [env PHOENIXCI_KEEP]")
    group.addoption("--run-id", default=env("PHOENIXCI_RUN_ID"),
                    help="name the session's run (tag phoenixci:run-id); default a new phx-XXXXXXXX "
                         "[env PHOENIXCI_RUN_ID]")
    group.addoption("--run-dir", default=env("PHOENIXCI_RUN_DIR"),
                    help="directory for run directories (default <rootdir>/artifacts/runs) [env PHOENIXCI_RUN_DIR]")
    group.addoption("--admin-cidr", default=env("PHOENIXCI_ADMIN_CIDR", "127.0.0.1/32"),
                    help="CIDR allowed to reach the CI server's SSH and web UI [env PHOENIXCI_ADMIN_CIDR]")
    group.addoption("--app-source", default=env("PHOENIXCI_APP_SOURCE"),
                    help="the app an empty CI repository is seeded with (default <rootdir>/app) "
                         "[env PHOENIXCI_APP_SOURCE]")
    group.addoption("--health-timeout", default=env("PHOENIXCI_HEALTH_TIMEOUT"), metavar="SECONDS",
                    help="seconds the pipeline's deploy step gives a new server to serve (default 30 on moto://, "
                         "600 on aws://) [env PHOENIXCI_HEALTH_TIMEOUT]")
    group.addoption("--accept-aws-cost", action="store_true",
                    default=env("PHOENIXCI_ACCEPT_AWS_COST", "").lower() in {"1", "true", "yes"},
                    help="on aws://: accept that the session creates billable resources "
                         "[env PHOENIXCI_ACCEPT_AWS_COST=1]")


def pytest_configure(config: pytest.Config) -> None:
    from phoenixci.signals import terminate_as_interrupt

    runctl.configure(config)
    terminate_as_interrupt()  # SIGTERM tears down like Ctrl-C (every fixture's finalizer runs)


def pytest_sessionstart(session: pytest.Session) -> None:
    runctl.session_run(session.config).session = session


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = str(config.getoption("--backend"))
    if backend.startswith("localstack://"):
        _skip_on_localstack(backend, items)
    if backend.startswith("aws://"):
        return
    skip = pytest.mark.skip(reason="needs real AWS: run with --backend aws://?region=…")
    for item in items:
        if "aws" in item.keywords:
            item.add_marker(skip)


#: fixtures that need instances that really run (LocalStack's EC2 only records rows)
NEEDS_INSTANCES = {"phoenix_ci", "phoenix_repo", "push_commit", "phoenix_release", "ci_server_host", "ci_agent_host",
                   "app_server_host", "release_environment"}


def _skip_on_localstack(backend: str, items: list[pytest.Item]) -> None:
    from phoenixci.backends.localstack import NO_INSTANCES, skip_reason

    reason = skip_reason(backend)  # probed once per session
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & NEEDS_INSTANCES:
            item.add_marker(pytest.mark.skip(reason=NO_INSTANCES))
        elif reason is not None and "phoenix_backend" in fixtures:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                           pytest.TestReport]:
    report = yield
    run = runctl.session_run(item.config)
    if report.failed and run.state is not None:
        report.sections.append(("phoenixci", f"run directory of this session: {run.directory} "
                                             "(logs/ holds builds, playbook, consoles, journals, stack events)"))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    run = runctl.session_run(config)
    if run.kept:
        terminalreporter.section("phoenixci: kept run", yellow=True)
        terminalreporter.write_line(run.kept_message())
    elif run.failed() and run.state is not None and not run.removed_dir:
        terminalreporter.section("phoenixci", red=True)
        terminalreporter.write_line(f"run directory of the failed session: {run.directory} (everything it made "
                                    "was removed; its logs stay)")
