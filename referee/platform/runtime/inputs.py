"""A competition's inputs on a fleet: published once as a content-addressed tree, cached once per node.

The host publishes ``data.input`` to an input store (``s3://bucket/prefix``, or a directory that the
nodes can read, for tests and single machines) under the sha256 of its manifest; unchanged files are
not sent again. A node materialises a tree into its local ``InputCache`` the first time a job needs it
(files stream from the store straight to disk: nothing passes through the scheduler's memory) and
every job on that node mounts the same read-only directory. The workspace, its SQLite database and
the competition's files never need to be on a shared file system.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from referee.platform.core.errors import BackendError
from referee.platform.runtime.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
)
from referee.platform.runtime.inputcache import CacheError, InputCache

DEFAULT_CACHE = Path(os.environ.get("REFEREE_INPUT_CACHE", "/tmp/referee-ray-inputs"))
DEFAULT_CACHE_BYTES = 100 * 2**30
_published: dict[tuple[str, str, tuple[Any, ...]], str] = {}
_lock = threading.Lock()


def open_input_store(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> ArtifactStore:
    """``s3://bucket/prefix`` (boto3's credential chain: an instance role on a fleet) or a directory."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        return S3ArtifactStore(bucket, prefix or "referee", endpoint_url=endpoint_url, region=region)
    path = url.removeprefix("file://")
    if not path:
        raise BackendError("input store: give s3://bucket/prefix or a directory")
    return LocalArtifactStore(path)


def _signature(root: Path) -> tuple[Any, ...]:
    """Cheap identity of a tree as it is now (paths, sizes, mtimes): republish only when it changed."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
    return tuple(out)


def publish_tree(store: ArtifactStore, root: str | Path) -> str:
    """Publish ``root`` to ``store`` (each file streamed once, by sha256); returns the tree hash.
    Remembered per process while the tree's files keep their sizes and mtimes."""
    root = Path(root).resolve()
    key = (store.location("blobs"), str(root), _signature(root))
    with _lock:
        if key in _published:
            return _published[key]
    sha = store.put_tree(root)
    with _lock:
        _published[key] = sha
    return sha


def materialise(store: ArtifactStore, tree_sha: str, cache: InputCache) -> Path:
    """On a node: the local, read-only copy of a published tree (fetched at most once per node)."""
    try:
        files = store.manifest(tree_sha)["files"]
    except BackendError as exc:
        raise CacheError(f"input tree {tree_sha[:12]} cannot be read from the store: {exc}") from None

    def fetch(rel: str, entry: dict[str, Any], dest: Path) -> None:
        try:
            store.get_file(entry["sha256"], dest)
        except BackendError as exc:
            raise CacheError(f"input file {rel}: {exc}") from None
    return cache.materialise(tree_sha, files, fetch)
