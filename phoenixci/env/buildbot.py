"""Reading the pipeline's builds from Buildbot's REST API (anonymous read access)."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from phoenixci.errors import PhoenixError
from phoenixci.util import WaitTimeout, wait_until

log = logging.getLogger(__name__)

RESULTS = {None: "running", 0: "success", 1: "warnings", 2: "failure", 3: "skipped", 4: "exception",
           5: "retry", 6: "cancelled"}


class BuildbotError(PhoenixError):
    """The CI server's API did not answer as expected."""


@dataclass
class Step:
    name: str
    result: str
    state: str
    started_at: float | None = None   # epoch seconds (Buildbot keeps whole seconds); None: not started
    complete_at: float | None = None  # None: not finished


@dataclass
class Build:
    build_id: int
    number: int
    revision: str
    result: str
    state: str
    started_at: float | None
    complete_at: float | None
    steps: list[Step] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.complete_at is not None


def _read(url: str, timeout: float, attempts: int = 3) -> bytes:
    """GET ``url``; a timeout or a dropped connection is retried (the CI server may be restarting)."""
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the run's own CI server
                return bytes(resp.read())
        except urllib.error.HTTPError as e:
            raise BuildbotError(f"cannot read {url}: {e}") from e
        except (urllib.error.URLError, OSError) as e:
            if attempt == attempts:
                raise BuildbotError(f"cannot read {url} ({attempts} attempts): {e}") from e
            log.warning("reading %s failed (%s); trying again", url, e)
    raise AssertionError("not reached")


def get_json(base: str, path: str, *, timeout: float = 10.0) -> Any:
    url = base.rstrip("/") + "/api/v2/" + path.lstrip("/")
    try:
        return json.loads(_read(url, timeout))
    except ValueError as e:
        raise BuildbotError(f"{url} did not answer JSON: {e}") from e


def _build(raw: dict[str, Any]) -> Build:
    props = raw.get("properties") or {}
    revision = (props.get("got_revision") or props.get("revision") or [""])[0] or ""
    return Build(build_id=raw["buildid"], number=raw["number"], revision=str(revision),
                 result=RESULTS.get(raw.get("results"), str(raw.get("results"))),
                 state=raw.get("state_string", ""), started_at=raw.get("started_at"),
                 complete_at=raw.get("complete_at"))


def builds(ci_url: str, *, limit: int = 20) -> list[Build]:
    """The newest builds first."""
    query = urllib.parse.urlencode([("order", "-buildid"), ("limit", str(limit)),
                                    ("property", "got_revision"), ("property", "revision")])
    return [_build(b) for b in get_json(ci_url, f"builds?{query}")["builds"]]


def steps(ci_url: str, build_id: int) -> list[Step]:
    return [Step(s["name"], RESULTS.get(s.get("results"), str(s.get("results"))), s.get("state_string", ""),
                 s.get("started_at"), s.get("complete_at"))
            for s in get_json(ci_url, f"builds/{build_id}/steps")["steps"]]


def step_log(ci_url: str, build_id: int, step: str, *, timeout: float = 10.0) -> str:
    url = f"{ci_url.rstrip('/')}/api/v2/builds/{build_id}/steps/{urllib.parse.quote(step)}/logs/stdio/raw"
    return _read(url, timeout).decode(errors="replace")


def build_of(ci_url: str, revision: str) -> Build | None:
    for build in builds(ci_url, limit=50):
        if build.revision == revision:
            return build
    return None


def wait_for_build(ci_url: str, revision: str, *, timeout: float = 600.0, started_only: bool = False) -> Build:
    """Wait until the build of ``revision`` has started (or finished); return it with its steps."""
    found: Build | None = None

    def ready() -> bool:
        nonlocal found
        found = build_of(ci_url, revision)
        return found is not None and (started_only or found.complete)

    try:
        wait_until(ready, timeout=timeout, interval=0.1 if started_only else 0.5,
                   what=f"the build of {revision[:12]} to {'start' if started_only else 'finish'}")
    except WaitTimeout as e:
        state = f"last seen: build #{found.number} {found.state}" if found else "no build seen"
        raise BuildbotError(f"the build of {revision[:12]} did not {'start' if started_only else 'finish'} "
                            f"within {timeout:g}s ({state}); see {ci_url}") from e
    assert found is not None
    found.steps = steps(ci_url, found.build_id)
    return found
