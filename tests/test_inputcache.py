"""A node's input cache: one fetch per tree however many jobs arrive at once, least-recently-used
eviction that spares trees in use, no half trees, and a re-check that catches a changed cache."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from referee.platform.runtime.artifacts import LocalArtifactStore
from referee.platform.runtime.inputcache import CacheError, InputCache, fetch_count, file_digest
from referee.platform.runtime.inputs import materialise, publish_tree

pytestmark = pytest.mark.fleet


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def entries(root: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(root).as_posix(): {"sha256": file_digest(p), "size": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file()}


def copier(src: Path, calls: list[str], delay: float = 0.0):
    def fetch(rel: str, entry: dict[str, Any], dest: Path) -> None:
        calls.append(rel)
        time.sleep(delay)
        dest.write_bytes((src / rel).read_bytes())
    return fetch


def sha(n: int) -> str:
    return f"{n:064x}"


def test_jobs_arriving_together_fetch_a_tree_once_and_see_it_whole(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": b"alpha", "d/b.bin": os.urandom(50_000)})
    cache, calls, seen = InputCache(tmp_path / "cache"), [], []

    def job() -> None:
        d = cache.materialise(sha(1), entries(src), copier(src, calls, delay=0.2))
        with cache.use(sha(1)):
            seen.append({p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()})
    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(calls) == ["a.txt", "d/b.bin"]  # four jobs, each file fetched once
    assert fetch_count(tmp_path / "cache") == 1 == fetch_count(tmp_path / "cache", sha(1))
    want = {"a.txt": b"alpha", "d/b.bin": (src / "d" / "b.bin").read_bytes()}
    assert seen == [want] * 4
    d = cache.tree_dir(sha(1))
    assert not os.access(d / "a.txt", os.W_OK) or os.geteuid() == 0  # read-only (root may write anyway)
    assert oct((d / "a.txt").stat().st_mode & 0o777) == "0o444" and oct(d.stat().st_mode & 0o777) == "0o555"


def test_least_recently_used_trees_go_first_but_never_one_in_use(tmp_path):
    cache = InputCache(tmp_path / "cache", max_bytes=2500)
    srcs = [tree(tmp_path / f"s{i}", {"x.bin": bytes([i]) * 1000}) for i in range(4)]
    for i in (0, 1):
        cache.materialise(sha(i), entries(srcs[i]), copier(srcs[i], []))
        time.sleep(0.02)  # distinct last-use times
    cache.materialise(sha(0), entries(srcs[0]), copier(srcs[0], []))  # 0 used again: 1 is now the oldest
    time.sleep(0.02)
    cache.materialise(sha(2), entries(srcs[2]), copier(srcs[2], []))  # 3000 bytes > 2500: one must go
    present = {i for i in range(4) if cache.tree_dir(sha(i)).is_dir()}
    assert present == {0, 2}
    with cache.use(sha(0)):  # 0 is the oldest now, but a job holds it: 2 goes instead
        time.sleep(0.02)
        cache.materialise(sha(3), entries(srcs[3]), copier(srcs[3], []))
        assert {i for i in range(4) if cache.tree_dir(sha(i)).is_dir()} == {0, 3}
    calls: list[str] = []
    cache.materialise(sha(2), entries(srcs[2]), copier(srcs[2], calls))  # evicted trees are fetched again
    assert calls == ["x.bin"] and fetch_count(tmp_path / "cache", sha(2)) == 2


def test_a_file_that_arrives_wrong_leaves_no_tree(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": b"alpha", "b.txt": b"bravo"})
    cache = InputCache(tmp_path / "cache")

    def short(rel: str, entry: dict[str, Any], dest: Path) -> None:
        dest.write_bytes((src / rel).read_bytes()[:2])
    with pytest.raises(CacheError, match="arrived with 2 bytes"):
        cache.materialise(sha(5), entries(src), short)
    assert not cache.tree_dir(sha(5)).exists() and fetch_count(tmp_path / "cache") == 0
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # the partial download is gone
    with pytest.raises(CacheError, match="unsafe path"):
        cache.materialise(sha(6), {"../escape": {"sha256": "0" * 64, "size": 1}}, short)
    with pytest.raises(CacheError, match="not a tree hash"):
        cache.materialise("../x", {}, short)


def test_verify_fetches_a_changed_tree_again(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": b"alpha"})
    cache, calls = InputCache(tmp_path / "cache"), []
    d = cache.materialise(sha(7), entries(src), copier(src, calls), verify=True)
    cache.materialise(sha(7), entries(src), copier(src, calls), verify=True)
    assert calls == ["a.txt"]  # intact: reused
    os.chmod(d, 0o755)
    os.chmod(d / "a.txt", 0o644)
    (d / "a.txt").write_bytes(b"ALPHA")  # an earlier job on the instance changed the cache
    d = cache.materialise(sha(7), entries(src), copier(src, calls), verify=True)
    assert calls == ["a.txt", "a.txt"] and (d / "a.txt").read_bytes() == b"alpha"


def test_publish_once_then_materialise_from_the_store(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": b"alpha", "d/b.txt": b"bravo"})
    store = LocalArtifactStore(tmp_path / "store")
    tree_sha = publish_tree(store, src)
    assert publish_tree(store, src) == tree_sha  # unchanged: not published again
    d = materialise(store, tree_sha, InputCache(tmp_path / "node"))
    assert (d / "d" / "b.txt").read_bytes() == b"bravo" and (d / "a.txt").read_bytes() == b"alpha"
    with pytest.raises(CacheError, match="cannot be read from the store"):
        materialise(store, "f" * 64, InputCache(tmp_path / "node"))
