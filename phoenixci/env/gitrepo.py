"""The app's own repository: created from ``app/`` by `phoenixci up`, pushed to the CI server."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from phoenixci.errors import PhoenixError

IGNORED = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc", "dist")
AUTHOR = {"GIT_AUTHOR_NAME": "phoenixci", "GIT_AUTHOR_EMAIL": "phoenixci@localhost",
          "GIT_COMMITTER_NAME": "phoenixci", "GIT_COMMITTER_EMAIL": "phoenixci@localhost"}


class GitError(PhoenixError):
    """A git command failed; the message carries git's own words."""


def ssh_command(key: Path, known_hosts: Path) -> str:
    """GIT_SSH_COMMAND that uses the run's key and refuses any host key it has not pinned."""
    return (f"ssh -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={known_hosts} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes "
            "-o ConnectTimeout=10")


def git(repo: Path, *args: str, ssh: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **AUTHOR}
    if ssh:
        env["GIT_SSH_COMMAND"] = ssh
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                          timeout=120)
    if check and proc.returncode != 0:
        said = " | ".join(ln for ln in (proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise GitError(f"git {' '.join(args[:2])} failed in {repo}: {said}")
    return proc


def create_app_repo(source: Path, repo: Path, remote: str, *, message: str = "phoenixapp") -> str:
    """A new repository at ``repo`` whose first commit is the contents of ``source``; returns its sha."""
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(source, repo, ignore=IGNORED)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", remote)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return head(repo)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def push(repo: Path, ssh: str, branch: str = "main") -> str:
    """Push ``branch`` to origin; return what the remote said (hooks included)."""
    proc = git(repo, "push", "-q", "origin", f"{branch}:{branch}", ssh=ssh, check=False)
    if proc.returncode != 0:
        said = " | ".join(ln.removeprefix("remote: ") for ln in proc.stderr.strip().splitlines()
                          if ln.strip() and "error: failed to push" not in ln)
        raise GitError(f"git push of {branch} was refused: {said}")
    return proc.stderr
