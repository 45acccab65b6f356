"""What a failed run leaves for the person debugging it, gathered into the environment's run
directory (``<env-dir>/logs``) before anything is torn down: every build's step logs, each
instance's cloud-init output and journal (CI hosts over SSH, any other instance from its console),
and the events of every stack of the run. The playbook's output is already there."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from phoenixci import stacks
from phoenixci.env import buildbot
from phoenixci.env.state import EnvState
from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)


def collect(state: EnvState, backend: Any) -> Path:
    """Write everything that can still be read into ``state.logs``; return that directory.
    Best effort: what cannot be read is listed in ``missing.txt`` instead."""
    out = state.logs
    out.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    _builds(state, out / "builds", missing)
    _hosts(state, out / "instances", missing)
    _consoles_and_events(state, backend, out, missing)
    (out / "missing.txt").write_text("".join(f"{m}\n" for m in missing))
    log.info("run directory %s (%d item(s) unreadable)", out, len(missing))
    return out


def _builds(state: EnvState, out: Path, missing: list[str]) -> None:
    if not state.ci_url:
        return
    out.mkdir(parents=True, exist_ok=True)
    try:
        for build in buildbot.builds(state.ci_url, limit=200):
            for step in buildbot.steps(state.ci_url, build.build_id):
                if step.name == "worker_preparation":  # Buildbot's own step: it has no log
                    continue
                name = f"{build.number:04d}-{build.revision[:12] or 'norev'}-{step.name}.log"
                try:
                    (out / name).write_text(buildbot.step_log(state.ci_url, build.build_id, step.name))
                except buildbot.BuildbotError as e:
                    missing.append(f"build {build.number} step {step.name}: {e}")
    except buildbot.BuildbotError as e:
        missing.append(f"builds: {e}")


def _hosts(state: EnvState, out: Path, missing: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in state.hosts:
        for what, command in (("cloud-init-output", "sudo cat /var/log/cloud-init-output.log"),
                              ("journal", "sudo journalctl -b --no-pager -o short-iso")):
            try:
                done = subprocess.run(["ssh", "-F", str(state.ssh_config), name, command], capture_output=True,
                                      text=True, timeout=60)
            except subprocess.TimeoutExpired:
                missing.append(f"{name} {what}: ssh timed out")
                continue
            if done.returncode == 0:
                (out / f"{name}-{what}.log").write_text(done.stdout)
            else:
                missing.append(f"{name} {what}: {done.stderr.strip()[-200:]}")


def _consoles_and_events(state: EnvState, backend: Any, out: Path, missing: list[str]) -> None:
    try:
        ec2, cfn = backend.client("ec2"), backend.client("cloudformation")
        found = ec2.describe_instances(Filters=[{"Name": f"tag:{stacks.RUN_ID_TAG}", "Values": [state.run_id]}])
        for inst in (i for r in found["Reservations"] for i in r["Instances"]):
            text = ec2.get_console_output(InstanceId=inst["InstanceId"], Latest=True).get("Output") or ""
            (out / "instances" / f"{inst['InstanceId']}-console.log").write_text(text)
        events = out / "stack-events"
        events.mkdir(parents=True, exist_ok=True)
        for stack in stacks.list_stacks(cfn, run_id=state.run_id):
            lines = [f"{e['Timestamp']} {e.get('LogicalResourceId', '')} {e['ResourceStatus']} "
                     f"{e.get('ResourceStatusReason', '')}".rstrip() for e in stacks.events(cfn, stack.name)]
            (events / f"{stack.name}.log").write_text("".join(f"{ln}\n" for ln in lines))
    except (ClientError, BotoCoreError, PhoenixError) as e:
        missing.append(f"consoles and stack events: {e}")
