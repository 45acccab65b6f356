#!/usr/bin/env python3
"""Host check of phoenixci's Buildbot 4.3 templates, end to end, on this machine (no instances).

NOT a pytest module: a standalone script that documents and proves how the CI server and agent
templates behave. Run it as root (it creates two system users and a sudoers drop-in for the
duration of the run, and removes them again):

    python3 -m venv /tmp/bbvenv
    /tmp/bbvenv/bin/pip install 'buildbot[bundle]>=4.3,<4.4' 'buildbot-worker>=4.3,<4.4'
    apt-get install sudo python3-pytest nftables git shellcheck   # shellcheck optional
    .venv/bin/python scripts/buildbot_host_check.py [--bbvenv /tmp/bbvenv] [--keep]

It renders the templates of playbooks/roles/ci_server and ci_agent with Jinja2 the way Ansible's
`template` module does (trim_blocks; filters `to_json` and `quote`), then, in a temp directory and
on free 127.0.0.1 ports only:

  * a bare repository with the pre-receive and post-receive hooks,
  * a Buildbot master (master.cfg.j2) and a worker (buildbot.tac.j2) running as its own user,
  * the test step through `sudo -n <rendered phoenixci-run-tests>`, allowed by a sudoers rule
    for exactly that command. This host has no systemd as PID 1, so the wrapper is rendered with
    run_tests_isolation=pidns (a PID namespace instead of a transient systemd unit); instances
    render the systemd variant, which is checked there, not here;

and checks: the first push to an empty repository builds; one build per pushed commit, in order;
pushes to other refs are refused naming the branch; the change hook needs its password;
push -> build start time; step halts; a clean tree per build; no secret in any log; anonymous
users read but cannot control, the admin can force (roll back); the worker's password file and
umask; the wrapper's refusals, clean environment, copy without .git and no surviving process;
the nftables fence (in a throw-away network namespace).
"""

from __future__ import annotations

import argparse
import base64
import http.cookiejar
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
SERVER_T = ROOT / 'playbooks/roles/ci_server/templates'
AGENT_T = ROOT / 'playbooks/roles/ci_agent/templates'
TEST_USER = 'phoenixci-test'
WORKER_USER = 'phoenixci-hc-worker'
SUDOERS = Path('/etc/sudoers.d/phoenixci-hostcheck')

failures: list[str] = []


def check(ok: bool, what: str, detail: str = '') -> bool:
    print(f"  [{'PASS' if ok else 'FAIL'}] {what}" + (f' -- {detail}' if detail else ''), flush=True)
    if not ok:
        failures.append(what)
    return ok


def section(title: str) -> None:
    print(f'\n== {title}', flush=True)


# the roles' variable names (ansible-lint: role variables carry the role's prefix); this script
# keeps the short names and maps them when it renders
_PREFIXED = json.loads((Path(__file__).resolve().parent / "buildbot_host_check_vars.json").read_text())


def render(path: Path, **variables) -> str:
    mapping = _PREFIXED["server" if path.parent.parent.name == "ci_server" else "agent"]
    variables = {mapping.get(k, k): v for k, v in variables.items()}
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,  # as Ansible's template module
        keep_trailing_newline=True,
    )
    env.filters['to_json'] = json.dumps  # Ansible filters used by the templates
    env.filters['quote'] = shlex.quote
    variables.setdefault('ansible_managed', 'Ansible managed (rendered by buildbot_host_check.py)')
    return env.get_template(path.name).render(**variables)


def write(path: Path, text: str, mode: int, owner: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner_gid(owner))
    return path


def owner_gid(uid: int) -> int:
    return pwd.getpwuid(uid).pw_gid


