"""What an instance of the local cloud gets beside the image: the API's CA and where the API is.

On AWS an instance needs neither; here the API is the subnet gateway's HTTPS endpoint under the
cloud's own CA, so every instance of a subnet boots with one read-only overlay layer (above the
image's root, below the instance's own upper dir) holding:

- the CA in the system store as ``update-ca-certificates`` would leave it, built once per layer
  instead of at every boot (cloud-init's ``ca_certs`` did that and cost 1.1 s before SSH):
  ``/usr/local/share/ca-certificates/phoenixci-local-cloud.crt`` (which every later
  ``update-ca-certificates`` run adds again — user data with its own ``ca_certs`` included), the
  image's ``/etc/ssl/certs/ca-certificates.crt`` with the CA appended, and its
  ``/etc/ssl/certs/<name>.pem`` and ``<subject hash>.0`` entries;
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
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

#: where AWS_CA_BUNDLE points inside an instance: the system store cloud-init adds the CA to
INSTANCE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


LOCAL_CAS = "usr/local/share/ca-certificates/"
#: (layers dir, image, endpoint, CA, extra files) → the layer made for them (a layer never changes)
_made: dict[tuple[str, str, str, str, tuple[tuple[str, str], ...]], Path] = {}


def layer_files(endpoint_url: str, ca_pem: str, extra: Mapping[str, str] | None = None,
                image_bundle: str = "") -> dict[str, str]:
    """Path inside the instance → content (``extra``: more files, relative paths; ``image_bundle``:
    the image's /etc/ssl/certs/ca-certificates.crt, which gets every local CA appended)."""
    env = {"AWS_ENDPOINT_URL": endpoint_url, "AWS_CA_BUNDLE": INSTANCE_CA_BUNDLE}
    files = {**(extra or {}), f"{LOCAL_CAS}phoenixci-local-cloud.crt": ca_pem.strip() + "\n",
             "etc/environment": "".join(f"{k}={v}\n" for k, v in env.items())}
    local = {rel: pem for rel, pem in sorted(files.items()) if rel.startswith(LOCAL_CAS) and rel.endswith(".crt")}
    files[INSTANCE_CA_BUNDLE.lstrip("/")] = image_bundle + "".join(local.values())
    for rel, pem in local.items():
        name = Path(rel).stem
        files[f"etc/ssl/certs/{name}.pem"] = pem
        digest = subject_hash(pem)
        if digest:
            files[f"etc/ssl/certs/{digest}.0"] = pem
    return files


def subject_hash(pem: str) -> str:
    """OpenSSL's subject hash of ``pem`` (the name of its entry in a CApath directory), "" if unknown."""
    try:
        done = subprocess.run(["openssl", "x509", "-subject_hash", "-noout"], input=pem, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    out = done.stdout.strip()
    return out if done.returncode == 0 and len(out) == 8 else ""


def ensure_layer(layers_dir: Path, image_root: Path, endpoint_url: str, ca_pem: str,
                 extra: Mapping[str, str] | None = None) -> Path:
    """The layer for ``endpoint_url`` under ``layers_dir`` (made once; its directories carry the
    image's owners and modes, since an upper overlay layer's directory attributes win)."""
    key = (str(layers_dir), str(image_root), endpoint_url, ca_pem, tuple(sorted((extra or {}).items())))
    known = _made.get(key)
    if known is not None and known.is_dir():
        return known  # every launch of a subnet asks again: no openssl run, no hashing each time
    bundle = image_root / INSTANCE_CA_BUNDLE.lstrip("/")
    files = layer_files(endpoint_url, ca_pem, extra, bundle.read_text() if bundle.is_file() else "")
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    layer = layers_dir / digest
    if layer.is_dir():
        _made[key] = layer
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
    _made[key] = layer
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
