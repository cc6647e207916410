"""SQLite store (WAL) for competitions, submissions, jobs, scores and events, plus a blob directory.

The schema sticks to portable SQL so a PostgreSQL URL can follow. Blobs (submission files, per-item
statistics) are content-addressed by sha256 under ``<workspace>/blobs``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from referee.platform.core.errors import NotFound

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS competitions (
        id TEXT PRIMARY KEY,
        spec_json TEXT NOT NULL,
        spec_sha256 TEXT NOT NULL,
        source_path TEXT,
        loaded_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS submissions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        competition_id TEXT NOT NULL REFERENCES competitions(id),
        team TEXT NOT NULL,
        phase TEXT NOT NULL,
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        filename TEXT,
        size INTEGER,
        status TEXT NOT NULL,
        failure_reason TEXT,
        failure_message TEXT,
        log_tail TEXT,
        counts_toward_quota INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        attempt_base INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        metadata_json TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS ix_sub_comp_status ON submissions(competition_id, status)",
    "CREATE INDEX IF NOT EXISTS ix_sub_team ON submissions(competition_id, team, created_at)",
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        submission_id INTEGER NOT NULL REFERENCES submissions(id),
        attempt INTEGER NOT NULL,
        backend TEXT NOT NULL,
        handle TEXT,
        state TEXT NOT NULL,
        failure_reason TEXT,
        message TEXT,
        exit_code INTEGER,
        node TEXT,
        instance_type TEXT,
        gpus INTEGER NOT NULL DEFAULT 0,
        cpu REAL,
        memory INTEGER,
        spec_json TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        UNIQUE(submission_id, attempt)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_jobs_state ON jobs(state)",
    """CREATE TABLE IF NOT EXISTS scores (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        submission_id INTEGER NOT NULL REFERENCES submissions(id),
        metric TEXT NOT NULL,
        split TEXT NOT NULL,
        value REAL,
        ci_low REAL,
        ci_high REAL,
        n_items INTEGER,
        stats_sha256 TEXT,
        details_json TEXT NOT NULL DEFAULT '{}',
        provenance_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE(submission_id, metric, split)
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        competition_id TEXT,
        submission_id INTEGER,
        job_id INTEGER,
        kind TEXT NOT NULL,
        message TEXT,
        data_json TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS costs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        competition_id TEXT NOT NULL,
        submission_id INTEGER,
        job_id INTEGER,
        team TEXT,
        tracker TEXT NOT NULL,
        amount REAL NOT NULL,
        unit TEXT NOT NULL,
        details_json TEXT NOT NULL DEFAULT '{}',
        at TEXT NOT NULL,
        UNIQUE(job_id, tracker, unit)
    )""",
]

# Columns added after a table was first released: (table, column, definition). Applied when missing.
MIGRATIONS = [
    ("submissions", "attempt_base", "INTEGER NOT NULL DEFAULT 0"),
]

FINAL_STATES = ("scored", "failed", "cancelled")


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class SubmissionRow:
    id: int
    competition_id: str
    team: str
    phase: str
    kind: str
    sha256: str
    filename: str | None
    size: int | None
    status: str
    failure_reason: str | None
    failure_message: str | None
    log_tail: str | None
    counts_toward_quota: int
    attempts: int
    attempt_base: int
    claimed_by: str | None
    created_at: str
    updated_at: str
    metadata_json: str

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(self.metadata_json or "{}")


class Store:
    """A workspace: ``referee.db`` (SQLite, WAL) plus ``blobs/`` and ``work/`` directories."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        (self.root / "work").mkdir(exist_ok=True)
        self.db_path = self.root / "referee.db"
        self._local = threading.local()
        with self.tx() as c:
            for stmt in SCHEMA:
                c.execute(stmt)
            for table, column, definition in MIGRATIONS:
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    # -- connection -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
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

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        with self.tx() as c:
            return c.execute(sql, params)

    def close(self) -> None:
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

    def work_dir(self, *parts: str | int) -> Path:
        p = self.root.joinpath("work", *map(str, parts))
        p.mkdir(parents=True, exist_ok=True)
        return p

    # -- competitions ------------------------------------------------------------------------------
    def put_competition(self, comp: Any) -> None:
        spec_json = comp.to_json()
        sha = hashlib.sha256(spec_json.encode()).hexdigest()
        with self.tx() as c:
            c.execute("""INSERT INTO competitions(id, spec_json, spec_sha256, source_path, loaded_at)
                         VALUES (?,?,?,?,?)
                         ON CONFLICT(id) DO UPDATE SET spec_json=excluded.spec_json,
                           spec_sha256=excluded.spec_sha256, source_path=excluded.source_path,
                           loaded_at=excluded.loaded_at""",
                      (comp.id, spec_json, sha, str(comp.source_path or ""), utcnow()))

    def get_competition(self, cid: str) -> Any:
        from referee.platform.core.spec import Competition
        rows = self.query("SELECT spec_json FROM competitions WHERE id=?", (cid,))
        if not rows:
            known = [r["id"] for r in self.query("SELECT id FROM competitions ORDER BY id")]
            raise NotFound(f"no competition {cid!r} in {self.root}; loaded: {known or 'none'} "
                           "(load one with `referee competition load FILE`)")
        return Competition.from_json(rows[0]["spec_json"])

    def list_competitions(self) -> list[sqlite3.Row]:
        return self.query("SELECT id, source_path, loaded_at FROM competitions ORDER BY id")

    # -- submissions -------------------------------------------------------------------------------
    def get_submission(self, sid: int) -> SubmissionRow:
        rows = self.query("SELECT * FROM submissions WHERE id=?", (sid,))
        if not rows:
            raise NotFound(f"no submission #{sid}")
        return SubmissionRow(**dict(rows[0]))

    def submissions(self, cid: str | None = None, *, status: str | tuple[str, ...] | None = None,
                    team: str | None = None) -> list[SubmissionRow]:
        sql, args = "SELECT * FROM submissions WHERE 1=1", []
        if cid is not None:
            sql += " AND competition_id=?"
            args.append(cid)
        if status is not None:
            states = (status,) if isinstance(status, str) else status
            sql += f" AND status IN ({','.join('?' * len(states))})"
            args += list(states)
        if team is not None:
            sql += " AND team=?"
            args.append(team)
        return [SubmissionRow(**dict(r)) for r in self.query(sql + " ORDER BY id", tuple(args))]

    def set_submission(self, sid: int, **fields: Any) -> None:
        fields["updated_at"] = utcnow()
        cols = ", ".join(f"{k}=?" for k in fields)
        self.execute(f"UPDATE submissions SET {cols} WHERE id=?", (*fields.values(), sid))

    def event(self, kind: str, message: str = "", *, competition_id: str | None = None,
              submission_id: int | None = None, job_id: int | None = None, **data: Any) -> None:
        self.execute("INSERT INTO events(at, competition_id, submission_id, job_id, kind, message, data_json) "
                     "VALUES (?,?,?,?,?,?,?)",
                     (utcnow(), competition_id, submission_id, job_id, kind, message,
                      json.dumps(data, default=str)))

    def scores(self, sid: int) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM scores WHERE submission_id=? ORDER BY split, id", (sid,))