def out_fd(path: Path) -> int:
    """An append-only descriptor for a child's output (closed when this script exits)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault('capture_output', True)
    kw.setdefault('text', True)
    return subprocess.run(cmd, **kw)


def ensure_user(name: str, created: list[str]) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        run(['useradd', '--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent',
             '--shell', '/usr/sbin/nologin', name], check=True)
        created.append(name)
        return pwd.getpwnam(name)


class Http:
    """Tiny HTTP client for the master's web port (127.0.0.1 only)."""

    def __init__(self, base: str):
        self.base = base.rstrip('/')
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(self, method, path, data=None, headers=None, json_body=None):
        headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers['Content-Type'] = 'application/json'
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path):
        status, body = self.request('GET', path)
        if status != 200:
            raise RuntimeError(f'GET {path}: HTTP {status} {body[:200]!r}')
        return json.loads(body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def basic(user: str, password: str) -> dict:
    return {'Authorization': 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()}


def wait_for(what: str, predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout}s waiting for {what}')
        time.sleep(interval)


def git(cwd, *args, check=True, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, GIT_AUTHOR_NAME='Dev', GIT_AUTHOR_EMAIL='dev@example.invalid',
             GIT_COMMITTER_NAME='Dev', GIT_COMMITTER_EMAIL='dev@example.invalid', **(env or {}))
    return run(['git', '-C', str(cwd), *args], check=check, env=e)


# ---- the app repository pushed in the check: its tests are the "untrusted code"
APP_TESTS = '''\
import os
import pathlib
import pwd
import subprocess

HERE = pathlib.Path.cwd()


def test_not_told_to_fail():
    assert not (HERE / 'FAIL').exists(), 'FAIL file present: failing on purpose'


def test_clean_tree():
    # the package step leaves LEFTOVER in the checkout; a clean checkout never shows it
    assert not (HERE / 'LEFTOVER').exists()


def test_copy_has_no_git():
    assert not (HERE / '.git').exists()


def test_clean_environment():
    leaked = sorted(k for k in os.environ if k.startswith('AWS_') or 'CANARY' in k
                    or k.startswith('SUDO_') or k.startswith('BUILDBOT'))
    assert leaked == []
    print('test env:', sorted(os.environ))


def test_runs_as_test_user():
    assert pwd.getpwuid(os.getuid()).pw_name == 'phoenixci-test'
    assert os.getuid() != 0


def test_cannot_read_worker_password():
    try:
        open(os.environ.get('HC_WORKER_PW', '@@WORKER_PW@@')).read()
    except PermissionError:
        return
    raise AssertionError('the test user can read the worker password')


def test_leaves_a_daemon_behind():
    # a process that tries to outlive the tests: the wrapper must not let it survive
    subprocess.Popen(['setsid', 'sleep', '300'], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--bbvenv', default='/tmp/bbvenv', help='venv with buildbot[bundle] 4.3')
    ap.add_argument('--keep', action='store_true', help='keep the temp directory')
    args = ap.parse_args()
    if os.geteuid() != 0:
        print('run as root: the check creates users and a sudoers rule for its duration')
        return 2
    bb = Path(args.bbvenv) / 'bin'
    for tool in ('buildbot', 'buildbot-worker'):
        if not (bb / tool).exists():
            print(f'missing {bb / tool}: install buildbot into {args.bbvenv} first (see --help)')
            return 2
    for tool in ('git', 'sudo', 'visudo', 'nft', 'setpriv', 'unshare', 'ip'):
        if shutil.which(tool) is None:
            print(f'missing {tool}')
            return 2
    if run(['/usr/bin/python3', '-c', 'import pytest']).returncode != 0:
        print('missing python3-pytest (Debian) for /usr/bin/python3')
        return 2

    created_users: list[str] = []
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix='phoenixci-bb-'))
    os.chmod(tmp, 0o711)
    try:
        return checks(tmp, bb, created_users, procs)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        SUDOERS.unlink(missing_ok=True)
        for name in created_users:
            run(['userdel', name])
        if args.keep:
            print(f'\nkept {tmp}')
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def checks(tmp: Path, bb: Path, created_users: list[str], procs: list) -> int:
    t_all = time.monotonic()
    test_pw = ensure_user(TEST_USER, created_users)
    wk = ensure_user(WORKER_USER, created_users)
    web_port, worker_port = free_port(), free_port()
    web = f'http://127.0.0.1:{web_port}/'

    # ---- secrets (one file each, as SecretInAFile wants them: not readable by others)
    sec = {name: secrets.token_urlsafe(18) for name in
           ('worker_password', 'admin_password', 'hook_password', 'deploy_token', 'deploy_key')}
    canary = {'AWS_SECRET_ACCESS_KEY': 'CANARYsecret' + secrets.token_hex(8),
              'AWS_ACCESS_KEY_ID': 'AKIACANARY' + secrets.token_hex(4).upper(),
              'PHOENIXCI_CANARY': 'canary-' + secrets.token_hex(8)}
    secrets_dir = tmp / 'master-secrets'
    secrets_dir.mkdir(mode=0o700)
    for name, value in sec.items():
        write(secrets_dir / name, value + '\n', 0o400)

    # ---- bare repository + hooks
    repo = tmp / 'git/app.git'
    repo.parent.mkdir()
    run(['git', 'init', '--quiet', '--bare', '--initial-branch=main', str(repo)], check=True)
    hook_pw_file = write(tmp / 'git/hook_password', sec['hook_password'] + '\n', 0o400)
    common = dict(branch='main', buildbot_url=web, repo_path=str(repo),
                  repo_url=f'file://{repo}', hook_user='githook',
                  hook_password_file=str(hook_pw_file))
    write(repo / 'hooks/pre-receive', render(SERVER_T / 'pre-receive.j2', **common), 0o755)
    write(repo / 'hooks/post-receive', render(SERVER_T / 'post-receive.j2', **common), 0o755)
    # the worker fetches with its own uid: the file:// repo must be readable by it
    run(['chmod', '-R', 'o+rX', str(tmp / 'git')], check=True)
    os.chmod(hook_pw_file, 0o400)

    # ---- wrapper + sudoers (exactly one command, no arguments)
    worker_dir = tmp / 'worker'
    sbin = tmp / 'sbin'
    sbin.mkdir(mode=0o755)
    wrapper_vars = dict(worker_basedir=str(worker_dir), test_user=TEST_USER,
                        test_workroot=str(tmp / 'test-workroot'), test_timeout=120,
                        run_tests_isolation='pidns')
    wrapper = write(sbin / 'phoenixci-run-tests',
                    render(AGENT_T / 'phoenixci-run-tests.j2', **wrapper_vars), 0o755)
    sudoers_text = f'{WORKER_USER} ALL=(root) NOPASSWD: {wrapper} ""\n'
    staged = write(tmp / 'sudoers.stage', sudoers_text, 0o440)

    # ---- master
    published, deployed = tmp / 'published', tmp / 'deployed'
    for d in (published, deployed):
        d.mkdir()
        os.chown(d, wk.pw_uid, wk.pw_gid)
    master_vars = dict(
        common, ci_web_port=web_port, worker_port=worker_port, master_bind='127.0.0.1',
        secrets_dir=str(secrets_dir), worker_name='ci-agent',
        test_command=['sudo', '-n', str(wrapper)],
        package_command=['sh', '-c', 'mkdir -p dist && tar -czf dist/app.tgz --exclude=./dist '
                         '--exclude=./.git . && touch LEFTOVER && echo packaged "$PHOENIXCI_REVISION"'],
        publish_command=['sh', '-c', 'cp dist/app.tgz "$1/$PHOENIXCI_REVISION.tgz"', 'publish',
                         str(published)],
        deploy_command=['sh', '-c', 'echo "argv token $2, env token $DEPLOY_KEY" && echo '
                        '"$PHOENIXCI_REVISION" > "$1/current"', 'deploy', str(deployed),
                        '%(secret:deploy_token)s'],
        step_secret_env={'DEPLOY_KEY': 'deploy_key'},
    )
    master_dir = tmp / 'master'
    cfg = render(SERVER_T / 'master.cfg.j2', **master_vars)

    section('render + static checks')
    check(not any(v in cfg for v in sec.values()), 'master.cfg holds no secret value')
    master_tac = SERVER_T / 'master.tac.j2'  # the ci_server role's own tac, where present
    if master_tac.exists():
        # as the role does it: directory, tac, master.cfg, then `buildbot upgrade-master`
        master_dir.mkdir(mode=0o750)
        tac_text = render(master_tac, ci_server_master_dir=str(master_dir))
        # `buildbot start` refuses a directory whose buildbot.tac lacks this exact text
        # (buildbot/scripts/base.py isBuildmasterDir)
        check("Application('buildmaster')" in tac_text,
              "master.tac.j2 has Application('buildmaster') (else `buildbot start` refuses)",
              'running with that one line fixed' if "Application('buildmaster')" not in tac_text
              else '')
        tac_text = tac_text.replace('Application("buildmaster")', "Application('buildmaster')")
        write(master_dir / 'buildbot.tac', tac_text, 0o640)
        write(master_dir / 'master.cfg', cfg, 0o640)
        r = run([str(bb / 'buildbot'), 'upgrade-master', str(master_dir)])
        check(r.returncode == 0, 'buildbot upgrade-master (creates state.sqlite)',
              '' if r.returncode == 0 else (r.stdout + r.stderr).strip()[-300:])
    else:
        r = run([str(bb / 'buildbot'), 'create-master', '--quiet', str(master_dir)])
        check(r.returncode == 0, 'buildbot create-master', r.stderr.strip()[-300:])
        write(master_dir / 'master.cfg', cfg, 0o600)
    r = run([str(bb / 'buildbot'), 'checkconfig', str(master_dir)])
    check(r.returncode == 0, 'buildbot checkconfig master.cfg', (r.stdout + r.stderr).strip()[-400:])
    r = run(['visudo', '-cf', str(staged)])
    check(r.returncode == 0, 'sudoers rule parses (visudo -cf)', r.stdout.strip())
    shutil.copy(staged, SUDOERS)
    os.chmod(SUDOERS, 0o440)
    r = run(['python3', '-m', 'py_compile', str(repo / 'hooks/post-receive')])
    check(r.returncode == 0, 'post-receive compiles', r.stderr.strip())
    if shutil.which('shellcheck'):
        for f in (wrapper, repo / 'hooks/pre-receive'):
            r = run(['shellcheck', '-s', 'bash', str(f)])
            check(r.returncode == 0, f'shellcheck {f.name}', r.stdout.strip()[-600:])
    for mode in ('systemd',):
        text = render(AGENT_T / 'phoenixci-run-tests.j2', **dict(wrapper_vars,
                                                                 run_tests_isolation=mode))
        check('systemd-run' in text and 'unshare' not in text and 'pidns' not in text.lower(),
              'instance rendering (systemd) carries no host fallback')
        p = write(tmp / 'wrapper.systemd', text, 0o755)
        r = run(['bash', '-n', str(p)])
        check(r.returncode == 0, 'systemd variant parses (bash -n)', r.stderr.strip())
        if shutil.which('shellcheck'):
            r = run(['shellcheck', '-s', 'bash', str(p)])
            check(r.returncode == 0, 'shellcheck systemd variant', r.stdout.strip()[-600:])
        if shutil.which('systemd-analyze'):
            # systemd-run cannot run here; check its -p properties as a unit file instead
            words = shlex.split(text.split('systemd-run', 1)[1].split('rc=$?')[0].replace('\\\n', ' '),
                                comments=True)
            props = [words[i + 1] for i, w in enumerate(words) if w == '-p']
            props = [x.replace('$dst', '/var/lib/x').replace('$TIMEOUT', '60')
                     .replace('$WORKER_HOME', '/var/lib/w').replace('$base', '/var/lib/w/b')
                     for x in props]
            unit = tmp / 'units-run-tests' / 'phoenixci-tests.service'
            unit.parent.mkdir()
            unit.write_text('[Service]\nType=exec\nExecStart=/usr/bin/true\n'
                            + ''.join(f'{x}\n' for x in props))
            r = run(['systemd-analyze', 'verify', '--man=no', str(unit)],
                    env=dict(os.environ, SYSTEMD_LOG_LEVEL='notice'))
            check(r.returncode == 0 and not (r.stdout + r.stderr).strip() and len(props) >= 10,
                  f'the {len(props)} systemd-run -p properties are valid unit settings',
                  (r.stdout + r.stderr).strip()[:300])
    unit_vars = dict(worker_name='ci-agent', worker_basedir='/var/lib/buildbot-worker/worker',
                     master_basedir='/var/lib/buildbot/master')
    units = {
        'buildbot-master.service': render(SERVER_T / 'buildbot-master.service.j2', **unit_vars),
        'buildbot-worker.service': render(AGENT_T / 'buildbot-worker.service.j2', **unit_vars),
        'phoenixci-build-fence.service': render(AGENT_T / 'phoenixci-build-fence.service.j2'),
    }
    udir = tmp / 'units'
    udir.mkdir()
    for name, text in units.items():
        (udir / name).write_text(text)
    if shutil.which('systemd-analyze'):
        r = run(['systemd-analyze', 'verify', '--man=no', *sorted(str(p) for p in udir.iterdir())],
                env=dict(os.environ, SYSTEMD_LOG_LEVEL='notice'))
        # the venvs of the instances do not exist here: only that complaint is expected
        other = [line for line in (r.stdout + r.stderr).splitlines()
                 if line.strip() and 'is not executable: No such file' not in line]
        check(other == [], 'systemd-analyze verify: the three units', ' | '.join(other)[:400])
    for name in ('buildbot-master.service', 'buildbot-worker.service'):
        check('--nodaemon' in units[name] and 'Restart=on-failure' in units[name]
              and 'Type=simple' in units[name], f'{name}: simple, --nodaemon, Restart=on-failure')
    check('NoNewPrivileges=' not in units['buildbot-worker.service'],
          'worker unit leaves sudo possible (no NoNewPrivileges)')
    check('EnvironmentFile=-/etc/phoenixci/pipeline.env' in units['buildbot-worker.service'],
          'worker unit reads /etc/phoenixci/pipeline.env')
    fence_unit = units['phoenixci-build-fence.service']
    check('Type=oneshot' in fence_unit and 'RemainAfterExit=yes' in fence_unit
          and 'Before=' in fence_unit and 'buildbot-worker.service' in fence_unit
          and 'nft -f' in fence_unit, 'fence unit: oneshot, RemainAfterExit, before the worker')

    ansible_compare(tmp)

    section('master + worker start')
    t0 = time.monotonic()
    mlog = out_fd(tmp / 'master.stdout')
    # umask 0o077 as the units' UMask=0077 (the tacs open twistd.log before their own umask)
    procs.append(subprocess.Popen([str(bb / 'buildbot'), 'start', '--nodaemon', str(master_dir)],
                                  stdout=mlog, stderr=subprocess.STDOUT, cwd=master_dir,
                                  umask=0o077))
    h = Http(web)

    def web_up():
        if procs[0].poll() is not None:
            raise RuntimeError('master exited: ' + (tmp / 'master.stdout').read_text()[-2000:])
        try:
            return h.request('GET', '/api/v2/builders')[0] == 200
        except OSError:
            return False
    wait_for('master web', web_up, 60)
    check(True, 'master web answers', f'{time.monotonic() - t0:.2f} s after start')

    worker_dir.mkdir(mode=0o700)
    os.chown(worker_dir, wk.pw_uid, wk.pw_gid)
    pw_file = write(worker_dir / 'worker_password', sec['worker_password'] + '\n', 0o600, wk.pw_uid)
    tac_vars = dict(worker_basedir=str(worker_dir), master_bind='127.0.0.1',
                    worker_port=worker_port, worker_name='ci-agent')
    tac = render(AGENT_T / 'buildbot.tac.j2', **tac_vars)
    check(sec['worker_password'] not in tac, 'buildbot.tac holds no password')
    write(worker_dir / 'buildbot.tac', tac, 0o600, wk.pw_uid)
    # git >= 2.35.2 refuses a repository owned by another user ("dubious ownership"): the
    # reader needs safe.directory in its global (or the system) config. On the CI server the
    # same holds for the `gitread` user fetching the git user's repository over SSH.
    worker_home = tmp / 'worker-home'
    worker_home.mkdir(mode=0o700)
    write(worker_home / '.gitconfig', f'[safe]\n\tdirectory = {repo}\n', 0o600, wk.pw_uid)
    os.chown(worker_home, wk.pw_uid, wk.pw_gid)
    worker_env = {'PATH': '/usr/local/bin:/usr/bin:/bin', 'HOME': str(worker_home),
                  'LANG': 'C.UTF-8', **canary}
    t0 = time.monotonic()
    wlog = out_fd(tmp / 'worker.stdout')
    procs.append(subprocess.Popen(
        ['setpriv', f'--reuid={wk.pw_uid}', f'--regid={wk.pw_gid}', '--clear-groups', '--',
         str(bb / 'buildbot-worker'), 'start', '--nodaemon', str(worker_dir)],
        stdout=wlog, stderr=subprocess.STDOUT, cwd=worker_dir, env=worker_env, umask=0o077))

    def worker_connected():
        ws = h.get_json('/api/v2/workers')['workers']
        return ws and ws[0]['connected_to']
    wait_for('worker connection', worker_connected, 60)
    check(True, 'worker ci-agent connected with its own password',
          f'{time.monotonic() - t0:.2f} s after start')
    st = os.stat(pw_file)
    check(stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == wk.pw_uid,
          'worker password file is 0600, owned by the worker user',
          oct(stat.S_IMODE(st.st_mode)))

    # a worker with a wrong password is refused; one with an open password file does not start
    for label, pw, mode in (('wrong password', 'not-the-password', 0o600),
                            ('password file mode 0644', sec['worker_password'], 0o644)):
        d = tmp / ('bad-' + label.split()[0])
        d.mkdir(mode=0o700)
        write(d / 'worker_password', pw, mode)
        write(d / 'buildbot.tac', render(AGENT_T / 'buildbot.tac.j2',
                                         **dict(tac_vars, worker_basedir=str(d))), 0o600)
        p = subprocess.Popen([str(bb / 'buildbot-worker'), 'start', '--nodaemon', str(d)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=d, text=True)
        procs.append(p)
        if mode == 0o600:
            def refused(d=d):
                log = (d / 'twistd.log').read_text() if (d / 'twistd.log').exists() else ''
                return 'unauthorized' in log.lower() or 'login failed' in log.lower()
            try:
                wait_for('wrong-password refusal', refused, 15)
                check(True, 'worker with a wrong password is refused by the master')
            except TimeoutError:
                check(False, 'worker with a wrong password is refused by the master',
                      (d / 'twistd.log').read_text()[-500:] if (d / 'twistd.log').exists() else '')
            p.terminate()
            p.wait(10)
        else:
            try:
                out, _ = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                out = 'still running'
            check(p.returncode not in (0, None) and 'mode 0600' in out,
                  'worker refuses to start with a password file open to others',
                  (out.strip().splitlines() or [''])[-1][:200])

    section('change hook authentication')
    form = urllib.parse.urlencode({'revision': 'f' * 40, 'branch': 'main'}).encode()
    for label, headers in (('no password', {}),
                           ('wrong password', basic('githook', 'nope')),
                           ('admin password for the hook user', basic('githook',
                                                                     sec['admin_password'])),
                           ('hook password with another user', basic('admin',
                                                                     sec['hook_password']))):
        status, _ = h.request('POST', '/change_hook/base', data=form, headers=headers)
        check(status == 401, f'change hook, {label} -> 401', f'HTTP {status}')
    check(h.get_json('/api/v2/changes')['meta']['total'] == 0
          and h.get_json('/api/v2/builds')['meta']['total'] == 0, 'no change, no build')

    section('first push to the empty repository')
    client = tmp / 'client'
    git(tmp, 'init', '--quiet', '--initial-branch=main', str(client))
    (client / 'test_app.py').write_text(APP_TESTS.replace('@@WORKER_PW@@', str(pw_file)))
    (client / 'app.py').write_text('VERSION = 1\n')
    git(client, 'add', '-A')
    git(client, 'commit', '--quiet', '-m', 'first commit')
    git(client, 'remote', 'add', 'origin', str(repo))
    c1 = git(client, 'rev-parse', 'HEAD').stdout.strip()

    def push(*refspecs, expect_ok=True):
        t = time.monotonic()
        r = git(client, 'push', 'origin', *refspecs, check=False)
        if expect_ok and r.returncode != 0:
            raise RuntimeError(f'push failed: {r.stderr}')
        return t, time.monotonic() - t, r

    def builds():
        return h.get_json('/api/v2/builds?order=buildid&property=got_revision')['builds']

    def wait_started(n):
        return wait_for(f'build {n} to start',
                        lambda: len(builds()) >= n and builds()[n - 1], 30, 0.005)

    def wait_done(n, timeout=120):
        return wait_for(f'build {n} to finish',
                        lambda: len(builds()) >= n and builds()[n - 1]['complete']
                        and builds()[n - 1], timeout, 0.2)

    t_push, push_s, r = push('main')
    wait_started(1)
    start_latency = time.monotonic() - t_push
    check(r.returncode == 0, 'first push accepted')
    print('    remote says:', ' | '.join(line for line in r.stderr.splitlines()
                                        if 'phoenixci' in line))
    check(start_latency <= 1.0, 'push -> build started <= 1 s',
          f'{start_latency * 1000:.0f} ms (git push itself {push_s * 1000:.0f} ms)')
    latencies = [start_latency]
    b1 = wait_done(1)
    check(b1['results'] == 0 and b1['properties']['got_revision'][0] == c1,
          'first commit ever pushed is built and succeeds', f"results={b1['results']}")
    check((deployed / 'current').read_text().strip() == c1, 'first commit deployed')
    check((published / f'{c1}.tgz').exists(), 'first commit published')

    section('three commits in one push: one build each, in order; FAIL halts')
    (client / 'FAIL').write_text('fail on purpose\n')
    git(client, 'add', '-A')
    git(client, 'commit', '--quiet', '-m', 'second: tests fail')
    c2 = git(client, 'rev-parse', 'HEAD').stdout.strip()
    (client / 'FAIL').unlink()
    git(client, 'add', '-A')
    git(client, 'commit', '--quiet', '-m', 'third: fixed')
    c3 = git(client, 'rev-parse', 'HEAD').stdout.strip()
    (client / 'app.py').write_text('VERSION = 4\n')
    git(client, 'commit', '--quiet', '-am', 'fourth')
    c4 = git(client, 'rev-parse', 'HEAD').stdout.strip()
    t_push, push_s, r = push('main')
    wait_started(2)
    latencies.append(time.monotonic() - t_push)
    check(latencies[-1] <= 1.0, 'push of 3 commits -> first build started <= 1 s',
          f'{latencies[-1] * 1000:.0f} ms (git push {push_s * 1000:.0f} ms)')
    done = [wait_done(n) for n in (2, 3, 4)]
    revs = [b['properties']['got_revision'][0] for b in done]
    check(revs == [c2, c3, c4], 'builds 2-4 built c2, c3, c4 in push order',
          ' '.join(r[:8] for r in revs))
    check([b['results'] for b in done] == [2, 0, 0], 'results: FAILURE, SUCCESS, SUCCESS',
          str([b['results'] for b in done]))
    steps2 = h.get_json(f"/api/v2/builds/{done[0]['buildid']}/steps")['steps']
    ran = {s['name']: s['results'] for s in steps2 if s['started_at']}
    check(ran.get('test') == 2 and not {'package', 'publish', 'deploy'} & set(ran),
          'failed test halts the build: package/publish/deploy never ran', str(ran))
    check(not (published / f'{c2}.tgz').exists(), 'failed commit not published')
    check((deployed / 'current').read_text().strip() == c4, 'tip (c4) deployed')
    changes = sorted(h.get_json('/api/v2/changes')['changes'], key=lambda c: c['changeid'])
    check([c['revision'] for c in changes] == [c1, c2, c3, c4],
          'one change per pushed commit, oldest first',
          ' '.join(f"{c['changeid']}:{c['revision'][:8]}" for c in changes))
    # clean tree: package leaves LEFTOVER in the checkout; the next build's test asserts it's gone
    check(all(b['results'] == 0 for b in (done[1], done[2])),
          'each build starts from a clean tree (LEFTOVER of the previous build gone)')
    mode = stat.S_IMODE(os.stat(worker_dir / 'app/build/dist/app.tgz').st_mode)
    check(mode & 0o077 == 0, 'worker umask 0o077: build files private to the worker', oct(mode))

    section('refused pushes')
    git(client, 'checkout', '--quiet', '-b', 'feature')
    (client / 'feature.txt').write_text('x\n')
    git(client, 'add', '-A')
    git(client, 'commit', '--quiet', '-m', 'feature')
    _, _, r = push('feature', expect_ok=False)
    check(r.returncode != 0 and "'main'" in r.stderr, 'push to another branch refused naming main',
          next((line for line in r.stderr.splitlines() if 'phoenixci' in line), r.stderr[-200:]))
    git(client, 'tag', 'v1')
    _, _, r = push('v1', expect_ok=False)
    check(r.returncode != 0, 'tag push refused')
    _, _, r = push(':main', expect_ok=False)
    check(r.returncode != 0 and 'delete' in r.stderr, 'deleting main refused')
    _, _, r = push('feature', 'main', expect_ok=False)
    check(r.returncode != 0, 'mixed push (feature + main) refused as a whole')
    git(client, 'checkout', '--quiet', 'main')
    check(len(builds()) == 4 and h.get_json('/api/v2/changes')['meta']['total'] == 4,
          'refused pushes made no change and no build')

    section('web UI: anonymous reads, only admin controls')
    status, body = h.request('GET', '/api/v2/builds')
    check(status == 200 and json.loads(body)['meta']['total'] == 4,
          'anonymous GET /api/v2/builds -> 200')
    force = {'jsonrpc': '2.0', 'method': 'force', 'id': 1,
             'params': {'builderNames': ['app'], 'revision': c1, 'reason': 'roll back'}}
    controls = [
        ('POST /api/v2/forceschedulers/force (force)', '/api/v2/forceschedulers/force', force),
        ('rebuild build 1', f"/api/v2/builds/{b1['buildid']}",
         {'jsonrpc': '2.0', 'method': 'rebuild', 'id': 2, 'params': {}}),
        ('stop build 1', f"/api/v2/builds/{b1['buildid']}",
         {'jsonrpc': '2.0', 'method': 'stop', 'id': 3, 'params': {}}),
        ('cancel build request 1', '/api/v2/buildrequests/1',
         {'jsonrpc': '2.0', 'method': 'cancel', 'id': 4, 'params': {}}),
        ('pause worker', '/api/v2/workers/1',
         {'jsonrpc': '2.0', 'method': 'pause', 'id': 5, 'params': {}}),
        ('disable scheduler', '/api/v2/schedulers/1',
         {'jsonrpc': '2.0', 'method': 'enable', 'id': 6, 'params': {'enabled': False}}),
    ]
    for label, path, body in controls:
        status, resp = h.request('POST', path, json_body=body)
        check(status == 403, f'anonymous {label} -> 403', f'HTTP {status}')
    # basic auth on the API itself does not log in (sessions only): still denied
    status, _ = h.request('POST', '/api/v2/forceschedulers/force', json_body=force,
                          headers=basic('admin', sec['admin_password']))
    check(status == 403, 'API call with basic auth but no session -> 403', f'HTTP {status}')
    check(len(builds()) == 4, 'no build was created by anonymous requests')
    status, _ = h.request('GET', '/auth/login', headers=basic('admin', 'wrong'))
    check(status == 401, 'admin login with a wrong password -> 401', f'HTTP {status}')
    status, _ = h.request('GET', '/auth/login', headers=basic('someone', sec['admin_password']))
    check(status == 401, 'other user with the admin password -> 401', f'HTTP {status}')
    status, _ = h.request('GET', '/auth/login', headers=basic('admin', sec['admin_password']))
    check(status in (200, 302) and any(True for _ in h.jar), 'admin logs in (session cookie)',
          f'HTTP {status}')
    status, resp = h.request('POST', '/api/v2/forceschedulers/force', json_body=force)
    check(status == 200, 'admin forces a build of c1 (roll back) -> 200', f'HTTP {status} {resp[:120]!r}')
    b5 = wait_done(5)
    check(b5['results'] == 0 and b5['properties']['got_revision'][0] == c1
          and (deployed / 'current').read_text().strip() == c1,
          'forced build rebuilt and redeployed c1')
    status, resp = h.request('POST', f"/api/v2/builds/{b1['buildid']}",
                             json_body=controls[1][2])
    check(status == 200, 'admin rebuild of build 1 -> 200', f'HTTP {status}')
    b6 = wait_done(6)
    check(b6['properties']['got_revision'][0] == c1, 'rebuild built c1 again')
    h2 = Http(web)  # a fresh anonymous client after all that
    status, _ = h2.request('POST', '/api/v2/forceschedulers/force', json_body=force)
    check(status == 403, 'anonymous still denied after the admin session', f'HTTP {status}')

    section('the test step: sudo -n wrapper (pidns fallback on this host)')
    log = step_log(h, b1['buildid'], 'test')
    print(textwrap.indent('\n'.join(log.splitlines()[:14]), '    | '))
    check('tests exited with 0' in log and '7 passed' in log, 'test step ran the app tests via sudo')
    check('environment:' not in log, 'step header prints no environment (logEnviron=False)')
    log2 = step_log(h, done[0]['buildid'], 'test')
    check('tests exited with 1' in log2, 'wrapper passes the failing exit code on')
    survivors = run(['ps', '-u', TEST_USER, '-o', 'pid=,args=']).stdout.strip()
    check(survivors == '', 'no process of the test user survives the tests', survivors)
    left = list((tmp / 'test-workroot').iterdir())
    check(left == [], 'wrapper removed its temp copies', str(left))
    wr = oct(stat.S_IMODE(os.stat(tmp / 'test-workroot').st_mode))
    check(wr == '0o711', 'work root is root-owned 0711', wr)
    evil = worker_dir / 'evil'
    evil.symlink_to('/etc')
    for label, cwd, argv in (
            ('outside the worker base dir', tmp, [str(wrapper)]),
            ('the base dir itself', worker_dir, [str(wrapper)]),
            ('a symlink in the base dir pointing outside', evil, [str(wrapper)]),
            ('extra arguments', worker_dir / 'app/build', [str(wrapper), '--anything'])):
        r = run(argv, cwd=cwd)
        check(r.returncode == 2 and 'phoenixci-run-tests:' in r.stderr,
              f'wrapper refuses {label}', r.stderr.strip())
    r = run(['setpriv', f'--reuid={wk.pw_uid}', f'--regid={wk.pw_gid}', '--clear-groups', '--',
             'sudo', '-n', str(wrapper), 'x'], cwd=worker_dir / 'app/build')
    check(r.returncode != 0 and 'phoenixci-run-tests: takes no arguments' not in r.stderr,
          'sudoers: the worker may not pass arguments', r.stderr.strip()[:160])
    r = run(['setpriv', f'--reuid={wk.pw_uid}', f'--regid={wk.pw_gid}', '--clear-groups', '--',
             'sudo', '-n', '/bin/true'])
    check(r.returncode != 0, 'sudoers: the worker may run nothing else', r.stderr.strip()[:160])
    r = run(['setpriv', f'--reuid={test_pw.pw_uid}', f'--regid={test_pw.pw_gid}', '--clear-groups',
             '--', 'cat', str(pw_file)])
    check(r.returncode != 0, 'the test user cannot read the worker password file')

    section('reconfig (SIGHUP), master down during a push, catch-up')
    master_proc = procs[0]
    master_proc.send_signal(signal.SIGHUP)
    wait_for('reconfig', lambda: 'configuration update complete' in
             (master_dir / 'twistd.log').read_text(errors='replace'), 30, 0.1)
    check(True, 'master reconfigured (buildbot reconfig = SIGHUP) without a restart')

    def commit(msg):
        (client / 'app.py').write_text(f'VERSION = {msg!r}\n')
        git(client, 'commit', '--quiet', '-am', msg)
        return git(client, 'rev-parse', 'HEAD').stdout.strip()
    c5 = commit('fifth, after reconfig')
    t_push, _, _ = push('main')
    wait_started(7)
    latencies.append(time.monotonic() - t_push)
    b7 = wait_done(7)
    check(b7['properties']['got_revision'][0] == c5 and b7['results'] == 0,
          'after reconfig the hook login still works: c5 built')
    h3 = Http(web)
    status, _ = h3.request('GET', '/auth/login', headers=basic('admin', sec['admin_password']))
    check(status in (200, 302), 'after reconfig the admin can still log in', f'HTTP {status}')

    master_proc.terminate()
    master_proc.wait(30)
    c6 = commit('sixth, master down')
    _, _, r = push('main')
    said = [line for line in r.stderr.splitlines() if 'phoenixci' in line]
    check(r.returncode == 0 and any('could not queue' in line for line in said),
          'push while the master is down is accepted, and the hook says it could not queue',
          said[0].strip() if said else r.stderr[-200:])
    mlog2 = out_fd(tmp / 'master.stdout')
    t0 = time.monotonic()
    procs.append(subprocess.Popen([str(bb / 'buildbot'), 'start', '--nodaemon', str(master_dir)],
                                  stdout=mlog2, stderr=subprocess.STDOUT, cwd=master_dir,
                                  umask=0o077))
    procs[0] = procs[-1]
    wait_for('master web after restart', web_up, 60)
    wait_for('worker reconnect', worker_connected, 60)
    check(True, 'worker reconnected after a master restart',
          f'{time.monotonic() - t0:.1f} s after the master started')
    c7 = commit('seventh, master back')
    t_push, _, _ = push('main')
    wait_started(8)
    latencies.append(time.monotonic() - t_push)
    b8, b9 = wait_done(8), wait_done(9)
    check([b8['properties']['got_revision'][0], b9['properties']['got_revision'][0]] == [c6, c7],
          'next push sends the missed commit first, then its own: c6, c7 built in order')
    check((deployed / 'current').read_text().strip() == c7, 'c7 deployed')

    section('secrets never in logs')
    leaks = []
    all_logs = []
    for b in builds():
        for s in h.get_json(f"/api/v2/builds/{b['buildid']}/steps")['steps']:
            if not s['started_at']:
                continue
            text = step_log(h, b['buildid'], s['name'])
            all_logs.append(text)
            for name, value in {**sec, **canary}.items():
                if value in text:
                    leaks.append(f"build {b['number']} {s['name']}: {name}")
    check(leaks == [], 'no secret and no worker-environment value in any step log',
          ', '.join(leaks))
    # twistd.log (mode 0600, the service user's): Buildbot writes every command's argv there in
    # clear on both sides, so an argv %(secret:...)s shows up; env secrets and the worker's own
    # environment never do (logEnviron=False also keeps the environment out of twistd.log).
    leaks = []
    argv_secret_in_twistd = []
    for f in (master_dir / 'twistd.log', master_dir / 'http.log', worker_dir / 'twistd.log',
              tmp / 'master.stdout', tmp / 'worker.stdout'):
        text = f.read_text(errors='replace') if f.exists() else ''
        for name, value in {**sec, **canary}.items():
            if value in text:
                (argv_secret_in_twistd if name == 'deploy_token' else leaks).append(
                    f'{f.parent.name}/{f.name}: {name}')
    check(leaks == [], 'twistd.logs hold no password, env secret or worker-environment value',
          ', '.join(leaks))
    print('    note: the argv secret (deploy_token) appears in', ', '.join(argv_secret_in_twistd)
          or 'no twistd.log')
    for f in (master_dir / 'twistd.log', worker_dir / 'twistd.log'):
        mode = stat.S_IMODE(os.stat(f).st_mode)
        dmode = stat.S_IMODE(os.stat(f.parent).st_mode)
        # `buildbot upgrade-master` (run by Ansible, umask 022) creates twistd.log 0644; the
        # directory (0750 / 0700) is what keeps other users out
        check(mode & 0o007 == 0 or dmode & 0o005 == 0,
              f'{f.parent.name}/twistd.log unreadable by other users',
              f'file {oct(mode)}, directory {oct(dmode)}')
    deploy_log = step_log(h, b1['buildid'], 'deploy')
    shown = [line for line in deploy_log.splitlines() if 'token' in line]
    check('<deploy_token>' in deploy_log and 'env token <deploy_key>' in deploy_log,
          'secrets in argv and env are shown masked in the step log', ' / '.join(shown[-2:]))

    section('nftables build fence (in a throw-away network namespace)')
    fence_checks(tmp, test_pw)

    print(f'\npush -> build started: {", ".join(f"{x * 1000:.0f} ms" for x in latencies)}')
    print(f'total {time.monotonic() - t_all:.1f} s; {len(failures)} failure(s)')
    for f in failures:
        print('  FAILED:', f)
    return 1 if failures else 0


ALL_TEMPLATES = [SERVER_T / n for n in ('master.cfg.j2', 'post-receive.j2', 'pre-receive.j2',
                                          'buildbot-master.service.j2')] + \
    [AGENT_T / n for n in ('buildbot.tac.j2', 'phoenixci-run-tests.j2', 'build-fence.nft.j2',
                           'phoenixci-build-fence.service.j2', 'buildbot-worker.service.j2')]
SAMPLE_VARS = {
    'ci_web_port': 8010, 'worker_port': 9989, 'buildbot_url': 'http://10.0.1.5:8010/',
    'master_bind': '10.0.1.5', 'repo_url': 'ssh://gitread@10.0.1.5/srv/git/app.git',
    'repo_path': '/srv/git/app.git', 'branch': 'main', 'worker_name': 'ci-agent',
    'secrets_dir': '/var/lib/buildbot/secrets', 'hook_user': 'githook',
    'hook_password_file': '/srv/git/hook_password',
    'test_command': ['sudo', '-n', '/usr/local/sbin/phoenixci-run-tests'],
    'package_command': ['phoenixci', 'package', '%(prop:got_revision)s'],
    'publish_command': ['phoenixci', 'publish'], 'deploy_command': ['phoenixci', 'deploy'],
    'step_secret_env': {}, 'worker_basedir': '/var/lib/buildbot-worker/worker',
    'worker_home': '/var/lib/buildbot-worker', 'master_basedir': '/var/lib/buildbot/master',
    'test_user': 'phoenixci-test',
}


def ansible_compare(tmp: Path) -> None:
    """Render every template with Ansible itself (if installed beside this Python) and compare."""
    playbook_bin = Path(sys.executable).parent / 'ansible-playbook'
    if not playbook_bin.exists():
        print('  [SKIP] no ansible-playbook beside', sys.executable)
        return
    d = tmp / 'ansible'
    (d / 'out').mkdir(parents=True)
    (d / 'vars.json').write_text(json.dumps(SAMPLE_VARS))
    items = '\n'.join(f'        - {t}' for t in ALL_TEMPLATES)
    (d / 'pb.yml').write_text(textwrap.dedent('''\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - ansible.builtin.template:
                src: "{{ item }}"
                dest: "%s/out/{{ item | basename }}"
                mode: "0600"
              loop:
        ''') % d + items + '\n')
    r = run([str(playbook_bin), '-i', 'localhost,', str(d / 'pb.yml'), '-e', f'@{d / "vars.json"}',
             '-e', f'ansible_python_interpreter={sys.executable}'],
            env=dict(os.environ, ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_NOCOLOR='1'))
    if not check(r.returncode == 0, 'ansible-playbook renders all templates',
                 '' if r.returncode == 0 else (r.stdout + r.stderr)[-600:]):
        return
    differ = [t.name for t in ALL_TEMPLATES
              if (d / 'out' / t.name).read_text()
              != render(t, **dict(SAMPLE_VARS, ansible_managed='Ansible managed'))]
    check(differ == [], "Ansible's rendering = this script's rendering, byte for byte",
          ', '.join(differ))


def step_log(h: Http, buildid: int, step: str) -> str:
    status, body = h.request('GET', f'/api/v2/builds/{buildid}/steps/{step}/logs/stdio/raw')
    return body.decode('utf-8', 'replace') if status == 200 else ''


def fence_checks(tmp: Path, test_pw: pwd.struct_passwd) -> None:
    fence = write(tmp / 'build-fence.nft', render(AGENT_T / 'build-fence.nft.j2',
                                                  test_user=TEST_USER), 0o644)
    text = fence.read_text()
    check('flush ruleset' not in text.replace('never flushes', ''), 'fence never flushes the ruleset')
    server = tmp / 'imds_stub.py'
    server.write_text(textwrap.dedent('''\
        import http.server, socketserver, sys
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b'role-creds')
            def log_message(self, *a): pass
        socketserver.TCPServer(('169.254.169.254', 80), H).serve_forever()
        '''))
    client = ('import urllib.request,sys\n'
              'try:\n'
              ' print(urllib.request.urlopen("http://169.254.169.254/", timeout=2).read().decode())\n'
              'except Exception as e:\n'
              ' print("blocked:", type(e).__name__, e); sys.exit(1)\n')
    script = f'''
