"""The workspace database's tables. Portable SQL, so a PostgreSQL store can follow."""

from __future__ import annotations

TABLES = [
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
    """CREATE TABLE IF NOT EXISTS web_tokens (
        token_sha256 TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        competition_id TEXT,
        team TEXT,
        label TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ix_web_tokens_team ON web_tokens(competition_id, team)",
]

# Columns added after a table was first released: (table, column, definition). Applied when missing.
MIGRATIONS = [
    ("submissions", "attempt_base", "INTEGER NOT NULL DEFAULT 0"),
    ("competitions", "derived_json", "TEXT NOT NULL DEFAULT '{}'"),  # what plugins derived, beside the spec
]
