"""The files that run an instance's cloud-init stages from one warm Python (stage_server.py).

They go into the instance layer (instance_layer.py): the server and client scripts under
``/usr/lib/phoenixci/``, a ``Type=notify`` unit for the server ordered before
``cloud-init-local.service``, and a drop-in per stage unit that replaces its ``ExecStart`` with
the client (same arguments; ``SyslogIdentifier=cloud-init`` keeps the journal's name). Nothing
else of cloud-init changes: its configuration, modules, datasource, status and logs are the
image's. Without the server (it failed, or a stage is rerun after the boot) the client execs
``/usr/bin/cloud-init`` itself.

What the server preloads: cloud-init's entry point, the modules its stages import later (the
datasource, the distro, the mergers, DHCP), and every ``cc_*`` module the image's cloud.cfg lists.
"""
from __future__ import annotations

from pathlib import Path

import yaml

GUEST_DIR = "usr/lib/phoenixci"
SOCKET = "/run/phoenixci/cloud-init-stages.sock"
REAL = "/usr/bin/cloud-init"
ENTRY = "cloudinit.cmd.main:main"
SERVER_UNIT = "phoenixci-cloud-init-stages.service"
#: unit → its ExecStart arguments in the image (Debian 12's cloud-init 22.4.2 units)
STAGES = {
    "cloud-init-local.service": "init --local",
    "cloud-init.service": "init",
    "cloud-config.service": "modules --mode=config",
    "cloud-final.service": "modules --mode=final",
}
#: what the stages import after cloudinit.cmd.main (measured with sys.modules in each stage)
LATER_IMPORTS = (
    "cloudinit.sources.DataSourceEc2", "cloudinit.sources.DataSourceNone", "cloudinit.sources.helpers.ec2",
    "cloudinit.distros.debian", "cloudinit.distros.ug_util", "cloudinit.distros.parsers.hostname",
    "cloudinit.mergers.m_dict", "cloudinit.mergers.m_list", "cloudinit.mergers.m_str",
    "cloudinit.net.dhcp", "cloudinit.net.ephemeral", "cloudinit.gpg", "email.generator", "jinja2.ext",
)
MODULE_LISTS = ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules")


def config_modules(image_root: Path) -> list[str]:
    """The cc_* modules the image's /etc/cloud/cloud.cfg runs, as Python module names."""
    try:
        cfg = yaml.safe_load((image_root / "etc/cloud/cloud.cfg").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    names: list[str] = []
    for key in MODULE_LISTS:
        for item in cfg.get(key) or []:
            name = item[0] if isinstance(item, list) and item else item.get("name") if isinstance(item, dict) else item
            if isinstance(name, str) and name:
                names.append("cloudinit.config.cc_" + name.replace("-", "_"))
    return list(dict.fromkeys(names))


def layer_files(image_root: Path) -> dict[str, str]:
    """Path inside the instance (relative) → content; empty if the image has no cloud-init."""
    if not (image_root / REAL.lstrip("/")).exists():
        return {}
    here = Path(__file__).parent
    server, client = f"/{GUEST_DIR}/stage_server.py", f"/{GUEST_DIR}/stage_client.py"
    preload = " ".join(f"--preload {m}" for m in (*LATER_IMPORTS, *config_modules(image_root)))
    last = STAGES["cloud-final.service"]
    files = {
        f"{GUEST_DIR}/stage_server.py": (here / "stage_server.py").read_text(),
        f"{GUEST_DIR}/stage_client.py": (here / "stage_client.py").read_text(),
        f"etc/systemd/system/{SERVER_UNIT}": f"""\
# phoenixci local cloud: cloud-init's stages forked from one Python that imported cloud-init once
[Unit]
Description=cloud-init stages from one preloaded Python (phoenixci local cloud)
DefaultDependencies=no
Before=cloud-init-local.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/python3 -I {server} --socket {SOCKET} --entry {ENTRY} --argv0 {REAL} \\
  --exit-after "{last}" --idle 600 {preload}
TimeoutStartSec=60
""",
    }
    for unit, args in STAGES.items():
        wants = (f"[Unit]\nWants={SERVER_UNIT}\nAfter={SERVER_UNIT}\n\n"
                 if unit == "cloud-init-local.service" else "")
        files[f"etc/systemd/system/{unit}.d/50-phoenixci-stages.conf"] = (
            f"# phoenixci local cloud: this stage forked from {SERVER_UNIT} (see {server})\n{wants}"
            f"[Service]\nExecStart=\nExecStart=/usr/bin/python3 -I -S {client} {SOCKET} {REAL} {args}\n"
            "SyslogIdentifier=cloud-init\n")
    return files
