"""The ``script`` kind: a directory with ``predict.py``, run as a plain process by the local backend.

For a host's own baselines on a laptop (trusted code: no sandbox). Untrusted code belongs in a
container submission. The program reads ``$REFEREE_INPUT`` and writes
``$REFEREE_OUTPUT/$REFEREE_OUTPUT_FILE``.
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from referee.platform.core.errors import SubmissionRejected

ENTRYPOINT = "predict.py"
MAX_SCRIPT_BYTES = 50 * 1024**2


def is_script_dir(source: Any) -> bool:
    p = Path(source)
    return p.is_dir() and (p / ENTRYPOINT).is_file() and not (p / "Dockerfile").exists()


def pack_directory(root: Path, limit: int = MAX_SCRIPT_BYTES) -> bytes:
    """A reproducible tar of ``root``: sorted names, zeroed times and owners, no symlinks out."""
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if "__pycache__" in rel:
                continue
            if path.is_symlink():
                raise SubmissionRejected(f"{rel} is a symlink; submit plain files", source=root.name)
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                total += info.size
                if total > limit:
                    raise SubmissionRejected(f"directory is over {limit:,} bytes", source=root.name)
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def ingest_script(source: Any, comp: Any, store: Any, *, filename: str | None = None) -> dict:
    root = Path(source)
    if not is_script_dir(root):
        raise SubmissionRejected(f"{root} must be a directory containing {ENTRYPOINT}", source=str(root))
    data = pack_directory(root)
    with tempfile.NamedTemporaryFile(suffix=".tar") as tmp:
        tmp.write(data)
        tmp.flush()
        sha, size = store.put_blob_file(Path(tmp.name))
    return {"sha256": sha, "size": size, "filename": filename or root.name, "metadata": {"entrypoint": ENTRYPOINT}}


def script_job(sub: Any, comp: Any, store: Any) -> dict:
    code = store.work_dir(comp.id, f"s{sub.id}", "code")
    with tarfile.open(store.blob_path(sub.sha256)) as tar:
        tar.extractall(code, filter="data")
    return {"command": [sys.executable, str(code / ENTRYPOINT)]}
