"""The pipeline, end to end, written with phoenixci's fixtures only: the git remote
(``phoenix_repo``, ``push_commit``), the app's address, Buildbot's REST API, the AWS API
(``phoenix_backend``), testinfra hosts (``ci_server_host``, ``ci_agent_host``,
``app_server_host``) and the ``phoenixci`` command (``phoenix_cli``).

Tests run in file order on one environment: each push builds on the last.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from phoenixci import browser, chain, stacks
from phoenixci.chain import AppRepo, Release
from phoenixci.env import buildbot
from phoenixci.env.state import EnvState
from phoenixci.pipeline.health import probe
from phoenixci.util import wait_until

pytestmark = pytest.mark.acceptance

PIPELINE = ["checkout", "test", "package", "publish", "deploy"]


def served(env: EnvState, path: str = "/version") -> Any:
    with urllib.request.urlopen(env.app_url.rstrip("/") + path, timeout=5) as resp:  # noqa: S310
        body = resp.read().decode()
    return json.loads(body) if path == "/version" else body


def live(env: EnvState) -> str:
    return str(served(env)["revision"])


def repair(repo: AppRepo, push_commit: Any, good: str, message: str) -> Release:
    """Push a commit whose tree is ``good``'s, as a developer repairs a red pipeline."""
    repo.revert_to(good, message)
    fixed = push_commit(None)
    assert fixed.succeeded, f"the repair failed at {fixed.failed_step}"
    return fixed


def stopped_at_test(env: EnvState, release: Release) -> str:
    """A hostile commit's build must stop at the test step; returns that step's log."""
    assert release.steps.get("test") == "failure", release.steps
    assert release.artifact_key is None and release.serving_revision != release.revision
    return buildbot.step_log(env.ci_url, release.build.build_id, "test")


def test_the_first_release_is_the_first_commit(phoenix_release: Release, phoenix_repo: AppRepo) -> None:
    """The app was pushed as the first commit of the CI server's repository, built and released."""
    first = phoenix_repo.git("rev-list", "--max-parents=0", "HEAD").stdout.strip()
    assert phoenix_release.revision == first and phoenix_release.succeeded
    assert [s.name for s in phoenix_release.build.steps][1:] == PIPELINE
    assert phoenix_release.serving_revision == first and phoenix_release.serving_instance


def test_a_push_is_built_published_and_served_by_a_new_server(phoenix_ci: EnvState, phoenix_release: Release,
                                                              phoenix_repo: AppRepo, phoenix_backend: Any) -> None:
    env, cfn = phoenix_ci, phoenix_backend.client("cloudformation")
    before_instance, before_rev = chain.app_holder(phoenix_backend, env), live(env)
    page = phoenix_repo.path / "phoenixapp/templates/index.html"
    headline = f"Welcome to release {time.time_ns()}"
    revision = phoenix_repo.commit("a new page", {"phoenixapp/templates/index.html": re.sub(
        r"(<p>)[^<]*(</p>)", rf"\g<1>{headline}\g<2>", page.read_text(), count=1)})
    output, pushed_at = phoenix_repo.push()
    assert f"build queued for {revision[:12]}" in output

    started = buildbot.wait_for_build(env.ci_url, revision, started_only=True, timeout=10)
    assert started.started_at is not None
    assert time.monotonic() - pushed_at < 1.0 + 0.2, "the build did not start within 1 s of the push"

    build = buildbot.wait_for_build(env.ci_url, revision, timeout=300)
    assert build.result == "success", {s.name: s.result for s in build.steps}
    assert [s.name for s in build.steps][1:] == PIPELINE
    key, sha256 = chain.published_artifact(phoenix_backend, env, revision)  # checks the published sha256
    assert key and sha256

    assert live(env) == revision
    assert headline in served(env, "/")
    now = chain.app_holder(phoenix_backend, env)
    assert now is not None and now != before_instance, "the release did not get a new server"
    app_stacks = [s.name for s in stacks.list_stacks(cfn, prefix="app-", run_id=env.run_id)]
    assert app_stacks == [f"app-{revision}"], f"old app stack app-{before_rev} not retired"


