"""What an instance of the local cloud gets beside the image: the API's CA and where the API is.

On AWS an instance needs neither; here the API is the subnet gateway's HTTPS endpoint under the
cloud's own CA, so every instance of a subnet boots with one read-only overlay layer (above the
image's root, below the instance's own upper dir) holding:

- ``/etc/cloud/cloud.cfg.d/91_phoenixci_api.cfg``: cloud-init's ``ca_certs`` with the CA, so
  cloud-init puts it into the system store (``update-ca-certificates`` →
  ``/etc/ssl/certs/ca-certificates.crt``) before user data runs. User data that sets its own
  ``ca_certs`` replaces this config (cloud-init merges user data over system config), so the CA
  is also ``/usr/local/share/ca-certificates/phoenixci-local-cloud.crt``, which every
  ``update-ca-certificates`` run adds (that one included);
- ``/etc/environment`` (every login: pam_env for ssh, sudo, su): ``AWS_ENDPOINT_URL`` (the
  gateway's API) and ``AWS_CA_BUNDLE`` (the system store: boto3 and the aws CLI from pip read only
  their own bundle, not the system's). Those two variables are the only local difference an
  instance sees. Services keep the environment they have on AWS (none of the two): what runs as a
  service and needs the API is given both explicitly (the CI agent's pipeline.env, the app
  server's bootstrap), and a build's test unit sees no AWS_ variable at all.

With the package path (``cloud start --package-proxy``) the layer also holds what pkgpath adds
(``extra``: /etc/resolv.conf naming the gateway; the host's own CAs and pip's trust in them).

Layers are named by the hash of their content, so a layer in use is never rewritten.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

#: where AWS_CA_BUNDLE points inside an instance: the system store cloud-init adds the CA to
INSTANCE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def layer_files(endpoint_url: str, ca_pem: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Path inside the instance → content (``extra``: more files, relative paths)."""
    env = {"AWS_ENDPOINT_URL": endpoint_url, "AWS_CA_BUNDLE": INSTANCE_CA_BUNDLE}
    cert = "".join(f"    {line}\n" for line in ca_pem.strip().splitlines())
    return {**(extra or {}),
        "etc/cloud/cloud.cfg.d/91_phoenixci_api.cfg":
            "# phoenixci local cloud: trust the CA of its AWS API (cloud-init adds it to the system store)\n"
            f"ca_certs:\n  trusted:\n  - |\n{cert}",
        "usr/local/share/ca-certificates/phoenixci-local-cloud.crt": ca_pem.strip() + "\n",
        "etc/environment": "".join(f"{k}={v}\n" for k, v in env.items()),
    }


def ensure_layer(layers_dir: Path, image_root: Path, endpoint_url: str, ca_pem: str,
                 extra: Mapping[str, str] | None = None) -> Path:
    """The layer for ``endpoint_url`` under ``layers_dir`` (made once; its directories carry the
    image's owners and modes, since an upper overlay layer's directory attributes win)."""
    files = layer_files(endpoint_url, ca_pem, extra)
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    layer = layers_dir / digest
    if layer.is_dir():
        return layer
    layers_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=layers_dir))
    try:
        os.chmod(tmp, 0o755)
        for rel, content in files.items():
            path = tmp / rel
            for parent in reversed(Path(rel).parents[:-1]):
                made = tmp / parent
                if not made.is_dir():
                    made.mkdir()
                    _like(made, image_root / parent, 0o755)
            path.write_text(content)
            _like(path, image_root / rel, 0o644)
        try:
            tmp.rename(layer)
        except OSError:
            if not layer.is_dir():  # else another thread made the same layer first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return layer


def _like(path: Path, model: Path, default_mode: int) -> None:
    try:
        st = model.stat()
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
    except OSError:
        uid, gid, mode = 0, 0, default_mode
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, mode)
