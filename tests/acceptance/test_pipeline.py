"""The pipeline, end to end on the local cloud, driven only through public interfaces: the git
remote, the app's address, Buildbot's REST API, the AWS API, SSH with pinned host keys.

Tests run in file order on one environment (``pipeline_env``): each push builds on the last.
"""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from pipeline_kit import (
    Clone,
    app_holder,
    artifact_sha256,
    chromium,
    cli,
    pin_app_server,
    ssh_host,
    step_results,
    wait_build,
)

from phoenixci import stacks
from phoenixci.env import buildbot
from phoenixci.env.state import EnvState
from phoenixci.pipeline.health import probe
from phoenixci.util import wait_until

pytestmark = pytest.mark.acceptance

PIPELINE = ["checkout", "test", "package", "publish", "deploy"]


def served(state: EnvState, path: str = "/version") -> Any:
    with urllib.request.urlopen(state.app_url.rstrip("/") + path, timeout=5) as resp:  # noqa: S310
        body = resp.read().decode()
    return json.loads(body) if path == "/version" else body


def live(state: EnvState) -> str:
    return str(served(state)["revision"])


def push_stopped_at_test(state: EnvState, clone: Clone, message: str, files: dict[str, str | None]) -> str:
    """Commit and push a hostile test; its build must stop at the test step. Returns that step's log."""
    clone.commit(message, files)
    build = wait_build(state, clone.push().revision)
    assert step_results(build).get("test") == "failure"
    return buildbot.step_log(state.ci_url, build.build_id, "test")


def test_up_serves_the_first_commit(pipeline_env: EnvState, clone: Clone) -> None:
    """`phoenixci up` pushed app/ as the first commit of its own repository; it was built too."""
    first = clone.git("rev-list", "--max-parents=0", "HEAD").stdout.strip()
    assert live(pipeline_env) == clone.git("rev-parse", "HEAD").stdout.strip() == first
    build = buildbot.build_of(pipeline_env.ci_url, first)
    assert build is not None and build.result == "success"


def test_a_push_is_built_published_and_served_by_a_new_server(pipeline_env: EnvState, clone: Clone,
                                                              env_backend: Any) -> None:
    ec2, s3, cfn = (env_backend.client(s) for s in ("ec2", "s3", "cloudformation"))
    before_instance, before_rev = app_holder(ec2, pipeline_env), live(pipeline_env)
    page = clone.path / "phoenixapp/templates/index.html"
    headline = f"Welcome to release {time.time_ns()}"
    clone.commit("a new page", {"phoenixapp/templates/index.html":
                                re.sub(r"Welcome to [^<]*", headline, page.read_text(), count=1)})
    pushed = clone.push()
    assert f"build queued for {pushed.revision[:12]}" in pushed.output

    started = buildbot.wait_for_build(pipeline_env.ci_url, pushed.revision, started_only=True, timeout=10)
    assert started.started_at is not None
    assert time.monotonic() - pushed.pushed_at < 1.0 + 0.2, "the build did not start within 1 s of the push"

    build = wait_build(pipeline_env, pushed.revision)
    assert build.result == "success", step_results(build)
    assert [s.name for s in build.steps][1:] == PIPELINE

    bucket = stacks.describe(cfn, pipeline_env.infra_stack).output("ArtifactBucket")
    actual, published = artifact_sha256(s3, bucket, pushed.revision)
    assert actual == published

    assert live(pipeline_env) == pushed.revision
    assert headline in served(pipeline_env, "/")
    now = app_holder(ec2, pipeline_env)
    assert now is not None and now != before_instance, "the release did not get a new server"
    app_stacks = [s.name for s in stacks.list_stacks(cfn, prefix="app-", run_id=pipeline_env.run_id)]
    assert app_stacks == [f"app-{pushed.revision}"], f"old app stack app-{before_rev} not retired"