def test_the_new_app_server_runs_the_release_as_designed(phoenix_ci: EnvState, app_server_host: Any) -> None:
    host = app_server_host
    unit = host.service("phoenixapp")
    assert unit.is_running and unit.is_enabled
    assert host.socket("tcp://0.0.0.0:8080").is_listening
    procs = host.process.filter(comm="python3")
    owners = {p.user for p in procs if "phoenixapp" in p.args}
    assert owners == {"phoenixapp"}, owners
    user = host.user("phoenixapp")
    assert user.uid != 0 and user.shell.endswith("nologin")
    release = f"/opt/phoenixapp/{live(phoenix_ci)}"
    assert host.file(release).user == "root"
    probe_write = host.run(f"sudo -u phoenixapp touch {release}/phoenixapp/x.py")
    assert probe_write.rc != 0, "the app user can modify its own release"


def test_ci_server_and_agent_are_configured(phoenix_ci: EnvState, ci_server_host: Any, ci_agent_host: Any) -> None:
    server, agent = ci_server_host, ci_agent_host
    for host, unit in ((server, "buildbot-master"), (agent, "buildbot-worker")):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    workers = buildbot.get_json(phoenix_ci.ci_url, "workers")["workers"]
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


def test_a_failing_unit_test_stops_at_the_test_step(phoenix_ci: EnvState, phoenix_repo: AppRepo,
                                                    push_commit: Any) -> None:
    good = live(phoenix_ci)
    greeting = phoenix_repo.path / "phoenixapp/greeting.py"
    release = push_commit({"phoenixapp/greeting.py": greeting.read_text().replace('"Hello', '"Howdy')}, "Howdy")
    assert release.build.result == "failure"
    assert release.steps == {"worker_preparation": "success", "checkout": "success", "test": "failure"}
    assert release.artifact_key is None, "a failed build published an artifact"
    assert live(phoenix_ci) == good == release.serving_revision
    repair(phoenix_repo, push_commit, good, "back to the green tree")


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


def test_a_commit_cannot_take_the_agents_credentials(phoenix_ci: EnvState, push_commit: Any) -> None:
    """One hostile commit carries both attempts (this one and the next test's): its build stops at
    the test step; the next test reads the same log, then repairs the tree."""
    good = live(phoenix_ci)
    release = push_commit({"tests/test_thief.py": IMDS_THIEF, "tests/test_escape.py": ESCAPE}, "a hostile commit")
    HOSTILE.update(release=release, good=good)
    log = stopped_at_test(phoenix_ci, release)
    assert "STOLEN" not in log and "AccessKeyId" not in log
    assert "Connection refused" in log or "URLError" in log, log[-2000:]
    assert live(phoenix_ci) == good


HOSTILE: dict[str, Any] = {}


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


def test_untrusted_tests_cannot_reach_the_worker_or_outlive_their_step(phoenix_ci: EnvState, phoenix_repo: AppRepo,
                                                                      push_commit: Any, ci_agent_host: Any) -> None:
    assert HOSTILE, "the hostile commit is pushed by test_a_commit_cannot_take_the_agents_credentials (run it first)"
    good = HOSTILE["good"]
    log = stopped_at_test(phoenix_ci, HOSTILE["release"])
    assert "LEFT a sleeper" in log, log[-3000:]
    for what in ("read-worker-password", "list-worker-checkout", "write-phoenixci-venv", "write-pipeline-env",
                 "sudo"):
        assert f"REFUSED {what}" in log, f"{what}: {log[-3000:]}"
    assert "ESCAPED" not in log
    agent = ci_agent_host
    assert agent.run("pgrep -u phoenixci-test").stdout.strip() == "", "a test process outlived its step"
    assert agent.run("ls -A /var/lib/phoenixci-test").stdout.strip() == "", "the test's copy was left"
    assert live(phoenix_ci) == good
    repair(phoenix_repo, push_commit, good, "remove the escape attempt")


NEVER_HEALTHY = '''\
"""Entry point: this release never becomes healthy (it exits at once)."""
import sys

sys.exit("this release refuses to serve")
'''


