"""A node's cache of input trees, keyed by tree hash: fetched once, shared by every job on the node.

Standard library only: the same code runs on a Ray node (inside referee) and, shipped as a script, in
an AWS Batch job's stager (any image with python3), where the cache is an instance volume.

Layout under the cache root::

    trees/<sha>/...        a materialised tree (files 0444, directories 0555)
    trees/<sha>.ok         written last: {"bytes": N}; its mtime is the tree's last use (LRU)
    locks/<sha>.lock       exclusive while one job fetches (a second job waits, then reuses)
    locks/<sha>.use        shared while a job uses the tree (eviction skips trees in use)
    fetches.log            one line per fetch: what the tests and benchmarks count

Files arrive streaming into a temporary directory, each checked against its sha256, and the tree
is renamed into place only when complete, so a job never sees half a tree. When the cache grows past
``max_bytes``, the least recently used trees that no job is using are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

CHUNK = 1 << 20


class CacheError(Exception):
    """The cache could not materialise a tree (a platform failure: never the submission's)."""


def safe_rel(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise CacheError(f"unsafe path {rel!r} in an input manifest")
    return p


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def _lock(path: Path, mode: int) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")
    fcntl.flock(fh, mode)
    return fh


def _make_tree_read_only(root: Path) -> None:
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o444)
        os.chmod(dirpath, 0o555)


def _writable(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)


class InputCache:
    """Trees by hash under ``root``, at most ``max_bytes`` of them (least recently used go first)."""

    def __init__(self, root: str | Path, max_bytes: int = 100 * 2**30):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    def tree_dir(self, sha: str) -> Path:
        return self.root / "trees" / sha

    def _ok(self, sha: str) -> Path:
        return self.root / "trees" / f"{sha}.ok"

    def materialise(self, sha: str, files: dict[str, dict[str, Any]],
                    fetch: Callable[[str, dict[str, Any], Path], None], *, verify: bool = False) -> Path:
        """The local directory of tree ``sha``: fetched (``fetch(rel, entry, dest)`` per file) unless it is
        already here. ``verify`` re-checks every cached file's size and sha256 before reuse (a job that
        could write the cache may have changed it) and fetches the tree again on any difference."""
        if len(sha) < 16 or not all(c in "0123456789abcdef" for c in sha):
            raise CacheError(f"{sha!r} is not a tree hash")
        dest, ok = self.tree_dir(sha), self._ok(sha)
        with contextlib.closing(_lock(self.root / "locks" / f"{sha}.lock", fcntl.LOCK_EX)):
            if ok.exists() and dest.is_dir() and verify and not self._intact(dest, files):
                self._drop(sha)
            if not (ok.exists() and dest.is_dir()):
                self._fetch(sha, files, fetch)
            os.utime(ok)
        self.evict(keep=sha)
        return dest

    @contextlib.contextmanager
    def use(self, sha: str) -> Iterator[None]:
        """Hold tree ``sha`` in use (eviction skips it) for the duration of a job."""
        fh = _lock(self.root / "locks" / f"{sha}.use", fcntl.LOCK_SH)
        try:
            yield
        finally:
            fh.close()

    def _intact(self, dest: Path, files: dict[str, dict[str, Any]]) -> bool:
        seen = 0
        for dirpath, _, names in os.walk(dest):
            seen += len(names)
        if seen != len(files):
            return False
        for rel, entry in files.items():
            path = dest / safe_rel(rel)
            try:
                if path.is_symlink() or path.stat().st_size != int(entry["size"]) or \
                        file_digest(path) != entry["sha256"]:
                    return False
            except OSError:
                return False
        return True

    def _fetch(self, sha: str, files: dict[str, dict[str, Any]],
               fetch: Callable[[str, dict[str, Any], Path], None]) -> None:
        tmp = self.root / "tmp" / f"{sha}.{os.getpid()}.{time.monotonic_ns()}"
        tmp.mkdir(parents=True)
        (self.root / "trees").mkdir(exist_ok=True)
        total = 0
        try:
            for rel, entry in sorted(files.items()):
                target = tmp / safe_rel(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                fetch(rel, entry, target)
                if target.stat().st_size != int(entry["size"]):
                    raise CacheError(f"input file {rel} arrived with {target.stat().st_size} bytes, expected "
                                     f"{entry['size']}")
                total += int(entry["size"])
            _make_tree_read_only(tmp)
            self._drop(sha)
            os.replace(tmp, self.tree_dir(sha))
        except BaseException:
            _writable(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._ok(sha).write_text(json.dumps({"bytes": total}))
        with open(self.root / "fetches.log", "a") as log:
            log.write(f"{time.time():.3f} {sha} {total} {os.getpid()}\n")

    def _drop(self, sha: str) -> None:
        self._ok(sha).unlink(missing_ok=True)
        dest = self.tree_dir(sha)
        if dest.exists():
            _writable(dest)
            shutil.rmtree(dest, ignore_errors=True)

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete least recently used trees until the cache fits ``max_bytes``; returns what went."""
        trees = []
        for ok in (self.root / "trees").glob("*.ok"):
            try:
                trees.append((ok.stat().st_mtime, ok.name[:-3], int(json.loads(ok.read_text())["bytes"])))
            except (OSError, ValueError, KeyError):
                continue
        total = sum(b for _, _, b in trees)
        gone: list[str] = []
        for _, sha, size in sorted(trees):
            if total <= self.max_bytes:
                break
            if sha == keep:
                continue
            with contextlib.closing(_lock(self.root / "locks" / f"{sha}.lock", fcntl.LOCK_EX)):
                use = _lock_nowait(self.root / "locks" / f"{sha}.use")
                if use is None:
                    continue  # a job is using it
                with contextlib.closing(use):
                    self._drop(sha)
            total -= size
            gone.append(sha)
        return gone


def _lock_nowait(path: Path) -> Any:
    fh = open(path, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fh
    except OSError:
        fh.close()
        return None


def fetch_count(root: str | Path, sha: str | None = None) -> int:
    """How many trees (or fetches of ``sha``) this cache has fetched: for tests and benchmarks."""
    try:
        lines = (Path(root) / "fetches.log").read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for ln in lines if sha is None or ln.split()[1] == sha)


def url_fetcher(rel: str, entry: dict[str, Any], dest: Path) -> None:
    """Fetch one file from its presigned URL (``entry['url']``), streaming, checking its sha256."""
    import urllib.request
    h = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=600) as r, open(dest, "wb") as f:
        while True:
            chunk = r.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != entry["sha256"]:
        raise CacheError(f"input file {rel} arrived corrupt (sha256 {h.hexdigest()})")
