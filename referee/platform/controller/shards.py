"""Sharded evaluation: one submission's inputs split into N shards by item id, N jobs, one prediction file.

* **Plan**: the reference's item ids, in reference order, cut into N contiguous runs of near-equal size
  (never more shards than items).
* **Inputs**: each shard gets a directory of its own holding every top-level entry of ``data.input``
  named after one of its items (the id itself, or the id and an extension: ``clip_0001.mp4``,
  ``clip_0001/``), every entry named after no item (shared files such as a label map go to each shard),
  and ``referee-shard.json`` (``{"shard", "shards", "ids"}``). A job sees only its shard's items. Built
  once per input snapshot and N, under ``WORKSPACE/shards/``, with hard links where the file system
  allows.
* **Merge**: the shards' prediction files concatenated in shard order (one header for csv/tsv), then
  validated and scored as one file, exactly like an unsharded submission's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from referee.platform.core.errors import RefereeError, SubmissionRejected
from referee.platform.core.spec import Competition
from referee.platform.store import Store

SHARD_FILE = "referee-shard.json"


def plan(ids: list[str], shards: int) -> list[list[str]]:
    """``ids`` cut into ``min(shards, len(ids))`` contiguous runs whose sizes differ by at most one."""
    n = max(1, min(shards, len(ids)))
    base, extra = divmod(len(ids), n)
    out, start = [], 0
    for k in range(n):
        size = base + (1 if k < extra else 0)
        out.append(ids[start:start + size])
        start += size
    return out


def item_of(name: str, index: dict[str, int]) -> str | None:
    """The item a top-level input entry belongs to: its whole name, or its name with one or more trailing
    extensions removed (``a.b.mp4`` tries ``a.b.mp4``, ``a.b``, ``a``); None for a shared entry."""
    candidate = name
    while True:
        if candidate in index:
            return candidate
        if "." not in candidate:
            return None
        candidate = candidate.rsplit(".", 1)[0]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(src, dst)


def _place(src: Path, dest: Path) -> None:
    if src.is_symlink():
        raise RefereeError(f"the competition's input {src} is a symlink; sharding copies only plain files and "
                           "directories (replace the link with what it points to and load the competition again)")
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dest))


def shard_inputs(comp: Competition, store: Store, ids: list[str], shards: int) -> list[Path | None]:
    """Each shard's input directory (see the module docstring); None for every shard when the competition
    has no inputs. Reused while the input snapshot, the ids and N are unchanged."""
    groups = plan(ids, shards)
    source = comp.input_path
    if source is None:
        return [None] * len(groups)
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir())
    key = hashlib.sha256(json.dumps([str(source), listing, groups]).encode()).hexdigest()[:24]
    root = store.work_dir("shards", f"{comp.id}-{key}")
    if (root / "complete").exists():
        return [root / str(k) for k in range(len(groups))]
    index = {i: k for k, group in enumerate(groups) for i in group}
    tmp = store.work_dir("shards", f".{comp.id}-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for k, group in enumerate(groups):
        (tmp / str(k)).mkdir(parents=True)
        (tmp / str(k) / SHARD_FILE).write_text(json.dumps({"shard": k, "shards": len(groups), "ids": group}))
    for entry in sorted(source.iterdir()):
        owner = item_of(entry.name, index)
        targets = range(len(groups)) if owner is None else [index[owner]]
        for k in targets:
            _place(entry, tmp / str(k) / entry.name)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    (root / "complete").touch()
    return [root / str(k) for k in range(len(groups))]


def merge(parts: list[Path], dest: Path, fmt: str) -> Path:
    """Concatenate the shards' prediction files into ``dest`` in shard order; csv/tsv keep the first header
    and every shard must use the same one. Raises SubmissionRejected naming the shard that differs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    header: bytes | None = None
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        for k, part in enumerate(parts):
            data = part.read_bytes()
            if not data:
                continue
            if fmt in ("csv", "tsv"):
                first, _, body = data.partition(b"\n")
                first = first.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
                if header is None:
                    header = first
                    out.write(first + b"\n")
                elif first != header:
                    raise SubmissionRejected(
                        f"shard {k + 1} of {len(parts)} wrote the header {first[:200]!r}, shard 1 wrote "
                        f"{header[:200]!r}; every shard must write the same columns", source=dest.name,
                        code="bad_header")
                data = body
            if data and not data.endswith(b"\n"):
                data += b"\n"
            out.write(data)
    os.replace(tmp, dest)
    return dest


@dataclass
class ShardRun:
    """A sharded submission the controller holds: which shards are done, how often each was tried, and
    which wait for (re-)dispatch."""

    sid: int
    team: str
    shards: int
    attempt: int  # the submission's latest job-row attempt (every shard try is a job row of its own)
    done: dict[int, tuple[Path, str]] = field(default_factory=dict)  # shard -> (prediction file, log tail)
    tries: dict[int, int] = field(default_factory=dict)  # shard -> tries in this run
    attempts: list[int] = field(default_factory=list)  # every job-row attempt of this run
    queued: list[int] = field(default_factory=list)  # shards waiting to be dispatched (again)

    def log_tail(self, cap: int) -> str:
        """The shards' log tails, each under its shard's name, cut to the last ``cap`` bytes."""
        text = "".join(f"== shard {k + 1}/{self.shards} ==\n{tail}\n" for k, (_, tail) in sorted(self.done.items()))
        return text.encode()[-cap:].decode("utf-8", "replace")