set -eu
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
nft add table inet other_table
nft add chain inet other_table keep '{{ type filter hook output priority 10; policy accept; }}'
nft -f {fence}
nft -f {fence}
nft -f {fence}
echo "tables: $(nft list tables | tr '\\n' ' ')"
nft list table inet phoenixci_build
/usr/bin/python3 {server} & srv=$!
sleep 0.5
echo "root: $(/usr/bin/python3 -c '{client}' || true)"
echo "test user: $(setpriv --reuid={test_pw.pw_uid} --regid={test_pw.pw_gid} --clear-groups -- /usr/bin/python3 -c '{client}' || true)"
kill $srv
nft delete table inet phoenixci_build
echo "after delete: $(nft list tables | tr '\\n' ' ')"
'''
    r = run(['unshare', '--net', '--', 'bash', '-c', script])
    out = r.stdout + r.stderr
    print(textwrap.indent(out.strip(), '    | '))
    check(r.returncode == 0, 'fence loads with nft -f, three times in a row (idempotent)')
    check('table inet other_table' in out and out.count('table inet phoenixci_build') >= 2,
          "fence leaves other tables alone")
    check('root: role-creds' in out, 'root still reaches the metadata address')
    check('test user: blocked' in out, 'phoenixci-test is rejected at 169.254.169.254')
    check('after delete: table inet other_table' in out.replace('  ', ' '),
          'ExecStop (delete table) removes only the fence')


if __name__ == '__main__':
    sys.exit(main())
