"""Content-addressed snapshots of a competition's data inside the workspace.

Loading a competition copies its reference file and input directory under ``data/<sha256>/``
(read-only), and the stored spec points there: editing the source files afterwards changes
nothing until the host loads the competition again. Same content, same directory: a reload of
unchanged data copies nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from referee.platform.core.hashing import file_sha256
from referee.platform.store.database import Database

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same files give the same archive


def tree_files(src: Path) -> list[tuple[str, Path]]:
    """Regular files under ``src`` as (relative posix path, path), sorted; links are refused."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                raise ValueError(f"{path} is a link or not a regular file; data directories hold plain files")
            out.append((path.relative_to(src).as_posix(), path))
    return sorted(out)


def tree_sha256(files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for rel, path in files:
        h.update(rel.encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return h.hexdigest()


def _read_only(root: Path) -> None:
    """Files read-only (directories stay writable, so a workspace can still be deleted)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


class SnapshotMixin(Database):
    """Data snapshots and archives in the workspace."""

    def _snapshot_dir(self, sha: str) -> Path:
        return self.root / "data" / sha

    def _publish(self, staged: Path, dest: Path) -> None:
        """Move a staged snapshot into place (another loader may have won the race: then keep theirs)."""
        _read_only(staged)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, dest)
        except OSError:
            if not dest.exists():
                raise
            shutil.rmtree(staged)

    def snapshot_file(self, src: Path) -> Path:
        """A read-only copy of ``src`` at ``data/<sha256>/<name>``; returns its path."""
        sha = file_sha256(src)
        dest_dir = self._snapshot_dir(sha)
        if not (dest_dir / src.name).is_file():
            staged = Path(tempfile.mkdtemp(dir=self.temp_dir()))
            shutil.copyfile(src, staged / src.name)
            self._publish(staged, dest_dir)
        return dest_dir / src.name

    def snapshot_tree(self, src: Path) -> Path:
        """A read-only copy of directory ``src`` at ``data/<tree sha256>/<name>/``; returns its path."""
        files = tree_files(src)
        sha = tree_sha256(files)
        dest_dir = self._snapshot_dir(sha)
        if not (dest_dir / src.name).is_dir():
            staged = Path(tempfile.mkdtemp(dir=self.temp_dir()))
            for rel, path in files:
                target = staged / src.name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            (staged / src.name).mkdir(exist_ok=True)
            self._publish(staged, dest_dir)
        return dest_dir / src.name

    def archive_tree(self, src: Path, top: str) -> tuple[str, int]:
        """A zip of directory ``src`` (files under ``top/``) in the blob store: (sha256, size).
        Fixed times and order, so the same files give the same archive and the same hash."""
        fd, tmp = tempfile.mkstemp(dir=self.temp_dir(), suffix=".zip")
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for rel, path in tree_files(src):
                    info = zipfile.ZipInfo(f"{top}/{rel}", date_time=_ZIP_TIME)
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(path, "rb") as f, zf.open(info, "w") as out:
                        shutil.copyfileobj(f, out, 1 << 20)
            return self.put_blob_file(Path(tmp))
        finally:
            os.unlink(tmp)
