"""Zero-downtime phoenix deploys with REAL app servers on the local cloud.

Each release is packaged from a git commit, published as the agent role, and deployed with the
library's ``deploy()`` (real HTTP health gate on the private address): the app-server template's
user data runs in a real instance, fetches the artifact with the app role through the subnet's
API endpoint, verifies it and starts ``phoenixapp``. Meanwhile a bounded load thread sends
requests to the app Elastic IP (a 127.x listener on the host, port 8080). Asserted: not one
request fails once the site is up, and right after every ``deploy()`` returns the Elastic IP
itself serves the new revision (and no later request sees an older one). The load runs through
all the deploys; requests sent before the first deploy returned (the site did not exist yet, the
address was not associated) are reported but not counted as failures.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from phoenixci.harness import Infrastructure
from phoenixci.pipeline.deploy import DEFAULT_DRAIN, DeployResult, Environment, deploy
from phoenixci.pipeline.package import package
from phoenixci.pipeline.publish import publish

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

RELEASES = 4
RATE = 25.0             # requests per second against the Elastic IP
LOAD_MAX_SECONDS = 300  # the load stops by itself after this long at the latest


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@example.invalid",
               GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@example.invalid")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@dataclass(frozen=True)
class Sample:
    started: float
    ended: float
    revision: str | None
    error: str | None


def get_version(ip: str, port: int, timeout: float = 5.0) -> str:
    """The revision /version names, over a fresh TCP connection (no proxy, no keep-alive)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/version", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        return str(json.loads(body)["revision"])
    finally:
        conn.close()


class Load:
    """``rate`` GET /version per second to (ip, port), each on a new connection, until stopped.

    Bounded: stops by itself after ``max_seconds``; at most ``workers`` requests in flight.
    """

    def __init__(self, ip: str, port: int, *, rate: float = RATE, max_seconds: float = LOAD_MAX_SECONDS,
                 workers: int = 16) -> None:
        self.ip, self.port, self.rate, self.max_seconds = ip, port, rate, max_seconds
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zd-load")
        self._thread = threading.Thread(target=self._run, name="zd-load-pacer", daemon=True)
        self.started = self.ended = 0.0

    def _one(self) -> None:
        started = time.monotonic()
        try:
            revision, error = get_version(self.ip, self.port), None
        except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
            revision, error = None, f"{type(e).__name__}: {e}"
        with self._lock:
            self.samples.append(Sample(started, time.monotonic(), revision, error))

    def _run(self) -> None:
        self.started = time.monotonic()
        n = 0
        while not self._stop.is_set() and time.monotonic() - self.started < self.max_seconds:
            self._pool.submit(self._one)
            n += 1
            self._stop.wait(max(0.0, self.started + n / self.rate - time.monotonic()))  # pacing

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True)
        self.ended = time.monotonic()


def release(phoenix_backend: Any, scratch_infra: Infrastructure, env: Environment, repo: Path, build: int,
            out: Path) -> tuple[DeployResult, float]:
    """package → publish → deploy as the agent role; returns the result and deploy()'s duration."""
    artifact = package(repo, "HEAD", build=str(build), out_dir=out)
    agent = phoenix_backend.instance_role_session(scratch_infra.stack.outputs["AgentRoleArn"], f"zd-{build}")
    published = publish(phoenix_backend.client("s3", agent), env.artifact_bucket, artifact)
    began = time.monotonic()
    result = deploy(phoenix_backend.client("cloudformation", agent), phoenix_backend.client("ec2", agent),
                    phoenix_backend.client("s3", agent), env, revision=artifact.revision,
                    artifact_key=published.key, artifact_sha256=published.sha256,
                    health_timeout=120, stack_timeout=120)
    return result, time.monotonic() - began


def test_releases_under_load_drop_nothing(phoenix_backend: Any, scratch_infra: Infrastructure,
                                         release_environment: Environment, app_repo: Path, tmp_path: Path) -> None:
    public_ip = scratch_infra.stack.outputs["AppPublicIp"]
    port = release_environment.app_port
    results: list[DeployResult] = []
    durations: list[float] = []
    returned: list[float] = []  # monotonic time at which each deploy() returned
    right_after: list[str | None] = []  # what the Elastic IP said right after each deploy() returned
    with Load(public_ip, port) as load:
        for n in range(1, RELEASES + 1):
            if n > 1:
                (app_repo / "app" / "VERSION").write_text(f"1.{n}.0\n")
                git(app_repo, "commit", "-q", "-am", f"release {n}")
            result, took = release(phoenix_backend, scratch_infra, release_environment, app_repo, n, tmp_path / f"d{n}")
            returned.append(time.monotonic())
            try:
                right_after.append(get_version(public_ip, port))
            except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
                right_after.append(f"{type(e).__name__}: {e}")
            assert result.retire_error is None
            assert result.address_check == "none", "auto never probes the local cloud's 127.x address"
            assert result.drained == (DEFAULT_DRAIN if results else 0.0)
            if results:
                assert result.previous_instance_id == results[-1].instance_id
                assert result.retired == [results[-1].stack]
            results.append(result)
            durations.append(took)

    launched = returned[0]
    live = [s for s in load.samples if s.started >= launched]
    failed = [s for s in live if s.error is not None]
    seconds = load.ended - launched
    summary = {"requests_after_launch": len(live), "failed": len(failed), "seconds": round(seconds, 1),
               "rate": round(len(live) / seconds, 1), "before_launch": len(load.samples) - len(live),
               "deploy_seconds": [round(d, 2) for d in durations]}
    log.warning("zero-downtime load: %s", summary)
    print(f"\nzero-downtime load: {summary}")
    # right after deploy() returns, the address itself serves the new revision
    assert right_after == [r.revision for r in results], "the Elastic IP lagged behind deploy()"
    assert len(live) / seconds >= 20, summary
    assert not failed, f"{len(failed)} of {len(live)} requests failed: {failed[:5]} ({summary})"
    # once deploy() of release k returned, no request started afterwards sees an older release
    for k, t in enumerate(returned):
        allowed = {r.revision for r in results[k:]}
        stale = [s for s in live if s.started >= t and s.revision not in allowed]
        assert not stale, f"after release {k + 1} returned, {len(stale)} requests saw an older one: {stale[:3]}"
    assert len({r.instance_id for r in results}) == RELEASES, "every release runs on a brand-new server"