def test_the_new_app_server_runs_the_release_as_designed(pipeline_env: EnvState, env_backend: Any) -> None:
    ec2 = env_backend.client("ec2")
    holder = app_holder(ec2, pipeline_env)
    assert holder is not None
    host = ssh_host(pipeline_env, pin_app_server(ec2, pipeline_env, holder))
    unit = host.service("phoenixapp")
    assert unit.is_running and unit.is_enabled
    assert host.socket("tcp://0.0.0.0:8080").is_listening
    procs = host.process.filter(comm="python3")
    owners = {p.user for p in procs if "phoenixapp" in p.args}
    assert owners == {"phoenixapp"}, owners
    user = host.user("phoenixapp")
    assert user.uid != 0 and user.shell.endswith("nologin")
    release = f"/opt/phoenixapp/{live(pipeline_env)}"
    assert host.file(release).user == "root"
    probe_write = host.run(f"sudo -u phoenixapp touch {release}/phoenixapp/x.py")
    assert probe_write.rc != 0, "the app user can modify its own release"


def test_ci_server_and_agent_are_configured(pipeline_env: EnvState) -> None:
    server, agent = ssh_host(pipeline_env, "ci-server", sudo=True), ssh_host(pipeline_env, "ci-agent", sudo=True)
    for host, unit in ((server, "buildbot-master"), (agent, "buildbot-worker")):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    workers = buildbot.get_json(pipeline_env.ci_url, "workers")["workers"]
    assert [w["name"] for w in workers if w["connected_to"]] == ["ci-agent"]
    assert server.file("/srv/git/app.git/HEAD").exists
    for hook in ("pre-receive", "post-receive"):
        f = server.file(f"/srv/git/app.git/hooks/{hook}")
        assert f.is_file and f.user == "root" and f.mode == 0o755
    assert agent.service("phoenixci-build-fence").is_enabled
    for host in (server, agent):
        found = host.run("grep -rlsE 'AKIA|ASIA|aws_secret_access_key|AWS_SECRET_ACCESS_KEY' "
                         "/etc /home /root /var/lib /opt --include='*' 2>/dev/null | grep -v -e /opt/.*/site-packages/ "
                         "-e /var/lib/dpkg/ || true")
        assert found.stdout.strip() == "", f"AWS keys on disk of {host}: {found.stdout}"


def test_a_failing_unit_test_stops_at_the_test_step(pipeline_env: EnvState, clone: Clone, env_backend: Any) -> None:
    good = live(pipeline_env)
    greeting = clone.path / "phoenixapp/greeting.py"
    clone.commit("Howdy", {"phoenixapp/greeting.py": greeting.read_text().replace('"Hello', '"Howdy')})
    pushed = clone.push()
    build = wait_build(pipeline_env, pushed.revision)
    assert build.result == "failure"
    assert step_results(build) == {"worker_preparation": "success", "checkout": "success", "test": "failure"}
    s3, cfn = env_backend.client("s3"), env_backend.client("cloudformation")
    bucket = stacks.describe(cfn, pipeline_env.infra_stack).output("ArtifactBucket")
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"app/{pushed.revision}/").get("KeyCount") == 0
    assert live(pipeline_env) == good
    clone.revert_to(good, "back to the green tree")


IMDS_THIEF = '''\
import os
import urllib.error
import urllib.request


def test_take_the_agents_credentials():
    """What a hostile commit tries: the agent's instance-role keys, from the environment or the IMDS."""
    assert not [k for k in os.environ if k.startswith("AWS_")], "AWS variables in the test environment"
    req = urllib.request.Request("http://169.254.169.254/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(req, timeout=3).read().decode()
    base = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    get = lambda url: urllib.request.urlopen(urllib.request.Request(
        url, headers={"X-aws-ec2-metadata-token": token}), timeout=3).read().decode()
    role = get(base).split()[0]
    print("STOLEN", get(base + role))
'''


