"""A local cloud's files outside its state dir: the name tag it owns (/run/phoenixci/tags) and
its env file; and the error the local cloud raises."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from phoenixci.errors import PhoenixError


class LocalCloudError(PhoenixError):
    """The local cloud cannot do what was asked (not root, overlapping subnet, ...)."""



def write_env_file(path: Path, env: dict[str, str]) -> None:
    """``export KEY=value`` lines, readable only by root, for ``source DIR/env``."""
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text("".join(f"export {k}={v}\n" for k, v in sorted(env.items())))
    tmp.replace(path)


TAG_DIR = Path("/run/phoenixci/tags")


def claim_tag(tag: str, state_dir: Path) -> None:
    """Own the name tag ``tag`` for ``state_dir``, or refuse if another state dir owns it.

    Every namespace, bridge, cgroup and firewall table of a cloud carries its tag, and a start
    sweeps everything with its tag: two state dirs hashing to one tag must never both run.
    """
    TAG_DIR.mkdir(parents=True, exist_ok=True)
    path = TAG_DIR / tag
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        owner = path.read_text().strip()
        if owner != str(state_dir):
            raise LocalCloudError(f"the local cloud of {owner} uses the name tag {tag} of {state_dir}: "
                                  f"stop it, or choose another --state-dir (or remove {path} if that "
                                  "cloud is gone)") from None
        return
    with os.fdopen(fd, "w") as f:
        f.write(f"{state_dir}\n")


def claim_free_tag(runtime_dir: Path, state_dir: Path) -> str:
    """Claim the first of the runtime's candidate tags no other state dir owns (its own from an
    earlier run first, so a restart sweeps what a crash left) and write it to the runtime's tag
    file, where every later ``tag_of`` finds it. Three hex digits collide now and then between
    clouds of random state dirs; two of 32 candidates all taken does not happen by chance."""
    from phoenixci.localcloud.hostcheck import TAG_FILE, candidate_tags, tag_of

    current = tag_of(runtime_dir)
    owners = []
    for tag in dict.fromkeys([current, *candidate_tags(runtime_dir)]):
        try:
            claim_tag(tag, state_dir)
        except LocalCloudError:
            owners.append(tag)
            continue
        runtime_dir.mkdir(parents=True, exist_ok=True)
        (runtime_dir / TAG_FILE).write_text(tag + "\n")
        return tag
    raise LocalCloudError(f"every name tag {state_dir} may use ({', '.join(owners)}) belongs to another local "
                          f"cloud (see {TAG_DIR}): stop those, or choose another --state-dir")


def release_tag(tag: str, state_dir: Path) -> None:
    path = TAG_DIR / tag
    with contextlib.suppress(FileNotFoundError):
        if path.read_text().strip() == str(state_dir):
            path.unlink()
