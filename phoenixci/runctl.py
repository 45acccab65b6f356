"""A pytest session's run: its id, directory, backend, what to keep, and the end-of-session
leak check. Used by ``phoenixci.plugin`` (options, hooks) and ``phoenixci.fixtures``."""
from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phoenixci.errors import ConfigError, CredentialsError, LeakError

if TYPE_CHECKING:
    import pytest

    from phoenixci.backends import Backend
    from phoenixci.env.state import EnvState

RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,21}")
KEEP = ("never", "on-failure", "always")


@dataclass
class SessionRun:
    run_id: str
    directory: Path
    backend_url: str
    keep: str
    admin_cidr: str
    app_source: Path
    cost_estimate: str = ""                  # aws://: what the session will cost (acknowledged)
    health_timeout: float = 0                # seconds a release gets to serve (0: the backend's default)
    session: Any = None                      # the pytest session (its failure count decides keeping)
    cloud_dir: Path | None = None            # the local cloud daemon of a run that may be kept
    state: EnvState | None = None
    extra_run_ids: set[str] = field(default_factory=set)  # other runs this session made (leak-checked)
    kept: bool = False
    removed_dir: bool = False
    host_checks: list[str] = field(default_factory=list)  # state dirs of the session's local clouds

    def failed(self) -> bool:
        return bool(self.session is not None and self.session.testsfailed)

    def keeping(self) -> bool:
        return self.keep == "always" or (self.keep == "on-failure" and self.failed())

    def kept_message(self) -> str:
        state = self.state
        env = f"PHOENIXCI_ENV_DIR={self.directory}"
        lines = [f"kept run {self.run_id} (--keep={self.keep}); its record: {self.directory}/env.json"]
        if self.cloud_dir is not None:
            lines.append(f"  the local cloud still runs (a daemon, state directory {self.cloud_dir})")
        if state is not None and state.hosts:
            lines.append(f"  app {state.app_url} · Buildbot {state.ci_url} (admin password: {env} phoenixci status)")
            lines.append(f"  ssh -F {state.ssh_config} ci-server   |   ssh -F {state.ssh_config} ci-agent")
            lines.append(f"  GIT_SSH_COMMAND='ssh -F {state.ssh_config}' git clone {state.git_remote}")
        lines.append(f"  remove everything of it: {env} phoenixci clean --run-id {self.run_id}")
        return "\n".join(lines)


def _key() -> Any:
    import pytest

    return pytest.StashKey[SessionRun]()


STASH = _key()


def configure(config: pytest.Config) -> SessionRun:
    """Read and check the options once per session (a bad value: one clear usage error)."""
    import pytest

    from phoenixci.harness import new_run_id

    given = config.getoption("--run-id")
    if given and not RUN_ID.fullmatch(str(given)):
        raise pytest.UsageError(f"--run-id {given!r}: use 1-22 lowercase letters, digits or dashes "
                                "(it names stacks and S3 buckets)")
    keep = str(config.getoption("--keep"))
    if keep not in KEEP:
        raise pytest.UsageError(f"--keep {keep!r}: use one of {', '.join(KEEP)}")
    backend_url = str(config.getoption("--backend"))
    try:
        from phoenixci.backends import get_backend

        get_backend(backend_url)  # unknown scheme or options: one clear line, before anything exists
        estimate = _acknowledge(backend_url, bool(config.getoption("--accept-aws-cost")))
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    health = str(config.getoption("--health-timeout") or "0")
    try:
        health_timeout = float(health)
        if health_timeout < 0:
            raise ValueError(health)
    except ValueError:
        raise pytest.UsageError(f"--health-timeout {health!r}: give seconds (a number > 0)") from None
    run_id = str(given) if given else new_run_id()
    base = config.getoption("--run-dir") or str(config.rootpath / "artifacts" / "runs")
    app_source = Path(config.getoption("--app-source") or config.rootpath / "app")
    run = SessionRun(run_id=run_id, directory=Path(base).resolve() / run_id,
                     backend_url=backend_url, keep=keep,
                     admin_cidr=str(config.getoption("--admin-cidr")), app_source=app_source,
                     cost_estimate=estimate or "", health_timeout=health_timeout)
    config.stash[STASH] = run
    return run


def session_run(config: pytest.Config) -> SessionRun:
    return config.stash[STASH]