def test_a_release_that_never_becomes_healthy_fails_at_deploy(phoenix_ci: EnvState, phoenix_repo: AppRepo,
                                                             push_commit: Any, phoenix_backend: Any,
                                                             phoenix_release: Release) -> None:
    cfn = phoenix_backend.client("cloudformation")
    good, holder = live(phoenix_ci), chain.app_holder(phoenix_backend, phoenix_ci)
    release = push_commit({"phoenixapp/__main__.py": NEVER_HEALTHY}, "never healthy")
    assert release.steps["publish"] == "success" and release.steps["deploy"] == "failure", release.steps
    deploy_log = buildbot.step_log(phoenix_ci.ci_url, release.build.build_id, "deploy")
    # the failed server is gone with its stack: its console was saved into the step's log first
    assert "console of the failed server" in deploy_log and "phoenixapp-bootstrap" in deploy_log, deploy_log[-3000:]
    # the bootstrap said the app keeps exiting (with its last words): the gate stopped there, not at its timeout
    assert "will not serve" in deploy_log and "keeps exiting" in deploy_log, deploy_log[-3000:]
    assert "this release refuses to serve" in deploy_log, deploy_log[-3000:]
    assert stacks.describe(cfn, f"app-{release.revision}") is None, "the failed release's stack is left"
    assert release.serving_instance == holder, "the Elastic IP moved"
    assert release.serving_revision == good == live(phoenix_ci)
    fixed = repair(phoenix_repo, push_commit, good, "back to a healthy release")
    assert live(phoenix_ci) == fixed.revision


def test_a_push_to_another_branch_is_refused(phoenix_ci: EnvState, phoenix_repo: AppRepo) -> None:
    phoenix_repo.commit("on a branch", {"NOTES": "x\n"})
    with pytest.raises(Exception, match="only pushes to 'main' are built"):
        phoenix_repo.push("feature")
    phoenix_repo.git("reset", "-q", "--hard", "HEAD~1")


def test_rollback_is_one_command(phoenix_ci: EnvState, phoenix_repo: AppRepo, phoenix_cli: Any,
                                 phoenix_release: Release) -> None:
    first = phoenix_repo.git("rev-list", "--max-parents=0", "HEAD").stdout.strip()
    current = live(phoenix_ci)
    phoenix_cli("deploy", "--revision", first)
    assert live(phoenix_ci) == first
    phoenix_cli("deploy", "--revision", current)
    assert live(phoenix_ci) == current


def test_the_ci_hosts_survive_a_restart(phoenix_ci: EnvState, push_commit: Any, phoenix_backend: Any,
                                        ci_agent_host: Any) -> None:
    """Stop and start both CI instances (EC2 keeps their disks and private addresses): every unit
    comes back by itself, the IMDS fence is loaded again (the cloud's own rules are on the host side
    of the instance's link, none inside), and the next push is built and deployed."""
    ec2 = phoenix_backend.client("ec2")
    ids = [h.instance_id for h in phoenix_ci.hosts.values()]
    ec2.stop_instances(InstanceIds=ids)
    ec2.get_waiter("instance_stopped").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ec2.start_instances(InstanceIds=ids)
    ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    def back() -> bool:
        try:
            return bool(ci_agent_host.service("buildbot-worker").is_running and [
                w for w in buildbot.get_json(phoenix_ci.ci_url, "workers")["workers"] if w["connected_to"]])
        except Exception:  # noqa: BLE001 - still booting: ssh or HTTP not answering yet
            return False

    wait_until(back, timeout=180, interval=1, what="the CI hosts to come back with the worker connected")
    tables = ci_agent_host.run("nft list tables").stdout
    assert "inet phoenixci_build" in tables and "phoenixci_sg" not in tables, tables
    release = push_commit({"NOTES": f"restarted {time.time_ns()}\n"}, "after a restart")
    assert release.succeeded and live(phoenix_ci) == release.revision


