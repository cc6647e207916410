"""The workspace's SQLite database (WAL) and content-addressed blob directory.

SQLite's WAL mode needs a local disk: a fleet shares inputs and outputs (a registry, an object store),
never this database. Only the ``referee.platform.store`` package runs SQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from referee.platform.store.schema import DATA_MIGRATIONS, INDEXES, MIGRATIONS, TABLES


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


class Database:
    """A workspace: ``referee.db`` (SQLite, WAL) plus ``blobs/`` and ``work/`` directories.

    One connection per thread (and per process); ``tx()`` is a write transaction that nested calls join.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        (self.root / "work").mkdir(exist_ok=True)
        self.db_path = self.root / "referee.db"
        self._local = threading.local()
        with self.tx() as c:
            for stmt in TABLES:
                c.execute(stmt)
            for table, column, definition in MIGRATIONS:
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            for stmt in INDEXES:
                c.execute(stmt)
            done = int(c.execute("PRAGMA user_version").fetchone()[0])
            for version, statements in enumerate(DATA_MIGRATIONS[done:], start=done + 1):
                for stmt in statements:
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {version}")

    # -- connection -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            self._local.pid = os.getpid()
            self._local.depth = 0
        return conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE); nested calls join the outer one."""
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    def _query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def _execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
        with self.tx() as c:
            return c.execute(sql, params).rowcount

    # -- events ------------------------------------------------------------------------------------
    def event(self, kind: str, message: str = "", *, competition_id: str | None = None,
              submission_id: int | None = None, job_id: int | None = None, **data: Any) -> None:
        with self.tx() as c:
            self._event(c, kind, message, competition_id=competition_id, submission_id=submission_id,
                        job_id=job_id, **data)

    def _event(self, c: Any, kind: str, message: str = "", *, competition_id: str | None = None,
               submission_id: int | None = None, job_id: int | None = None, **data: Any) -> None:
        c.execute("INSERT INTO events(at, competition_id, submission_id, job_id, kind, message, data_json) "
                  "VALUES (?,?,?,?,?,?,?)", (utcnow(), competition_id, submission_id, job_id, kind, message,
                                             json.dumps(data, default=str)))

    def events(self, *, kind: str | None = None, competition_id: str | None = None,
               submission_id: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM events WHERE 1=1", []
        for col, v in (("kind", kind), ("competition_id", competition_id), ("submission_id", submission_id)):
            if v is not None:
                sql += f" AND {col}=?"
                args.append(v)
        return [{**dict(r), "data": json.loads(r["data_json"] or "{}")}
                for r in self._query(sql + " ORDER BY id", tuple(args))]

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- blobs -------------------------------------------------------------------------------------
    def blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    def put_blob_file(self, src: Path) -> tuple[str, int]:
        """Copy a file into the blob store; returns (sha256, size). Atomic: temp file then rename."""
        h = hashlib.sha256()
        tmp_dir = self.root / "blobs" / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    out.write(block)
                    size += len(block)
            sha = h.hexdigest()
            dest = self.blob_path(sha)
            dest.parent.mkdir(exist_ok=True)
            if dest.exists():
                os.unlink(tmp)
            else:
                os.replace(tmp, dest)
            return sha, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def put_blob_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        dest = self.blob_path(sha)
        if not dest.exists():
            dest.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        return sha

    def temp_dir(self) -> Path:
        """A scratch directory on the blob store's file system (renames into it are atomic)."""
        p = self.root / "blobs" / "tmp"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def work_dir(self, *parts: str | int) -> Path:
        p = self.root.joinpath("work", *map(str, parts))
        p.mkdir(parents=True, exist_ok=True)
        return p