def test_a_commit_cannot_take_the_agents_credentials(pipeline_env: EnvState, clone: Clone) -> None:
    good = live(pipeline_env)
    log = push_stopped_at_test(pipeline_env, clone, "steal the agent's credentials", {"tests/test_thief.py": IMDS_THIEF})
    assert "STOLEN" not in log and "AccessKeyId" not in log
    assert "Connection refused" in log or "URLError" in log, log[-2000:]
    assert live(pipeline_env) == good
    clone.revert_to(good, "remove the thief")


ESCAPE = '''\
import os
import pathlib
import subprocess


def attempt(what, action):
    try:
        action()
        print("ESCAPED", what, flush=True)
    except Exception as e:  # noqa: BLE001 - every way of failing counts as refused
        print("REFUSED", what, type(e).__name__, flush=True)


def test_leave_something_behind():
    """What a hostile commit tries beyond the IMDS: the worker's secret, what later steps run, a
    process that outlives the step."""
    attempt("read-worker-password", lambda: pathlib.Path(
        "/var/lib/buildbot-worker/worker/worker_password").read_text())
    attempt("list-worker-checkout", lambda: os.listdir("/var/lib/buildbot-worker/worker/app/build/.git/hooks"))
    attempt("write-phoenixci-venv", lambda: pathlib.Path("/opt/phoenixci/venv/bin/phoenixci").write_text("x"))
    attempt("write-pipeline-env", lambda: pathlib.Path("/etc/phoenixci/pipeline.env").write_text("x"))
    attempt("sudo", lambda: subprocess.run(["sudo", "-n", "true"], check=True, capture_output=True))
    subprocess.Popen(["setsid", "sleep", "600"], start_new_session=True)
    print("LEFT a sleeper", flush=True)
    assert False, "stop the build here"
'''


def test_untrusted_tests_cannot_reach_the_worker_or_outlive_their_step(pipeline_env: EnvState,
                                                                      clone: Clone) -> None:
    good = live(pipeline_env)
    log = push_stopped_at_test(pipeline_env, clone, "try to escape the test step", {"tests/test_escape.py": ESCAPE})
    assert "LEFT a sleeper" in log, log[-3000:]
    for what in ("read-worker-password", "list-worker-checkout", "write-phoenixci-venv", "write-pipeline-env",
                 "sudo"):
        assert f"REFUSED {what}" in log, f"{what}: {log[-3000:]}"
    assert "ESCAPED" not in log
    agent = ssh_host(pipeline_env, "ci-agent", sudo=True)
    assert agent.run("pgrep -u phoenixci-test").stdout.strip() == "", "a test process outlived its step"
    assert agent.run("ls -A /var/lib/phoenixci-test").stdout.strip() == "", "the test's copy was left"
    assert live(pipeline_env) == good
    clone.revert_to(good, "remove the escape attempt")


NEVER_HEALTHY = '''\
"""Entry point: this release never becomes healthy (it exits at once)."""
import sys

sys.exit("this release refuses to serve")
'''


def test_a_release_that_never_becomes_healthy_fails_at_deploy(pipeline_env: EnvState, clone: Clone,
                                                             env_backend: Any) -> None:
    ec2, cfn = env_backend.client("ec2"), env_backend.client("cloudformation")
    good, holder = live(pipeline_env), app_holder(ec2, pipeline_env)
    clone.commit("never healthy", {"phoenixapp/__main__.py": NEVER_HEALTHY})
    pushed = clone.push()
    build = wait_build(pipeline_env, pushed.revision, timeout=600)
    results = step_results(build)
    assert results["publish"] == "success" and results["deploy"] == "failure", results
    deploy_log = buildbot.step_log(pipeline_env.ci_url, build.build_id, "deploy")
    # the failed server is gone with its stack: its console was saved into the step's log first
    assert "console of the failed server" in deploy_log and "phoenixapp-bootstrap" in deploy_log, deploy_log[-3000:]
    assert stacks.describe(cfn, f"app-{pushed.revision}") is None, "the failed release's stack is left"
    assert app_holder(ec2, pipeline_env) == holder, "the Elastic IP moved"
    assert live(pipeline_env) == good
    fixed = clone.revert_to(good, "back to a healthy release")
    assert live(pipeline_env) == fixed