def test_no_secret_appears_in_a_build_log(phoenix_ci: EnvState) -> None:
    secrets = [phoenix_ci.secret(n) for n in ("worker_password", "admin_password", "hook_password")]
    assert all(secrets)
    for build in buildbot.builds(phoenix_ci.ci_url, limit=50):
        for step in buildbot.steps(phoenix_ci.ci_url, build.build_id):
            log = buildbot.step_log(phoenix_ci.ci_url, build.build_id, step.name) if step.name != \
                "worker_preparation" else ""
            leaked = [s for s in secrets if s in log]
            assert not leaked, f"a secret is in build {build.number} step {step.name}"
            keys = re.findall(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|AWS_SECRET_ACCESS_KEY=\S+|SessionToken", log)
            assert not keys, f"AWS credentials in build {build.number} step {step.name}: {keys}"


def test_the_playbook_changes_nothing_the_second_time(phoenix_ci: EnvState, phoenix_cli: Any) -> None:
    proc = phoenix_cli("converge")
    assert "playbook done: changed=0 " in proc.stdout, proc.stdout


def test_a_second_up_is_one_clear_line(phoenix_ci: EnvState, phoenix_cli: Any) -> None:
    before = EnvState.load(phoenix_ci.path)
    proc = phoenix_cli("up", check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: an environment is already up") and "phoenixci down" in lines[0]
    assert EnvState.load(phoenix_ci.path) == before, "the second up touched the environment"


def test_status_shows_the_environment(phoenix_ci: EnvState, phoenix_cli: Any) -> None:
    info = json.loads(phoenix_cli("status", "--json").stdout)
    assert {"app_url", "ci_url", "git_remote", "ssh_key", "hosts", "live_revision", "builds"} <= set(info)
    assert info["live_revision"] == live(phoenix_ci)
    assert set(info["hosts"]) == {"ci-server", "ci-agent"}
    assert info["builds"] and {"number", "revision", "result"} <= set(info["builds"][0])
    obs = probe(*phoenix_ci.app_address)
    assert obs.health_status == 200
    # every command finds the environment without --backend: leaks lists what the run has up
    leaks = phoenix_cli("leaks", "--run-id", phoenix_ci.run_id, check=False)
    assert leaks.returncode == 1 and f"stack {phoenix_ci.infra_stack}" in leaks.stdout, leaks.stdout


def test_the_builds_page_shows_every_build_and_its_result(phoenix_ci: EnvState, request: pytest.FixtureRequest) -> None:
    """Buildbot's own UI, rendered in headless Chromium as a visitor sees it (anonymous)."""
    artifacts_dir = Path(os.environ.get("PHOENIXCI_ARTIFACTS") or request.config.rootpath / "artifacts")
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    builder = buildbot.get_json(phoenix_ci.ci_url, "builders")["builders"][0]["builderid"]
    shot = artifacts_dir / "buildbot-builds.png"
    builds = buildbot.builds(phoenix_ci.ci_url, limit=15)  # the page lists the newest ones
    assert len(builds) >= 5
    rows: dict[int, str] = {}

    def rendered() -> bool:  # the page fills in over its websocket: render again until every row is in
        nonlocal rows
        text = browser.render(f"{phoenix_ci.ci_url}#/builders/{builder}", artifacts_dir, screenshot=shot)
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


def test_the_ci_is_read_only_for_anonymous_visitors(phoenix_ci: EnvState) -> None:
    """Anyone may read builds; nobody without credentials can trigger, force or stop one; the
    admin login `phoenixci status` shows can (here: rebuild the live revision, a no-op deploy)."""
    import base64
    import http.cookiejar

    ci = phoenix_ci.ci_url.rstrip("/")
    force = json.dumps({"id": 1, "jsonrpc": "2.0", "method": "force",
                        "params": {"builderid": "1", "revision": live(phoenix_ci)}}).encode()
    as_json = {"Content-Type": "application/json"}
    assert _post(f"{ci}/api/v2/forceschedulers/force", force, as_json) == 403
    change = b"revision=" + b"a" * 40 + b"&branch=main&repository=x&project=app&author=mallory"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _post(f"{ci}/change_hook/base", change, form) == 401
    wrong = {**form, "Authorization": "Basic " + base64.b64encode(b"githook:guess").decode()}
    assert _post(f"{ci}/change_hook/base", change, wrong) == 401
    builds_before = len(buildbot.builds(phoenix_ci.ci_url, limit=100))

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = base64.b64encode(f"admin:{phoenix_ci.secret('admin_password')}".encode()).decode()
    opener.open(urllib.request.Request(f"{ci}/auth/login", headers={"Authorization": f"Basic {login}"}),
                timeout=10).read()
    with opener.open(urllib.request.Request(f"{ci}/api/v2/forceschedulers/force", data=force, method="POST",
                                            headers=as_json), timeout=10) as resp:
        assert resp.status == 200 and "result" in json.loads(resp.read())
    wait_until(lambda: len(buildbot.builds(phoenix_ci.ci_url, limit=100)) == builds_before + 1, timeout=30,
               interval=0.5, what="the admin's forced build to start")
    forced = buildbot.builds(phoenix_ci.ci_url, limit=1)[0]
    done = buildbot.wait_for_build(phoenix_ci.ci_url, forced.revision, timeout=300)
    assert done.result == "success" and live(phoenix_ci) == forced.revision
