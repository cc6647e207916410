"""Base images built locally from Debian packages (no registry): debootstrap a root filesystem, add
the sandbox user, and ``docker import`` it. Submissions build ``FROM`` these images.

``referee images build`` builds them (needs root and the Debian mirror); ``ensure_base_image(client)``
returns the tag, building once and then reusing the tag while its recipe label matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from referee.platform.core.errors import BackendError
from referee.platform.runtime.engine import docker_client, require_engine
from referee.platform.runtime.locks import file_lock

DEFAULT_MIRROR = "http://deb.debian.org/debian"
SANDBOX_UID = 10001
SANDBOX_USER = "referee"
RECIPE_LABEL = "referee.recipe"
LOCK_PATH = Path(tempfile.gettempdir()) / "referee-base-images.lock"

# Trimmed after debootstrap: package caches and documentation are dead weight in a sandbox image.
_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
          "usr/share/locale", "var/log")
# Kernel and runtime filesystems: Docker provides them in every container.
_EMPTY_DIRS = ("dev", "proc", "sys", "run", "tmp")


@dataclass(frozen=True)
class BaseImage:
    """A recipe: which Debian suite and packages go into which tag."""

    name: str
    tag: str
    suite: str
    packages: tuple[str, ...]
    description: str

    @property
    def recipe_hash(self) -> str:
        doc = {"suite": self.suite, "packages": sorted(self.packages), "uid": SANDBOX_UID, "prune": _PRUNE,
               "format": 1}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


BASE_IMAGES: dict[str, BaseImage] = {
    "python": BaseImage(name="python", tag="referee/base-python:bookworm", suite="bookworm",
                        packages=("python3-minimal", "python3-numpy"),
                        description="Debian bookworm (minbase) with Python 3.11 and numpy"),
}
DEFAULT_BASE = "python"
BASE_IMAGE = BASE_IMAGES[DEFAULT_BASE].tag  # what examples and tests build FROM


def image_recipe(client: Any, tag: str) -> str | None:
    """The recipe label of a local image, '' when it has none, None when the tag does not exist."""
    import docker.errors
    try:
        info = client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return None
    return ((info.get("Config") or {}).get("Labels") or {}).get(RECIPE_LABEL, "")


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise builds across processes: two test sessions must not debootstrap the same image twice."""
    with file_lock(Path(LOCK_PATH)):
        yield


def ensure_base_image(client: Any = None, name: str = DEFAULT_BASE, *, force: bool = False,
                      mirror: str = DEFAULT_MIRROR, log: Callable[[str], None] | None = None) -> str:
    """Return the tag of base image ``name``, building it first unless a current build exists."""
    client = client or docker_client()
    recipe = _recipe(name)
    if not force and image_recipe(client, recipe.tag) == recipe.recipe_hash:
        return recipe.tag
    with _build_lock():
        if not force and image_recipe(client, recipe.tag) == recipe.recipe_hash:
            return recipe.tag  # another process built it while we waited
        build_base_image(client, recipe, mirror=mirror, log=log)
    return recipe.tag


def _recipe(name: str) -> BaseImage:
    if name not in BASE_IMAGES:
        raise BackendError(f"no base image named {name!r}; known: {', '.join(sorted(BASE_IMAGES))}")
    return BASE_IMAGES[name]


def build_base_image(client: Any, recipe: BaseImage, *, mirror: str = DEFAULT_MIRROR,
                     log: Callable[[str], None] | None = None, workdir: str | None = None) -> str:
    """debootstrap + sandbox user + ``docker import``; returns the new image id."""
    say = log or (lambda msg: None)
    if os.geteuid() != 0:
        raise BackendError("building a base image runs debootstrap, which needs root: run "
                           "`sudo referee images build` (or scripts/build-base-image.sh as root)")
    if shutil.which("debootstrap") is None:
        raise BackendError("debootstrap is not installed: run `apt-get install -y debootstrap` and retry")
    tmp = Path(tempfile.mkdtemp(prefix="referee-rootfs-", dir=workdir or "/var/tmp"))
    try:
        rootfs = tmp / "rootfs"
        say(f"debootstrap {recipe.suite} with {', '.join(recipe.packages)} from {mirror} (about a minute)")
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}", recipe.suite,
               str(rootfs), mirror]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise BackendError(f"debootstrap failed with status {proc.returncode} (is {mirror} reachable?):\n{tail}")
        _customise(rootfs)
        tar_path = tmp / "rootfs.tar"
        say(f"packing the root filesystem ({_du(rootfs) // 2**20} MiB)")
        _pack(rootfs, tar_path)
        repo, tag = recipe.tag.rsplit(":", 1)
        changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "ENV LANG=C.UTF-8", "ENV PYTHONDONTWRITEBYTECODE=1", "WORKDIR /",
                   f"LABEL {RECIPE_LABEL}={recipe.recipe_hash}",
                   f"LABEL referee.base={recipe.name}"]
        say(f"docker import -> {recipe.tag}")
        client.api.import_image(src=str(tar_path), repository=repo, tag=tag, changes=changes)
        image_id = client.api.inspect_image(recipe.tag)["Id"]
        say(f"built {recipe.tag} ({image_id[:19]})")
        return image_id
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _customise(rootfs: Path) -> None:
    """Add the unprivileged sandbox user and trim what a sandbox never needs."""
    with open(rootfs / "etc/passwd", "a", encoding="utf-8") as f:
        f.write(f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_UID}:referee sandbox user:/tmp:/usr/sbin/nologin\n")
    with open(rootfs / "etc/group", "a", encoding="utf-8") as f:
        f.write(f"{SANDBOX_USER}:x:{SANDBOX_UID}:\n")
    for rel in _PRUNE:
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _du(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _pack(rootfs: Path, dest: Path) -> None:
    """Tar the root filesystem with numeric owners, leaving runtime filesystems empty."""
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name[2:] if info.name.startswith("./") else info.name
        top, _, rest = name.partition("/")
        if rest and top in _EMPTY_DIRS:
            return None
        info.uname = info.gname = ""
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(rootfs), arcname=".", filter=keep)


def local_images(client: Any) -> list[dict[str, Any]]:
    """referee's base images and built submissions on the local engine."""
    out = []
    for img in client.api.images():
        tags = [t for t in (img.get("RepoTags") or []) if t.startswith(("referee/", "referee-sub/"))]
        for t in tags:
            labels = img.get("Labels") or {}
            out.append({"tag": t, "id": img["Id"], "size_mib": round(img.get("Size", 0) / 2**20, 1),
                        "created": img.get("Created"), "recipe": labels.get(RECIPE_LABEL)})
    return sorted(out, key=lambda r: r["tag"])


def client_or_error() -> Any:
    return require_engine()
