"""Benchmark: the harness as its users run it, once the base image is built.

Wall time of `pytest -m acceptance` (one session: the fixture chain brings the pipeline up, every
acceptance test, teardown with the leak checks) and of `make demo` (the main job); the time the
session's teardown took (pytest's --durations: the teardown of the last test carries the
session fixtures'); and what either left on this machine (namespaces, links, cgroups, firewall
tables, daemons, mounts of local clouds). Targets: acceptance <= 300 s, demo <= 180 s, leftovers 0.

Prints JSON. Usage: python bench/harness.py [--skip-demo] [--skip-acceptance]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phoenixci.localcloud import cgroups, netlink  # noqa: E402


def host_state() -> set[str]:
    """Everything of any local cloud on this machine (all carry the phx prefix or name)."""
    items = {f"netns {n}" for n in netlink.netns_names() if n.startswith("phx")}
    items |= {f"link {n}" for n in netlink.link_names() if n.startswith("phx")}
    items |= {f"cgroup {p.name}" for p in cgroups.root().glob("phx*")}
    items |= {f"nft {t}" for t in netlink.tables() if t.startswith("phoenixci_")}
    items |= {f"mount {ln.split()[1]}" for ln in Path("/proc/mounts").read_text().splitlines()
              if "phoenixci" in ln.split()[1]}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "phoenixci.localcloud.daemon" in cmd or "container_init.py" in cmd:
                items.add(f"process {proc.name} {cmd[:60]}")
    return items


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
    before = host_state()
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
    left = sorted(host_state() - before)
    result["leftovers"] = len(left)
    result["leftover_items"] = left
    print(json.dumps(result, indent=2))
    failed = any(isinstance(v, dict) and v.get("exit_code") for v in result.values())
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