def _daemon_url(run: SessionRun) -> str | None:
    """With --keep on plain moto:// the cloud runs as a daemon in the run directory."""
    from phoenixci.backends import parse_url

    scheme, _, options = parse_url(run.backend_url)
    if run.keep == "never" or scheme != "moto" or set(options) - {"region"}:
        return None
    run.cloud_dir = run.directory / "cloud"
    return f"moto://?state-dir={run.cloud_dir}" + (f"&region={options['region']}" if "region" in options else "")


@contextlib.contextmanager
def _started(backend: Backend) -> Iterator[None]:
    try:
        yield
    finally:
        backend.__exit__(None, None, None)


@contextlib.contextmanager
def session_backend(run: SessionRun) -> Iterator[Backend]:
    from phoenixci import leaks
    from phoenixci.backends import get_backend

    if run.cost_estimate:
        print(f"\nphoenixci: {run.cost_estimate}", flush=True)
    url = _daemon_url(run) or run.backend_url
    try:
        if run.cloud_dir is not None:
            from phoenixci.localcloud import daemon

            daemon.start(run.cloud_dir, region=get_backend(url).region)
        try:
            backend = get_backend(url).__enter__()
        except (ConfigError, CredentialsError) as e:  # the same line for every test: say it once, stop
            import pytest

            pytest.exit(f"phoenixci: {e}", returncode=4)
        cloud = getattr(backend, "cloud", None)
        if cloud is not None:
            run.host_checks.append(str(cloud.state_dir))
        with _started(backend):
            yield backend
            if not run.keeping():
                left = [item for rid in sorted({run.run_id, *run.extra_run_ids})
                        for item in leaks.leftovers(backend, rid)]
                if left:
                    raise LeakError(f"the session left {len(left)} resource(s) of its runs: {'; '.join(left)} "
                                    f"(remove them: phoenixci clean --run-id {run.run_id})", leftovers=left)
    finally:
        if run.keeping():
            run.kept = run.state is not None or run.cloud_dir is not None
        else:
            if run.cloud_dir is not None:
                from phoenixci.localcloud import daemon

                swept = daemon.stop(run.cloud_dir)
                if swept:
                    raise LeakError(f"the local cloud daemon left {', '.join(swept)}", leftovers=swept)
                run.host_checks.append(str(run.cloud_dir))
            try:
                _check_host(run)
            finally:
                _tidy(run)


def _check_host(run: SessionRun) -> None:
    """No namespace, link, cgroup, mount, firewall table or process of the session's cloud is left."""
    from phoenixci.localcloud.hostcheck import cloud_tag, wait_gone

    left = [item for state_dir in run.host_checks for item in wait_gone(cloud_tag(state_dir), state_dir)]
    if left:
        raise LeakError(f"the session's local cloud left on this machine: {', '.join(left)}", leftovers=left)


def _acknowledge(backend_url: str, accepted: bool) -> str | None:
    from phoenixci import costs

    return costs.require_acknowledgement(backend_url, accepted, command="pytest")


def _tidy(run: SessionRun) -> None:
    """After a passed session the run directory goes; after a failed one its logs stay."""
    if not run.directory.exists():
        return
    if run.failed() and (run.directory / "logs").exists():
        from phoenixci.chain import remove_run_directory
        from phoenixci.env.state import EnvState

        state = EnvState.load(run.directory)
        if state is not None:
            remove_run_directory(state)
        shutil.rmtree(run.directory / "cloud", ignore_errors=True)
    else:
        shutil.rmtree(run.directory, ignore_errors=True)
        run.removed_dir = True


@contextlib.contextmanager
def session_env(run: SessionRun, backend: Backend) -> Iterator[EnvState]:
    from phoenixci.chain import new_state
    from phoenixci.env.state import EnvState

    existing = EnvState.load(run.directory)
    if existing is not None:
        raise ConfigError(f"run {run.run_id} already has a record in {run.directory} (a kept run?): "
                          f"remove it with `PHOENIXCI_ENV_DIR={run.directory} phoenixci clean --run-id {run.run_id}` "
                          "or choose another --run-id")
    state = new_state(backend, run.run_id, run.directory, cloud_dir=str(run.cloud_dir or ""),
                      health_timeout=run.health_timeout)
    run.state = state
    yield state


def collect_if_failed(run: SessionRun, state: EnvState, backend: Backend) -> None:
    """Before teardown of a failed session: build logs, consoles, journals, stack events."""
    if not run.failed():
        return
    from phoenixci.env.collect import collect
    from phoenixci.errors import PhoenixError

    try:
        collect(state, backend)
    except (PhoenixError, OSError) as e:
        print(f"phoenixci: could not gather everything into {state.logs}: {e}", flush=True)
