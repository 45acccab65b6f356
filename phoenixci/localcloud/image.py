"""The base image ("AMI") of local instances: Debian 12 with systemd, cloud-init and sshd.

``build_image()`` runs ``mmdebstrap`` once into a tarball, extracts it once into
``<cache>/<name>/rootfs`` (the read-only overlay lower dir of every instance) and writes
``image.json``. A second call returns at once. Builds are serialised with a lock file and
happen in a temporary directory that is renamed into place only when complete.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from phoenixci.errors import PhoenixError

log = logging.getLogger(__name__)

IMAGE_NAME = "phoenixci-debian-12-v3"
DEFAULT_CACHE = Path("/var/cache/phoenixci/images")
SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def host_apt_sources() -> list[str]:
    """The apt sources this machine is configured with, as files for mmdebstrap to paste.

    The image's packages come through apt exactly as the host gets its own: no mirror is
    named here.
    """
    files: list[Path] = []
    main, parts = APT_SOURCES
    if main.is_file() and any(ln.strip() and not ln.lstrip().startswith("#")
                              for ln in main.read_text().splitlines()):
        files.append(main)
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in {".list", ".sources"} and p.is_file())
    if not files:
        raise ImageError("this machine has no apt sources configured (/etc/apt/sources.list, "
                         "/etc/apt/sources.list.d/): configure apt first")
    return [str(f) for f in files]
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "cloud-init", "openssh-server", "sudo", "python3",
    "python3-venv", "git", "curl", "iproute2", "nftables", "isc-dhcp-client", "ca-certificates",
    "netbase", "procps",
    # what the CI roles declare with apt (playbooks/roles/*/tasks): baked in as a golden AMI
    # would be, so nothing needs the internet at converge time. python3-apt lets Ansible's apt
    # module run; acl lets it become an unprivileged user; python3-pytest is the app's test runner.
    "python3-apt", "acl", "python3-pytest",
)
# Units that only slow a container's boot down or wait for hardware it does not have.
MASKED_UNITS = (
    "console-getty.service", "serial-getty@.service", "getty@.service", "getty-static.service",
    "systemd-networkd-wait-online.service", "systemd-udevd.service", "systemd-udev-trigger.service",
    "systemd-udev-settle.service", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "systemd-timesyncd.service", "sys-kernel-config.mount",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "dev-hugepages.mount", "dev-mqueue.mount",
    "systemd-journald-audit.socket", "systemd-remount-fs.service", "systemd-pstore.service",
    # no seats, no user managers: SSH logins work without logind (pam_systemd is optional) and an
    # idle instance saves ~8 MiB, plus ~10 MiB for each `systemd --user` a login would start
    "systemd-logind.service",
)
CLOUD_CFG = """\
# phoenixci: behave like Debian's EC2 images, talking to the local cloud's IMDS.
datasource_list: [Ec2, None]
datasource:
  Ec2:
    metadata_urls: ['http://169.254.169.254']
    timeout: 2
    max_wait: 20
system_info:
  default_user:
    name: admin
    lock_passwd: true
    gecos: Debian
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
locale: C.UTF-8
manage_etc_hosts: true
ssh_genkeytypes: [ed25519]
ssh_deletekeys: false
network: {config: disabled}
"""


class ImageError(PhoenixError):
    """The base image could not be built or read."""


@dataclass(frozen=True)
class Image:
    name: str
    rootfs: Path
    tarball: Path
    manifest: dict

    @classmethod
    def load(cls, image_dir: Path) -> Image:
        manifest = json.loads((image_dir / "image.json").read_text())
        return cls(name=manifest["name"], rootfs=image_dir / "rootfs",
                   tarball=image_dir / f"{manifest['name']}.tar", manifest=manifest)


def _ready(image_dir: Path) -> bool:
    return (image_dir / "image.json").is_file() and (image_dir / "rootfs" / "sbin" / "init").exists()


def build_image(cache_dir: Path = DEFAULT_CACHE, force: bool = False, name: str = IMAGE_NAME) -> Image:
    """Return the cached image, building it first if it is missing (or ``force``)."""
    image_dir = cache_dir / name
    if not force and _ready(image_dir):
        return Image.load(image_dir)
    if os.geteuid() != 0:
        raise ImageError("building the base image needs root (mmdebstrap, extracting device files)")
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _ready(image_dir):  # somebody else built it while we waited
            return Image.load(image_dir)
        return _build_locked(cache_dir, image_dir, name)


def _write_overlay(root: Path) -> None:
    """Files copied into the image by mmdebstrap's sync-in hook."""
    cfg = root / "etc/cloud/cloud.cfg.d/90_phoenixci.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(CLOUD_CFG)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in MASKED_UNITS:
        (units / unit).symlink_to("/dev/null")
    journald = root / "etc/systemd/journald.conf.d/phoenixci.conf"
    journald.parent.mkdir(parents=True)
    journald.write_text("[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n")


def _packages(rootfs: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    for para in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and line[0] != " ")
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            out[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(out.items()))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build_locked(cache_dir: Path, image_dir: Path, name: str) -> Image:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.build-", dir=cache_dir))
    try:
        overlay = tmp / "overlay"
        _write_overlay(overlay)
        tarball = tmp / f"{name}.tar"
        argv = [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
            "--include=" + ",".join(PACKAGES),
            "--customize-hook=sync-in " + str(overlay) + " /",
            '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
            '--customize-hook=truncate -s0 "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id',
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
            SUITE, str(tarball), *host_apt_sources(),
        ]
        log.info("building image %s with mmdebstrap (about 35 s)", name)
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise ImageError(f"mmdebstrap failed (exit {proc.returncode}): {tail}")
        rootfs = tmp / "rootfs"
        rootfs.mkdir()
        proc = subprocess.run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(rootfs)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(f"extracting {tarball} failed: {proc.stderr.strip()[-300:]}")
        manifest = {
            "name": name,
            "sha256": _sha256(tarball),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "suite": SUITE,
            "packages": _packages(rootfs),
        }
        (tmp / "image.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(overlay)
        if image_dir.exists():
            shutil.rmtree(image_dir)
        tmp.rename(image_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built image %s in %.1f s", name, time.monotonic() - started)
    return Image.load(image_dir)
