"""The local cloud in one object: the AWS API, the base image as an AMI, the instance runtime,
the IMDS on each subnet gateway, security groups and Elastic IP forwarding, kept in step with
the API by the reconciler.

``LocalCloud`` runs in-process (the pytest session, ``phoenixci demo``) or inside the
background daemon of ``phoenixci cloud start`` (``phoenixci.localcloud.daemon``).
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenixci.errors import LeakError, PhoenixError
from phoenixci.localcloud.addressing import refuse_overlap
from phoenixci.localcloud.api import ApiServer
from phoenixci.localcloud.cloudtags import LocalCloudError, claim_free_tag, release_tag, write_env_file
from phoenixci.localcloud.mirror import MirrorServer
from phoenixci.localcloud.reconcile import Reconciler
from phoenixci.localcloud.regions import check_region
from phoenixci.localcloud.snapshot import InstanceView, Snapshot, snapshot
from phoenixci.localcloud.stages import layer_files as stage_files

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
#: the wheelhouse on every subnet gateway: pip install --no-index --find-links http://GATEWAY:3141/ …
MIRROR_PORT = 3141
DEFAULT_STATE_DIR = Path(os.environ.get("PHOENIXCI_STATE_DIR", "/var/lib/phoenixci/cloud"))


@dataclass(frozen=True)
class CloudInfo:
    state_dir: str
    endpoint_url: str
    region: str
    image_id: str
    access_key_id: str
    secret_access_key: str
    ca_bundle: str = ""  # the CA the API's certificate is issued by (AWS_CA_BUNDLE)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key, "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region, **({"AWS_CA_BUNDLE": self.ca_bundle} if self.ca_bundle else {})}


class LocalCloud:
    """Start with ``start()`` (or as a context manager), stop with ``stop()``."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, *, region: str = "us-east-1",
                 api_port: int = 0, image_cache: Path | None = None, package_proxy: bool = False) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.region = check_region(region)
        self.api = ApiServer(port=api_port, region=region, tls_dir=self.state_dir / "tls")
        self.image_cache = image_cache
        self.image: Any = None
        self.wheelhouse: Path | None = None
        self.image_id = ""
        self.runtime: Any = None
        self.reconciler: Reconciler | None = None
        self._imds: dict[str, Any] = {}        # gateway ip → ImdsServer
        self._mirrors: dict[str, Any] = {}     # gateway ip → MirrorServer (wheelhouse)
        self._bridges: dict[str, Any] = {}     # subnet cidr → Bridge
        self._net: Any = None                  # NetworkSync: security groups + Elastic IPs
        self._launches: Any = None             # launches.Launches: failed starts
        self.limits_note: str | None = None    # kernel limits still too low (limits.advice)
        self.package_proxy = package_proxy
        self._pkg: Any = None                  # pkgpath.PackagePath (--package-proxy) or None
        self._stage_files: dict[str, str] = {}  # stages.layer_files of the image

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> CloudInfo:
        from phoenixci.localcloud import limits
        from phoenixci.localcloud.hostsg import CloudLinks
        from phoenixci.localcloud.image import build_image
        from phoenixci.localcloud.launches import Launches
        from phoenixci.localcloud.mirror import fill_wheelhouse
        from phoenixci.localcloud.netsync import NetworkSync
        from phoenixci.localcloud.patches import region_refusal
        from phoenixci.localcloud.runtime import Runtime

        if os.geteuid() != 0:
            raise LocalCloudError("the local cloud needs root (network namespaces, bridges, mounts): "
                                  "run as root")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        claim_free_tag(self.state_dir / "runtime", self.state_dir)
        self.runtime = Runtime(self.state_dir / "runtime")  # its tag: the one just claimed
        self.limits_note = limits.advice(limits.ensure())  # raised if we may, else said (log, status)
        swept = self.runtime.sweep()
        if swept:
            log.warning("swept %d leftover(s) of an earlier run: %s", len(swept), ", ".join(swept))
        if self.package_proxy:
            from phoenixci.localcloud.pkgpath import PackagePath

            self._pkg = PackagePath.from_host()
        self.image = build_image(self.image_cache) if self.image_cache else build_image()
        self._stage_files = stage_files(self.image.rootfs)  # cloud-init's stages from one warm Python
        self.wheelhouse = fill_wheelhouse()
        self.api.start()
        region_refusal.serve_only(self.region)  # other regions answer as if not enabled for the account
        try:
            self.image_id = self._register_image()
            self._launches = Launches(self.runtime, self._ec2)
            self._serve_consoles()
            self._net = NetworkSync(read=self._read, ec2=self._ec2, running=self.runtime.list, links=CloudLinks(
                self.runtime, self._bridges, self._imds, services={self.api.port, MIRROR_PORT},
                dns=self._pkg is not None)).start()
            self.reconciler = Reconciler(read=self._read, ensure_running=self._ensure_running,
                                         ensure_stopped=self.runtime.stop, ensure_gone=self.runtime.destroy,
                                         phase_of=self.runtime.boot_phase, apply_network=self._net.apply,
                                         release=self._net.release, exit_reason=self._launches.exit_reason,
                                         fail=self._launches.fail)
            self.reconciler.start()
            self.api.on_change = self.reconciler.wake  # a launch starts now, not at the next pass
        except BaseException:
            self.stop()
            raise
        info = self.info()
        write_env_file(self.state_dir / "env", info.env())
        return info

    def _serve_consoles(self) -> None:
        """GetConsoleOutput shows each instance's real console (see localcloud/console.py)."""
        from phoenixci.localcloud.patches import console_output

        console_output.set_source(lambda iid: self._launches.console(iid) if iid.startswith("i-") else None)

    def info(self) -> CloudInfo:
        admin = self.api.admin
        assert admin is not None
        return CloudInfo(str(self.state_dir), self.api.endpoint_url, self.region, self.image_id,
                         admin.access_key_id, admin.secret_access_key, self.api.ca_bundle)

    def stop(self) -> None:
        """Remove every instance, bridge, namespace, mount, rule and listener; fail if any is left."""
        if self.reconciler is not None:
            self.api.on_change = None
            self.reconciler.stop()
            self.reconciler = None
        if self._net is not None:
            self._net.close()
            self._net = None
        for gateway in list(self._mirrors):
            self._mirrors.pop(gateway).stop()
        if self._pkg is not None:
            self._pkg.close()
        for gateway in list(self._imds):
            self._imds.pop(gateway).stop()
            with contextlib.suppress(PhoenixError):
                self.api.stop_listening_on(gateway)
        left: list[str] = []
        if self.runtime is not None:
            left = self.runtime.close()
        self._bridges.clear()
        shutil.rmtree(self.state_dir / "layers", ignore_errors=True)  # no instance mounts them now
        if self.api.port is not None:
            self.api.stop()  # also ends the region refusal (ApiServer._reset_moto)
        for name in ("env", "status.json"):
            (self.state_dir / name).unlink(missing_ok=True)
        if self.runtime is not None:
            release_tag(self.runtime.tag, self.state_dir)
        if left:
            raise LeakError(f"local cloud stop left {len(left)} item(s): {', '.join(left)}", leftovers=left)

    def __enter__(self) -> LocalCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        records = self.reconciler.status() if self.reconciler else {}
        snap = self._read()
        eips = {iid: ip for ip, iid in snap.addresses.items()}
        instances = [{"instance_id": v.instance_id, "state": v.state, "private_ip": v.private_ip,
                      "elastic_ip": eips.get(v.instance_id), "subnet": v.subnet_cidr,
                      "boot_phase": records.get(v.instance_id, {}).get("phase", "absent"),
                      "error": records.get(v.instance_id, {}).get("error")}
                     for v in sorted(snap.instances.values(), key=lambda v: v.instance_id)]
        return {"state_dir": str(self.state_dir), "endpoint_url": self.api.endpoint_url,
                "http_endpoint_url": self.api.http_endpoint_url, "ca_bundle": self.api.ca_bundle,
                "region": self.region, "image_id": self.image_id, "limits": self.limits_note,
                "package_proxy": self._pkg.status() if self._pkg else None,
                "subnets": self._subnets(), "instances": instances}

    def _subnets(self) -> dict[str, dict[str, str]]:
        return {cidr: {"bridge": b.name, "gateway": b.gateway_ip, "api_url": f"https://{b.gateway_ip}:{self.api.port}",
                       "mirror_url": f"http://{b.gateway_ip}:{MIRROR_PORT}/"}
                for cidr, b in list(self._bridges.items())}

    def _publish_subnets(self) -> None:
        """status.json's subnets for other processes attached to this cloud (a daemon rewrites
        the whole file every second; an in-process cloud only when a subnet appears)."""
        path = self.state_dir / "status.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data["subnets"] = self._subnets()
        tmp = path.with_suffix(".subnets.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(path)

    # -- reconciler hooks ------------------------------------------------------------------
    def _ec2(self) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[ACCOUNT_ID][self.region]

    def _read(self) -> Snapshot:
        return snapshot(self._ec2())

    def _register_image(self) -> str:
        from phoenixci.localcloud.ami import register_image

        return register_image(self._ec2(), self.image.name, self.state_dir, ACCOUNT_ID, self.region)

    def _bridge(self, cidr: str) -> Any:
        bridge = self._bridges.get(cidr)
        if bridge is None:
            refuse_overlap(cidr)
            bridge = self.runtime.ensure_bridge(cidr, self._pkg.names if self._pkg else ())
            self._bridges[cidr] = bridge
            self.api.listen_on(bridge.gateway_ip)
            self._net.forwarding.allow_network(cidr)
            self._imds[bridge.gateway_ip] = self._start_imds(bridge.gateway_ip)
            assert self.wheelhouse is not None
            self._mirrors[bridge.gateway_ip] = MirrorServer(self.wheelhouse, host=bridge.gateway_ip,
                                                            port=MIRROR_PORT).start()
            if self._pkg is not None:
                self._pkg.serve(bridge.gateway_ip)
            self._publish_subnets()
        return bridge

    def _start_imds(self, gateway_ip: str) -> Any:
        from phoenixci.localcloud.imds import ImdsServer, MotoInstanceDirectory

        server = ImdsServer(MotoInstanceDirectory(ACCOUNT_ID, self.region), host=gateway_ip, port=0)
        server.start()
        return server

    def _ensure_running(self, view: InstanceView) -> None:
        from phoenixci.localcloud.instance_layer import ensure_layer
        from phoenixci.localcloud.runtime import InstanceSpec

        if self.runtime.boot_phase(view.instance_id) not in {"absent", "stopped"}:
            return  # already booting or running (or failed: reported by its phase)
        bridge = self._bridge(view.subnet_cidr)
        self._net.prepare(view.instance_id)  # its port and groups on the host before it starts
        network = ipaddress.ip_network(view.subnet_cidr)
        spec = InstanceSpec(instance_id=view.instance_id, private_ip=view.private_ip,
                            prefix_len=network.prefixlen, gateway_ip=bridge.gateway_ip,
                            subnet_cidr=view.subnet_cidr, mac=view.mac,
                            hostname="ip-" + view.private_ip.replace(".", "-"),
                            imds_port=self._imds[bridge.gateway_ip].port, bridge=bridge.name)
        layer = ensure_layer(self.state_dir / "layers", self.image.rootfs,  # the API's CA and address
                             f"https://{bridge.gateway_ip}:{self.api.port}", self.api.tls.ca.pem,
                             {**self._stage_files, **(self._pkg.layer_files(bridge.gateway_ip) if self._pkg else {})})
        self._launches.start(spec, self.image, layers=[layer])  # runtime.start (+ a test-only hook)
