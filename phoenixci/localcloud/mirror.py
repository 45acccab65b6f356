"""The package mirror instances use instead of the internet: a wheelhouse over HTTP.

Instances have no route out of the machine, so Python packages come from a directory of
wheels served read-only on each subnet gateway (``pip install --no-index --find-links
http://GATEWAY:PORT/ awscli``). The wheelhouse is filled on the host with pip as configured
here (``fill_wheelhouse``), once, and cached.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

DEFAULT_WHEELHOUSE = Path("/var/cache/phoenixci/wheelhouse")
#: what the CI roles install (playbooks/group_vars/all.yml pins the same; a unit test checks)
CI_REQUIREMENTS = ("buildbot>=4.3,<4.4", "buildbot-www>=4.3,<4.4", "buildbot-worker>=4.3,<4.4", "boto3>=1.34")
#: what instances can install: the AWS CLI (tests and users), boto3 (scripts), the CI's packages
DEFAULT_REQUIREMENTS = ("awscli>=1.32", *CI_REQUIREMENTS)


class MirrorError(PhoenixError):
    """The wheelhouse could not be filled or served."""


def fill_wheelhouse(directory: Path = DEFAULT_WHEELHOUSE,
                    requirements: tuple[str, ...] = DEFAULT_REQUIREMENTS) -> Path:
    """Download wheels for ``requirements`` (and their dependencies) once; return the dir.

    The download targets the instances' Python (Debian 12: CPython 3.11, x86_64, manylinux).
    A stamp file named after the requirements makes the second call return at once.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f".filled-{hashlib.sha256(' '.join(requirements).encode()).hexdigest()[:12]}"
    if stamp.exists():
        return directory
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(directory),
           "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
           "--platform", "any", *requirements]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise MirrorError(f"cannot fill the wheelhouse {directory}: {done.stderr.strip().splitlines()[-1:]}")
    stamp.touch()
    log.info("wheelhouse %s filled for %s", directory, ", ".join(requirements))
    return directory


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("mirror %s " + format, self.client_address[0], *args)

    def do_PUT(self) -> None:  # noqa: N802 - read-only
        self.send_error(405)

    do_POST = do_DELETE = do_PUT  # noqa: N815


class MirrorServer:
    """Serve ``directory`` read-only on ``host:port`` (a subnet gateway)."""

    def __init__(self, directory: Path, *, host: str, port: int = 0) -> None:
        self.directory = directory
        handler = functools.partial(_QuietHandler, directory=str(directory))
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise MirrorError(f"cannot serve the wheelhouse on {host}:{port}: {e}") from e
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),  # stop() waits a poll
                                        name=f"mirror-{host}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> MirrorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