def test_a_push_to_another_branch_is_refused(pipeline_env: EnvState, clone: Clone) -> None:
    clone.commit("on a branch", {"NOTES": "x\n"})
    proc = clone.git("push", "origin", "HEAD:feature", check=False)
    assert proc.returncode != 0
    assert "only pushes to 'main' are built" in proc.stderr
    clone.git("reset", "-q", "--hard", "HEAD~1")


def test_rollback_is_one_command(pipeline_env: EnvState, clone: Clone) -> None:
    first = clone.git("rev-list", "--max-parents=0", "HEAD").stdout.strip()
    current = live(pipeline_env)
    cli("deploy", "--revision", first, env_dir=pipeline_env.path)
    assert live(pipeline_env) == first
    cli("deploy", "--revision", current, env_dir=pipeline_env.path)
    assert live(pipeline_env) == current


def test_the_ci_hosts_survive_a_restart(pipeline_env: EnvState, clone: Clone, env_backend: Any) -> None:
    """Stop and start both CI instances (EC2 keeps their disks and private addresses): every unit
    comes back by itself, the IMDS fence is loaded again beside the cloud's own tables, and the
    next push is built and deployed."""
    ec2 = env_backend.client("ec2")
    ids = [h.instance_id for h in pipeline_env.hosts.values()]
    ec2.stop_instances(InstanceIds=ids)
    ec2.get_waiter("instance_stopped").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ec2.start_instances(InstanceIds=ids)
    ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    agent = ssh_host(pipeline_env, "ci-agent", sudo=True)

    def back() -> bool:
        try:
            return bool(agent.service("buildbot-worker").is_running and [
                w for w in buildbot.get_json(pipeline_env.ci_url, "workers")["workers"] if w["connected_to"]])
        except Exception:  # noqa: BLE001 - still booting: ssh or HTTP not answering yet
            return False

    wait_until(back, timeout=180, interval=1, what="the CI hosts to come back with the worker connected")
    tables = agent.run("nft list tables").stdout
    assert "inet phoenixci_build" in tables and "inet phoenixci_sg" in tables, tables
    commit = clone.commit("after a restart", {"NOTES": f"restarted {time.time_ns()}\n"})
    clone.push()
    assert wait_build(pipeline_env, commit).result == "success"
    assert live(pipeline_env) == commit


