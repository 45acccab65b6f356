"""Benchmark: the whole pipeline on the local cloud, as a user runs it.

`phoenixci up` in a fresh environment, then N consecutive pushes, each changing the app's page;
for each: push → build start, push → the new revision served through the app's Elastic IP,
and the time of every stage (Buildbot's step logs; the deploy step's own phases), and push →
serving taken apart (``serving_path_s``: each step before the deploy, the deploy's setup and
phases, and what is left between the steps). A bounded
load (>= 20 requests/s) runs against the app's Elastic IP through all deploys and counts every
request that did not answer 200. Then `phoenixci down`, and what the run left.

``cpu_reference_s`` (cpuref.py) says how fast this machine's CPU was before and after the run.

Prints JSON. Usage: python bench/pipeline.py [--deploys 5] [--rate 25]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpuref import cpu_reference  # noqa: E402

from phoenixci.env import buildbot  # noqa: E402
from phoenixci.env.state import EnvState  # noqa: E402
from phoenixci.util import wait_until  # noqa: E402

GIT_ID = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
          "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


class Load(threading.Thread):
    """GET / at ``rate`` per second until stopped (at most ``max_seconds``); counts failures."""

    def __init__(self, url: str, rate: float, max_seconds: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.max_seconds = url, rate, max_seconds
        self.sent = self.failed = 0
        self.errors: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._halt.is_set() and time.monotonic() - start < self.max_seconds:
            due = start + self.sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)
                continue
            self.sent += 1
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:  # noqa: S310 - the run's own address
                    ok = resp.status == 200
                    resp.read()
            except OSError as e:
                ok = False
                self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
            if not ok:
                self.failed += 1

    def stop(self) -> float:
        self._halt.set()
        self.join(timeout=10)
        return self.sent


def cli(env_dir: Path, *args: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(PHOENIXCI_ENV_DIR=str(env_dir), COLUMNS="200")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "phoenixci", *args], capture_output=True, text=True, env=env,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"phoenixci {' '.join(args)} failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return time.monotonic() - t0, proc.stdout


def git(repo: Path, *args: str, ssh: str) -> str:
    env = {**os.environ, **GIT_ID, "GIT_SSH_COMMAND": ssh}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True,
                          timeout=120).stdout.strip()


def version(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/version", timeout=2) as resp:  # noqa: S310
            return str(json.loads(resp.read())["revision"])
    except (OSError, ValueError, KeyError):
        return None


def stage_times(ci_url: str, build_id: int) -> dict[str, float]:
    """Seconds per step (from each step log's elapsedTime) and the deploy step's own phases."""
    out: dict[str, float] = {}
    for step in buildbot.steps(ci_url, build_id):
        if step.name == "worker_preparation":
            continue
        log = buildbot.step_log(ci_url, build_id, step.name)
        out[step.name] = round(sum(float(x) for x in re.findall(r"^elapsedTime=([0-9.]+)$", log, re.M)), 3)
        timings = re.search(r"^timings: (.+)$", log, re.M)
        if timings:
            for name, value in re.findall(r"(\w+)=([0-9.]+)s", timings.group(1)):
                out[f"deploy.{name}"] = float(value)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploys", type=int, default=5)
    parser.add_argument("--rate", type=float, default=25.0, help="requests per second against the app address")
    args = parser.parse_args()
    result: dict[str, object] = {"benchmark": "pipeline", "backend": "moto://", "deploys": args.deploys,
                                 "load_rate_per_s": args.rate}
    cpu_before = cpu_reference()
    with tempfile.TemporaryDirectory(prefix="phoenixci-bench-") as tmp:
        env_dir = Path(tmp) / "env"
        up_s, _ = cli(env_dir, "up")
        result["up_s"] = round(up_s, 1)
        try:
            load = _deploys(env_dir, Path(tmp), args, result)
        finally:
            down_s, _ = cli(env_dir, "down")
            result["down_s"] = round(down_s, 1)
            result["leftovers"] = _leftovers(env_dir)
    result["cpu_reference_s"] = {"before": cpu_before, "after": cpu_reference()}
    print(json.dumps(result, indent=2))
    return 0 if not result["leftovers"] and load.failed == 0 else 1


def _leftovers(env_dir: Path) -> list[str]:
    """Namespaces, links and nft tables of the environment's cloud still on the machine."""
    from phoenixci.localcloud.runtime import Runtime

    tag = Runtime(env_dir / "cloud" / "runtime").tag
    found = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    found += subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.replace(":", " ").split()
    found += subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split()
    return sorted({word for word in found if tag in word})


def _deploys(env_dir: Path, tmp: Path, args: argparse.Namespace, result: dict[str, object]) -> Load:
    state = EnvState.load(env_dir)
    assert state is not None
    ssh = f"ssh -F {state.ssh_config}"
    repo = tmp / "clone"
    git(tmp, "clone", "-q", state.git_remote, str(repo), ssh=ssh)
    load = Load(state.app_url, args.rate, max_seconds=120 + 60 * args.deploys)
    load.start()
    runs: list[dict] = []
    try:
        for i in range(args.deploys):
            runs.append(_one_deploy(state, repo, i, ssh))
    finally:
        sent = load.stop()
    serving = [r["push_to_serving_s"] for r in runs]
    result.update(
        push_to_serving_s={"p50": pct(serving, 0.5), "p95": pct(serving, 0.95), "max": max(serving)},
        push_to_build_start_s={"p50": pct([r["push_to_build_start_s"] for r in runs], 0.5),
                               "max": max(r["push_to_build_start_s"] for r in runs)},
        stages_p50_s={k: round(statistics.median(r["stages_s"].get(k, 0.0) for r in runs), 3)
                      for k in runs[0]["stages_s"]},
        serving_path_p50_s={k: round(statistics.median(r["serving_path_s"][k] for r in runs), 3)
                            for k in runs[0]["serving_path_s"]},
        load={"sent": sent, "failed": load.failed, "errors": load.errors, "seconds": round(sent / args.rate, 1)},
        runs=runs)
    return load


def _one_deploy(state: EnvState, repo: Path, i: int, ssh: str) -> dict:
    page = repo / "phoenixapp/templates/index.html"
    page.write_text(re.sub(r"Welcome to [^<]*", f"Welcome to bench release {i}", page.read_text(), count=1))
    git(repo, "commit", "-q", "-am", f"bench release {i}", ssh=ssh)
    revision = git(repo, "rev-parse", "HEAD", ssh=ssh)
    t0 = time.monotonic()
    git(repo, "push", "-q", "origin", "main", ssh=ssh)
    pushed = time.monotonic() - t0
    started = buildbot.wait_for_build(state.ci_url, revision, started_only=True, timeout=30)
    t_start = time.monotonic() - t0
    wait_until(lambda: version(state.app_url) == revision, timeout=300, interval=0.05,
               what=f"the app address to serve {revision[:12]}")
    t_serving = time.monotonic() - t0
    build = buildbot.wait_for_build(state.ci_url, revision, timeout=300)
    t_done = time.monotonic() - t0
    stages = stage_times(state.ci_url, started.build_id)
    return {"revision": revision, "push_s": round(pushed, 3), "push_to_build_start_s": round(t_start, 3),
            "push_to_serving_s": round(t_serving, 3), "push_to_build_done_s": round(t_done, 3),
            "result": build.result, "stages_s": stages, "serving_path_s": serving_path(t_start, t_serving, stages)}


#: the steps that run before the deploy, and the deploy's phases up to the address serving
BEFORE_DEPLOY = ("checkout", "test", "package", "publish")
DEPLOY_TO_SERVING = ("deploy.setup", "deploy.stack", "deploy.health", "deploy.move")


def serving_path(build_start: float, serving: float, stages: dict[str, float]) -> dict[str, float]:
    """push → serving, second by second: the push and build start, each step before the deploy,
    the deploy's setup (interpreter, imports, clients, lookups) and phases, and what is left:
    Buildbot starting each step on the worker, and seeing the new revision through the address."""
    path = {"push_to_build_start": build_start, **{k: stages.get(k, 0.0) for k in (*BEFORE_DEPLOY, *DEPLOY_TO_SERVING)}}
    path["between_steps_and_detection"] = serving - sum(path.values())
    return {k: round(v, 3) for k, v in path.items()}


if __name__ == "__main__":
    sys.exit(main())
