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
        metadata_json TEXT NOT NULL DEFAULT '{}',
        description TEXT,
        hidden_reason TEXT,
        hidden_at TEXT,
        hidden_by TEXT,
        baseline INTEGER NOT NULL DEFAULT 0
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
        revoked_at TEXT,
        user_id INTEGER,
        expires_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ix_web_tokens_team ON web_tokens(competition_id, team)",
    # -- accounts, teams, registrations, organisers (store/accounts.py) --
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE,
        email TEXT,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        disabled_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS teams (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        competition_id TEXT NOT NULL,
        name TEXT NOT NULL,
        invite_code TEXT,
        created_by INTEGER REFERENCES users(id),
        created_at TEXT NOT NULL,
        disqualified_reason TEXT,
        disqualified_at TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_teams_name ON teams(competition_id, name COLLATE NOCASE)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_teams_invite ON teams(invite_code)",
    """CREATE TABLE IF NOT EXISTS team_members (
        team_id INTEGER NOT NULL REFERENCES teams(id),
        competition_id TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        role TEXT NOT NULL,
        joined_at TEXT NOT NULL,
        PRIMARY KEY (team_id, user_id),
        UNIQUE (competition_id, user_id)
    )""",
    """CREATE TABLE IF NOT EXISTS registrations (
        competition_id TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        decided_at TEXT,
        decided_by TEXT,
        PRIMARY KEY (competition_id, user_id)
    )""",
    """CREATE TABLE IF NOT EXISTS organisers (
        competition_id TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        role TEXT NOT NULL,
        added_at TEXT NOT NULL,
        added_by TEXT,
        PRIMARY KEY (competition_id, user_id)
    )""",
    # pages, starting kit and data snapshots of a loaded competition (content-addressed blobs)
    """CREATE TABLE IF NOT EXISTS competition_files (
        competition_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        loaded_at TEXT NOT NULL,
        PRIMARY KEY (competition_id, kind, name)
    )""",
    # -- phases (store/phases.py): the host's leaderboard switches, final picks, accepted rules --
    """CREATE TABLE IF NOT EXISTS phase_visibility (
        competition_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        split TEXT NOT NULL,
        visibility TEXT NOT NULL,
        set_at TEXT NOT NULL,
        set_by TEXT,
        PRIMARY KEY (competition_id, phase, split)
    )""",
    """CREATE TABLE IF NOT EXISTS final_picks (
        submission_id INTEGER PRIMARY KEY REFERENCES submissions(id),
        competition_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        team TEXT NOT NULL,
        picked_at TEXT NOT NULL,
        picked_by TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ix_final_picks_team ON final_picks(competition_id, phase, team)",
    """CREATE TABLE IF NOT EXISTS rules_accepted (
        competition_id TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        rules_sha256 TEXT,
        accepted_at TEXT NOT NULL,
        PRIMARY KEY (competition_id, user_id)
    )""",
]

# Columns added after a table was first released: (table, column, definition). Applied when missing.
MIGRATIONS = [
    ("submissions", "attempt_base", "INTEGER NOT NULL DEFAULT 0"),
    ("competitions", "derived_json", "TEXT NOT NULL DEFAULT '{}'"),  # what plugins derived, beside the spec
    ("submissions", "description", "TEXT"),
    ("submissions", "hidden_reason", "TEXT"),
    ("submissions", "hidden_at", "TEXT"),
    ("submissions", "hidden_by", "TEXT"),
    ("submissions", "baseline", "INTEGER NOT NULL DEFAULT 0"),
    ("web_tokens", "user_id", "INTEGER"),
    ("web_tokens", "expires_at", "TEXT"),
    ("jobs", "shard", "INTEGER"),  # the job's shard of a sharded submission (NULL: not sharded)
    ("jobs", "waiting_reason", "TEXT"),  # the backend's reason while a job waited too long for a machine
    ("jobs", "stuck_at", "TEXT"),  # when it was found waiting longer than the competition's stuck_after
]

# Indexes over columns that MIGRATIONS may have added: created after them.
INDEXES = [
    "CREATE INDEX IF NOT EXISTS ix_web_tokens_user ON web_tokens(user_id)",
]

# Data migrations, applied once each in order; ``PRAGMA user_version`` records how many ran.
DATA_MIGRATIONS: list[list[str]] = [
    # 1: teams became records. Every team name a workspace already used (in submissions or team
    # tokens) becomes a team of its competition, so nothing that worked before stops working.
    ["""INSERT OR IGNORE INTO teams(competition_id, name, created_at)
        SELECT competition_id, team, MIN(created_at) FROM submissions WHERE baseline = 0
        GROUP BY competition_id, team""",
     """INSERT OR IGNORE INTO teams(competition_id, name, created_at)
        SELECT competition_id, team, MIN(created_at) FROM web_tokens
        WHERE role = 'team' AND competition_id IS NOT NULL AND team IS NOT NULL
        GROUP BY competition_id, team"""],
]