def test_no_secret_appears_in_a_build_log(pipeline_env: EnvState) -> None:
    secrets = [pipeline_env.secret(n) for n in ("worker_password", "admin_password", "hook_password")]
    assert all(secrets)
    for build in buildbot.builds(pipeline_env.ci_url, limit=50):
        for step in buildbot.steps(pipeline_env.ci_url, build.build_id):
            log = buildbot.step_log(pipeline_env.ci_url, build.build_id, step.name) if step.name != \
                "worker_preparation" else ""
            leaked = [s for s in secrets if s in log]
            assert not leaked, f"a secret is in build {build.number} step {step.name}"
            keys = re.findall(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|AWS_SECRET_ACCESS_KEY=\S+|SessionToken", log)
            assert not keys, f"AWS credentials in build {build.number} step {step.name}: {keys}"


def test_the_playbook_changes_nothing_the_second_time(pipeline_env: EnvState) -> None:
    proc = cli("converge", env_dir=pipeline_env.path)
    assert "playbook done: changed=0 " in proc.stdout, proc.stdout


def test_a_second_up_is_one_clear_line(pipeline_env: EnvState) -> None:
    proc = cli("up", env_dir=pipeline_env.path, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: an environment is already up") and "phoenixci down" in lines[0]
    assert EnvState.load(pipeline_env.path) == pipeline_env, "the second up touched the environment"


def test_status_shows_the_environment(pipeline_env: EnvState) -> None:
    info = json.loads(cli("status", "--json", env_dir=pipeline_env.path).stdout)
    assert {"app_url", "ci_url", "git_remote", "ssh_key", "hosts", "live_revision", "builds"} <= set(info)
    assert info["live_revision"] == live(pipeline_env)
    assert set(info["hosts"]) == {"ci-server", "ci-agent"}
    assert info["builds"] and {"number", "revision", "result"} <= set(info["builds"][0])
    obs = probe(*pipeline_env.app_address)
    assert obs.health_status == 200
    # every command finds the environment without --backend: leaks lists what the run has up
    leaks = cli("leaks", "--run-id", pipeline_env.run_id, env_dir=pipeline_env.path, check=False)
    assert leaks.returncode == 1 and f"stack {pipeline_env.infra_stack}" in leaks.stdout, leaks.stdout


def test_the_builds_page_shows_every_build_and_its_result(pipeline_env: EnvState, artifacts_dir: Any) -> None:
    """Buildbot's own UI, rendered in headless Chromium as a visitor sees it (anonymous)."""
    builder = buildbot.get_json(pipeline_env.ci_url, "builders")["builders"][0]["builderid"]
    shot = artifacts_dir / "buildbot-builds.png"
    builds = buildbot.builds(pipeline_env.ci_url, limit=15)  # the page lists the newest ones
    assert len(builds) >= 5
    rows: dict[int, str] = {}

    def rendered() -> bool:  # the page fills in over its websocket: render again until every row is in
        nonlocal rows
        text = chromium(f"{pipeline_env.ci_url}#/builders/{builder}", artifacts_dir, screenshot=shot)
        rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"main \((\d+)\)(.*?)(?= main \(\d+\)|$)", text)}
        return all(b.number in rows for b in builds)

    wait_until(rendered, timeout=180, interval=1, what="the builds page to list every build")
    for build in builds:
        row = rows[build.number]
        assert build.revision in row
        expected = "build successful" if build.result == "success" else "failed"
        assert expected in row, f"build #{build.number} ({build.result}) shows: {row[:200]}"
    assert shot.stat().st_size > 10_000, "no screenshot"


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the run's own CI server
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_ci_is_read_only_for_anonymous_visitors(pipeline_env: EnvState) -> None:
    """Anyone may read builds; nobody without credentials can trigger, force or stop one; the
    admin login `phoenixci status` shows can (here: rebuild the live revision, a no-op deploy)."""
    import base64
    import http.cookiejar

    ci = pipeline_env.ci_url.rstrip("/")
    force = json.dumps({"id": 1, "jsonrpc": "2.0", "method": "force",
                        "params": {"builderid": "1", "revision": live(pipeline_env)}}).encode()
    as_json = {"Content-Type": "application/json"}
    assert _post(f"{ci}/api/v2/forceschedulers/force", force, as_json) == 403
    change = b"revision=" + b"a" * 40 + b"&branch=main&repository=x&project=app&author=mallory"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _post(f"{ci}/change_hook/base", change, form) == 401
    wrong = {**form, "Authorization": "Basic " + base64.b64encode(b"githook:guess").decode()}
    assert _post(f"{ci}/change_hook/base", change, wrong) == 401
    builds_before = len(buildbot.builds(pipeline_env.ci_url, limit=100))

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = base64.b64encode(f"admin:{pipeline_env.secret('admin_password')}".encode()).decode()
    opener.open(urllib.request.Request(f"{ci}/auth/login", headers={"Authorization": f"Basic {login}"}),
                timeout=10).read()
    with opener.open(urllib.request.Request(f"{ci}/api/v2/forceschedulers/force", data=force, method="POST",
                                            headers=as_json), timeout=10) as resp:
        assert resp.status == 200 and "result" in json.loads(resp.read())
    wait_until(lambda: len(buildbot.builds(pipeline_env.ci_url, limit=100)) == builds_before + 1, timeout=30,
               interval=0.5, what="the admin's forced build to start")
    forced = buildbot.builds(pipeline_env.ci_url, limit=1)[0]
    done = buildbot.wait_for_build(pipeline_env.ci_url, forced.revision, timeout=300)
    assert done.result == "success" and live(pipeline_env) == forced.revision
