"""Benchmark: the harness as its users run it, once the base image is built.

Wall time of `pytest -m acceptance` (one session: the fixture chain brings the pipeline up, every
acceptance test, teardown with the leak checks) and of `make demo` (the main job); the time the
session's teardown took (pytest's --durations: the teardown of the last test carries the
session fixtures'); and what either left on this machine: the namespaces, links, cgroups,
firewall tables, mounts and processes of every local cloud they started (their state
directories are under the bench's own TMPDIR; other clouds on the machine are not counted). Targets: acceptance <= 300 s, demo <= 180 s, leftovers 0.

Prints JSON. Usage: python bench/harness.py [--skip-demo] [--skip-acceptance]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phoenixci.localcloud.hostcheck import host_leftovers  # noqa: E402


class CloudWatch(threading.Thread):
    """Notes every local cloud whose state directory is under ``root`` (the bench's own: its
    subprocesses get TMPDIR=root), from the tag claims in /run/phoenixci/tags, twice a second."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.seen = str(root), {}  # type: ignore[var-annotated]
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            for claim in Path("/run/phoenixci/tags").glob("phx*"):
                try:
                    state_dir = claim.read_text().strip()
                except OSError:
                    continue
                if state_dir.startswith(self.root):
                    self.seen[claim.name] = state_dir

    def leftovers(self) -> list[str]:
        self.halt.set()
        self.join()
        return [item for tag, state_dir in sorted(self.seen.items()) for item in host_leftovers(tag, state_dir)]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    return time.monotonic() - start, proc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-acceptance", action="store_true")
    parser.add_argument("--no-make", dest="make", action="store_false",
                        help="run `python -m phoenixci demo` from this checkout instead of `make demo`")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PHOENIXCI_"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", COLUMNS="200")
    subprocess.run([sys.executable, "-m", "phoenixci", "image", "build"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=1800)
    own = Path(tempfile.mkdtemp(prefix="phoenixci-bench-"))
    env["TMPDIR"] = str(own)
    watch = CloudWatch(own)
    watch.start()
    result: dict[str, object] = {"machine": {"cpus": os.cpu_count()}}
    if not args.skip_acceptance:
        seconds, proc = timed([sys.executable, "-m", "pytest", "-m", "acceptance", "-q", "-p", "no:cacheprovider",
                               "--durations=0", "--durations-min=0.5"], env)
        summary = (proc.stdout.strip().splitlines() or [""])[-1]
        teardowns = [float(m.group(1)) for m in re.finditer(r"^([\d.]+)s teardown ", proc.stdout, re.M)]
        result["acceptance"] = {"seconds": round(seconds, 1), "exit_code": proc.returncode, "summary": summary,
                                "teardown_seconds": round(max(teardowns, default=0.0), 1),
                                "target_seconds": 300}
    if not args.skip_demo:
        # `make demo` = `make setup` (idempotent: seconds once installed) + `phoenixci demo`
        seconds, proc = timed(["make", "demo"] if args.make else [sys.executable, "-m", "phoenixci", "demo"], env)
        result["demo"] = {"seconds": round(seconds, 1), "exit_code": proc.returncode, "target_seconds": 180,
                          "tail": proc.stdout.strip().splitlines()[-1:] if proc.stdout else []}
    left = watch.leftovers()
    shutil.rmtree(own, ignore_errors=True)
    result["clouds_watched"] = len(watch.seen)
    result["leftovers"] = len(left)
    result["leftover_items"] = left
    print(json.dumps(result, indent=2))
    failed = any(isinstance(v, dict) and v.get("exit_code") for v in result.values())
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
