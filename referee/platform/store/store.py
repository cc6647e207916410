"""The Store: every read and write of the workspace database, as typed methods.

State changes that can race (a controller settling a submission, a host cancelling it, another
controller taking over a dead one's claim) are single guarded UPDATEs: they apply only while the row
is still in the state the caller saw, and report whether they did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from referee.platform.core.errors import (
    Conflict,
    LimitExceeded,
    NotAllowed,
    NotFound,
    RefereeError,
)
from referee.platform.core.jobs import (
    FINAL_STATUSES,
    JobRecord,
    JobState,
    JobStatus,
    SubmissionStatus,
)
from referee.platform.core.spec import Competition, Derived, LimitsSpec
from referee.platform.store.accounts import AccountsMixin
from referee.platform.store.database import Database, utcnow
from referee.platform.store.hosting import HostingMixin
from referee.platform.store.phases import PhasesMixin
from referee.platform.store.rows import (
    CompetitionRow,
    CostRow,
    JobRow,
    LeaderboardScore,
    NewScore,
    RunningJob,
    ScoreRow,
    SubmissionRow,
    TokenRow,
    parse_time,
)
from referee.platform.store.snapshots import SnapshotMixin

PENDING, RUNNING = SubmissionStatus.PENDING.value, SubmissionStatus.RUNNING.value
_FINAL = tuple(s.value for s in FINAL_STATUSES)
PLATFORM_ACCOUNT = "platform"  # cost rows of attempts lost to the platform: the host pays, the team does not
# a cost row charged to its team (not to the platform account)
_TEAM_CHARGED = f"COALESCE(json_extract(details_json, '$.account'), '') <> '{PLATFORM_ACCOUNT}'"
_CHUNK = 500  # ids per IN (...) list
# a submission that may stand on a leaderboard: not hidden, not a baseline, its team not disqualified
RANKED = ("s.hidden_reason IS NULL AND s.baseline = 0 AND NOT EXISTS (SELECT 1 FROM teams t WHERE "
          "t.competition_id = s.competition_id AND t.name = s.team COLLATE NOCASE "
          "AND t.disqualified_reason IS NOT NULL)")
# a team's submissions that count toward its limits (how many, and when the oldest was made) ...
_COUNTED = ("SELECT COUNT(*), MIN(created_at) FROM submissions WHERE competition_id=? AND team=? "
            "AND counts_toward_quota=1")
# ... and those waiting or running (a baseline is the host's, never a team's)
_ACTIVE = "SELECT COUNT(*) FROM submissions WHERE competition_id=? AND team=? AND baseline=0 AND status IN (?, ?)"


def _day_before(now: dt.datetime) -> str:
    """The start of the 24 hours before ``now``, as ``created_at`` is stored."""
    return (now - dt.timedelta(days=1)).isoformat(timespec="microseconds")


def _human_wait(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes < 120 else f"{minutes / 60:.1f} hours"


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for lo in range(0, len(ids), _CHUNK):
        yield ids[lo:lo + _CHUNK]


class Store(AccountsMixin, HostingMixin, PhasesMixin, SnapshotMixin, Database):
    """A workspace's persistence (see the module docstring); accounts and teams in ``accounts.py``,
    host tools (hiding, baselines, bulk re-runs, paged lists) in ``hosting.py``, leaderboard switches,
    final picks and accepted rules in ``phases.py``, data snapshots in ``snapshots.py``."""

    # -- competitions ------------------------------------------------------------------------------
    def put_competition(self, comp: Competition) -> None:
        """Keep the spec as written, and what plugins derived from it beside it."""
        spec_json = comp.to_json()
        sha = hashlib.sha256(spec_json.encode()).hexdigest()
        with self.tx() as c:
            c.execute("""INSERT INTO competitions(id, spec_json, spec_sha256, source_path, loaded_at, derived_json)
                         VALUES (?,?,?,?,?,?)
                         ON CONFLICT(id) DO UPDATE SET spec_json=excluded.spec_json,
                           spec_sha256=excluded.spec_sha256, source_path=excluded.source_path,
                           loaded_at=excluded.loaded_at, derived_json=excluded.derived_json""",
                      (comp.id, spec_json, sha, str(comp.source_path or ""), utcnow(),
                       comp.derived.model_dump_json()))

    def get_competition(self, cid: str) -> Competition:
        rows = self._query("SELECT spec_json, derived_json FROM competitions WHERE id=?", (cid,))
        if not rows:
            known = [r.id for r in self.list_competitions()]
            raise NotFound(f"no competition {cid!r} in {self.root}; loaded: {known or 'none'} "
                           "(load one with `referee competition load FILE`)")
        return Competition.from_json(rows[0]["spec_json"], Derived.model_validate_json(rows[0]["derived_json"]))

    def list_competitions(self) -> list[CompetitionRow]:
        return [CompetitionRow(r["id"], r["source_path"], r["loaded_at"])
                for r in self._query("SELECT id, source_path, loaded_at FROM competitions ORDER BY id")]

    def competitions_with_work(self) -> list[str]:
        """Competitions with pending or running submissions."""
        rows = self._query("SELECT DISTINCT s.competition_id AS cid FROM submissions s "
                           "JOIN competitions c ON c.id = s.competition_id "
                           "WHERE s.status IN (?, ?) ORDER BY s.competition_id", (PENDING, RUNNING))
        return [r["cid"] for r in rows]

    # -- submissions: reading ----------------------------------------------------------------------
    def get_submission(self, sid: int) -> SubmissionRow:
        rows = self._query("SELECT * FROM submissions WHERE id=?", (sid,))
        if not rows:
            raise NotFound(f"no submission #{sid}")
        return SubmissionRow(**dict(rows[0]))

    def submissions(self, cid: str | None = None, *, status: str | Sequence[str] | None = None,
                    team: str | None = None) -> list[SubmissionRow]:
        sql, args = "SELECT * FROM submissions WHERE 1=1", []
        if cid is not None:
            sql += " AND competition_id=?"
            args.append(cid)
        if status is not None:
            states = [status] if isinstance(status, str) else list(status)
            sql += f" AND status IN ({_marks(len(states))})"
            args += [str(s) for s in states]
        if team is not None:
            sql += " AND team=?"
            args.append(team)
        return [SubmissionRow(**dict(r)) for r in self._query(sql + " ORDER BY id", tuple(args))]

    def count_submissions(self, cid: str) -> tuple[int, int]:
        """(submissions, distinct teams) of a competition."""
        r = self._query("SELECT COUNT(*) AS n, COUNT(DISTINCT CASE WHEN baseline=0 THEN team END) AS teams "
                        "FROM submissions WHERE competition_id=?", (cid,))[0]
        return int(r["n"]), int(r["teams"])

    # -- submissions: intake -----------------------------------------------------------------------
    def check_limits(self, cid: str, limits: LimitsSpec, team: str, now: dt.datetime,
                     phase: str | None = None) -> None:
        """Raise ``LimitExceeded`` when ``team`` may not submit to ``cid`` (its ``phase``) now."""
        with self.tx() as c:
            self._check_limits(c, cid, limits, team, now, phase)

    def quota_used(self, cid: str, team: str, phase: str, now: dt.datetime) -> tuple[int, int, int, str | None]:
        """What counts toward ``team``'s limits in ``phase``: (submissions in total, in the last 24
        hours, waiting or running in any phase, when the oldest of the last 24 hours was made)."""
        with self.tx() as c:
            base, args = _COUNTED + " AND phase=?", (cid, team, phase)
            total = c.execute(base, args).fetchone()[0]
            day, oldest = c.execute(base + " AND created_at > ?", (*args, _day_before(now))).fetchone()
            running = c.execute(_ACTIVE, (cid, team, PENDING, RUNNING)).fetchone()[0]
        return int(total), int(day), int(running), oldest

    def _check_limits(self, c: Any, cid: str, lim: LimitsSpec, team: str, now: dt.datetime,
                      phase: str | None = None) -> None:
        # a phase has fresh quotas: total and per-day count the submissions of that phase only
        base = _COUNTED
        args: tuple[Any, ...] = (cid, team)
        if phase is not None:
            base += " AND phase=?"
            args += (phase,)
        where = f" in phase {phase!r}" if phase is not None else ""
        if lim.total is not None:
            n = c.execute(base, args).fetchone()[0]
            if n >= lim.total:
                raise LimitExceeded(f"team {team!r} has used all {lim.total} submissions for {cid!r}{where}")
        if lim.per_team_per_day is not None:
            n, oldest = c.execute(base + " AND created_at > ?", (*args, _day_before(now))).fetchone()
            if n >= lim.per_team_per_day:
                # the window frees a slot when its oldest counted submission turns 24 hours old
                wait = (dt.datetime.fromisoformat(oldest) + dt.timedelta(days=1) - now).total_seconds()
                raise LimitExceeded(f"team {team!r} reached the limit of {lim.per_team_per_day} submissions per "
                                    f"24 hours for {cid!r}{where}; try again in {_human_wait(wait)}",
                                    retry_after=max(1.0, wait))
        if lim.concurrent is not None:
            n = c.execute(_ACTIVE, (cid, team, PENDING, RUNNING)).fetchone()[0]
            if n >= lim.concurrent:
                raise LimitExceeded(f"team {team!r} already has {n} submission(s) waiting or running "
                                    f"(limit {lim.concurrent}); wait for them to finish")

    def add_submission(self, *, cid: str, limits: LimitsSpec, team: str, phase: str, kind: str, sha256: str,
                       filename: str | None, size: int | None, now: dt.datetime,
                       metadata: dict[str, Any], description: str | None = None, baseline: bool = False,
                       failure: tuple[str, str] | None = None) -> int:
        """Insert a pending submission, checking the limits in the same transaction; returns its id.

        The submission goes under the team's own spelling of its name; a team the competition does
        not have yet becomes one (the callers that take a team name from a person check it exists
        first); a disqualified team is refused. A ``baseline`` (a host's reference entry) belongs to
        no team and counts toward no limit. ``failure`` (reason, message) records a submission that
        failed at intake instead (a refused or failed build): final, charged, and inserted without a
        limit check (the work is done).
        """
        status = PENDING if failure is None else SubmissionStatus.FAILED.value
        reason, message = failure if failure is not None else (None, None)
        with self.tx() as c:
            if not baseline:
                row = c.execute("SELECT name, disqualified_reason FROM teams WHERE competition_id=? "
                                "AND name=? COLLATE NOCASE", (cid, team)).fetchone()
                if row is None:
                    c.execute("INSERT INTO teams(competition_id, name, created_at) VALUES (?,?,?)",
                              (cid, team, utcnow()))
                else:
                    team = row["name"]
                    if row["disqualified_reason"]:
                        raise NotAllowed(f"team {team!r} is disqualified from {cid!r}: {row['disqualified_reason']}")
                if failure is None:
                    self._check_limits(c, cid, limits, team, now, phase)
            cur = c.execute(
                """INSERT INTO submissions(competition_id, team, phase, kind, sha256, filename, size, status,
                       failure_reason, failure_message, counts_toward_quota, created_at, updated_at, metadata_json,
                       description, baseline)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (cid, team, phase, kind, sha256, filename, size, status, reason, message, 0 if baseline else 1,
                 now.isoformat(timespec="microseconds"), utcnow(), json.dumps(metadata), description,
                 1 if baseline else 0))
            return int(cur.lastrowid or 0)

    def seed_pending(self, cid: str, kind: str, teams: list[str], phase: str = "main") -> None:
        """Insert one pending submission per entry of ``teams`` (no content, no limit check) in one
        transaction: for benchmarks that need thousands of queued submissions of a bench-only kind."""
        now = utcnow()
        with self.tx() as c:
            c.executemany("INSERT INTO submissions(competition_id, team, phase, kind, sha256, status, created_at, "
                          "updated_at) VALUES (?, ?, ?, ?, '0', ?, ?, ?)",
                          [(cid, team, phase, kind, PENDING, now, now) for team in teams])

    def set_image_ref(self, sid: int, image_ref: str) -> None:
        """Record where a container submission's image lives in a registry (``repository@sha256:...``),
        next to its image id in the metadata."""
        with self.tx() as c:
            row = c.execute("SELECT metadata_json FROM submissions WHERE id=?", (sid,)).fetchone()
            if row is None:
                return
            meta = {**json.loads(row[0] or "{}"), "image_ref": image_ref}
            c.execute("UPDATE submissions SET metadata_json=? WHERE id=?", (json.dumps(meta), sid))

    # -- submissions: the controller's claims -------------------------------------------------------
    def pending_candidates(self, cid: str, *, exclude_teams: Sequence[str] = (),
                           limit: int = 256) -> list[tuple[int, str, str]]:
        """(id, team, created_at) of the oldest pending submissions, teams in ``exclude_teams`` left out."""
        held = f" AND team NOT IN ({_marks(len(exclude_teams))})" if exclude_teams else ""
        rows = self._query(f"SELECT id, team, created_at FROM submissions WHERE competition_id=? AND status=?{held} "
                           "ORDER BY id LIMIT ?", (cid, PENDING, *exclude_teams, limit))
        return [(int(r["id"]), r["team"], r["created_at"]) for r in rows]

    def has_pending(self, cid: str, *, exclude_teams: Sequence[str] = ()) -> bool:
        held = f" AND team NOT IN ({_marks(len(exclude_teams))})" if exclude_teams else ""
        return bool(self._query(f"SELECT 1 FROM submissions WHERE competition_id=? AND status=?{held} LIMIT 1",
                                (cid, PENDING, *exclude_teams)))

    def claim(self, sid: int, owner: str) -> SubmissionRow | None:
        """Move a pending submission to running under ``owner``; None when it is not pending any more."""
        with self.tx() as c:
            n = c.execute("UPDATE submissions SET status=?, claimed_by=?, updated_at=? WHERE id=? AND status=?",
                          (RUNNING, owner, utcnow(), sid, PENDING)).rowcount
            if not n:
                return None
            return SubmissionRow(**dict(c.execute("SELECT * FROM submissions WHERE id=?", (sid,)).fetchone()))

    def take_over(self, sid: int, owner: str, previous: str | None) -> bool:
        """Take a running submission's claim from ``previous`` (a dead controller); False if someone else did."""
        return bool(self._execute("UPDATE submissions SET claimed_by=?, updated_at=? WHERE id=? AND status=? "
                                  "AND claimed_by IS ?", (owner, utcnow(), sid, RUNNING, previous)))

    def release(self, sid: int, owner: str) -> bool:
        """Give a claimed submission back to the queue (pending, unclaimed)."""
        return bool(self._execute("UPDATE submissions SET status=?, claimed_by=NULL, updated_at=? "
                                  "WHERE id=? AND status=? AND claimed_by=?", (PENDING, utcnow(), sid, RUNNING, owner)))

    def let_go(self, sid: int, owner: str) -> bool:
        """Leave a running submission unclaimed, for the next controller to adopt at once (re-attaching
        to its jobs by handle) rather than after the lease."""
        return bool(self._execute("UPDATE submissions SET claimed_by=NULL, updated_at=? WHERE id=? AND status=? "
                                  "AND claimed_by=?", (utcnow(), sid, RUNNING, owner)))

    def renew_claims(self, owner: str) -> int:
        """The heartbeat: mark every claim of ``owner`` as alive now."""
        return self._execute("UPDATE submissions SET updated_at=? WHERE claimed_by=? AND status=?",
                             (utcnow(), owner, RUNNING))

    def claimed(self, cid: str, owner: str) -> list[SubmissionRow]:
        """Running submissions of ``cid`` claimed by ``owner``."""
        return [SubmissionRow(**dict(r)) for r in self._query(
            "SELECT * FROM submissions WHERE competition_id=? AND status=? AND claimed_by=? ORDER BY id",
            (cid, RUNNING, owner))]

    def settle(self, sid: int, *, owner: str, attempt: int | None, status: SubmissionStatus,
               failure_reason: str | None = None, failure_message: str | None = None,
               log_tail: str | None = None, counts_toward_quota: bool | None = None,
               scores: Sequence[NewScore] | None = None) -> bool:
        """Apply an outcome to a submission ``owner`` holds, for its current ``attempt`` only.

        One transaction: the new status (running → pending for a retry, or a final status), the failure,
        the log tail, and, for ``scored``, the scores replacing any earlier ones (a host re-run's). False
        when the submission was cancelled, re-run or taken over meanwhile: a stale outcome never lands.
        """
        now = utcnow()
        guard = "status=? AND claimed_by=?"
        args: list[Any] = [RUNNING, owner]
        if attempt is not None:
            guard += " AND attempts=?"
            args.append(attempt)
        sets = ["status=?", "claimed_by=NULL", "updated_at=?", "failure_reason=?", "failure_message=?",
                "log_tail=COALESCE(?, log_tail)"]
        values: list[Any] = [status.value, now, failure_reason, failure_message, log_tail]
        if counts_toward_quota is not None:
            sets.append("counts_toward_quota=?")
            values.append(1 if counts_toward_quota else 0)
        with self.tx() as c:
            n = c.execute(f"UPDATE submissions SET {', '.join(sets)} WHERE id=? AND {guard}",
                          (*values, sid, *args)).rowcount
            if not n:
                return False
            if status is SubmissionStatus.SCORED:
                c.execute("DELETE FROM scores WHERE submission_id=?", (sid,))
                c.executemany(
                    "INSERT INTO scores(submission_id, metric, split, value, ci_low, ci_high, n_items, stats_sha256, "
                    "details_json, provenance_json, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [(sid, s.metric, s.split, s.value, s.ci_low, s.ci_high, s.n_items, s.stats_sha256,
                      json.dumps(s.details, default=str), json.dumps(s.provenance, default=str), now)
                     for s in scores or ()])
        return True

    # -- submissions: host actions -----------------------------------------------------------------
    def request_cancel(self, sid: int, by: str = "host") -> tuple[SubmissionStatus, bool]:
        """Cancel a pending or running submission (never charged). Returns (status before, whether it was
        cancelled): a submission that already reached a final status keeps it."""
        with self.tx() as c:
            row = c.execute("SELECT status, competition_id FROM submissions WHERE id=?", (sid,)).fetchone()
            if row is None:
                raise NotFound(f"no submission #{sid}")
            before = SubmissionStatus(row["status"])
            n = c.execute("UPDATE submissions SET status=?, failure_reason='cancelled', failure_message=?, "
                          "counts_toward_quota=0, updated_at=? WHERE id=? AND status IN (?, ?)",
                          (SubmissionStatus.CANCELLED.value, f"cancelled by the {by}", utcnow(), sid,
                           PENDING, RUNNING)).rowcount
            if n:
                self._event(c, "cancelled", f"cancelled by {by}", competition_id=row["competition_id"],
                            submission_id=sid, previous_status=before.value)
        return before, bool(n)

    def request_rerun(self, sid: int, by: str = "host") -> None:
        """Put a finished submission back in the queue. Its old scores stay until the new ones replace
        them (in the transaction that marks it scored); a re-run counts toward the quota like a run."""
        with self.tx() as c:
            row = c.execute("SELECT status, competition_id FROM submissions WHERE id=?", (sid,)).fetchone()
            if row is None:
                raise NotFound(f"no submission #{sid}")
            if row["status"] not in _FINAL:
                raise Conflict(f"submission #{sid} is {row['status']}; only a scored, failed or cancelled "
                                   "submission can be re-run (cancel it first)")
            c.execute("UPDATE submissions SET status=?, claimed_by=NULL, failure_reason=NULL, failure_message=NULL, "
                      "log_tail=NULL, attempt_base=attempts, updated_at=?, "
                      "counts_toward_quota=CASE WHEN baseline=1 THEN 0 ELSE 1 END WHERE id=? AND status=?",
                      (PENDING, utcnow(), sid, row["status"]))
            self._event(c, "rerun", f"re-run requested by {by}", competition_id=row["competition_id"],
                        submission_id=sid, previous_status=row["status"])

    def set_log_tail(self, sid: int, log_tail: str, *, attempt: int | None = None) -> bool:
        """Replace a submission's log tail; with ``attempt``, only while that is still its latest attempt
        (a log read late, after a throttled first try, never overwrites a re-run's)."""
        guard, args = ("", ()) if attempt is None else (" AND attempts=?", (attempt,))
        return bool(self._execute(f"UPDATE submissions SET log_tail=?, updated_at=? WHERE id=?{guard}",
                                  (log_tail, utcnow(), sid, *args)))

    # -- jobs --------------------------------------------------------------------------------------
    def add_job(self, sid: int, attempt: int, backend: str, spec: dict[str, Any], *, gpus: int, cpu: float,
                memory: int, instance_type: str | None, shard: int | None = None) -> int:
        """Record a new attempt (queued, not yet dispatched) and count it on the submission. Each try of
        each shard of a sharded submission is an attempt of its own."""
        with self.tx() as c:
            cur = c.execute("INSERT INTO jobs(submission_id, attempt, backend, state, gpus, cpu, memory, "
                            "instance_type, spec_json, created_at, shard) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (sid, attempt, backend, JobState.QUEUED.value, gpus, cpu, memory, instance_type,
                             json.dumps(spec, default=str), utcnow(), shard))
            c.execute("UPDATE submissions SET attempts=? WHERE id=?", (attempt, sid))
            return int(cur.lastrowid or 0)

    def discard_job(self, job_row: int) -> bool:
        """Forget an attempt the backend never took (its control plane did not answer): the row goes and
        the submission's attempt count steps back, so the outage costs the submission nothing."""
        with self.tx() as c:
            row = c.execute("SELECT submission_id, attempt FROM jobs WHERE id=? AND handle IS NULL", (job_row,)
                            ).fetchone()
            if row is None:
                return False
            c.execute("DELETE FROM jobs WHERE id=?", (job_row,))
            c.execute("UPDATE submissions SET attempts=? WHERE id=? AND attempts=?",
                      (row["attempt"] - 1, row["submission_id"], row["attempt"]))
            return True

    def job_waiting(self, job_row: int, reason: str) -> None:
        """A dispatched job has waited longer than the competition's ``stuck_after``: keep the backend's
        reason (updated while it changes) and when it was first found stuck."""
        self._execute("UPDATE jobs SET waiting_reason=?, stuck_at=COALESCE(stuck_at, ?) WHERE id=?",
                      (reason, utcnow(), job_row))

    def job_unstuck(self, job_row: int) -> None:
        """A job that was stuck got its machine."""
        self._execute("UPDATE jobs SET waiting_reason=NULL, stuck_at=NULL WHERE id=? AND stuck_at IS NOT NULL",
                      (job_row,))

    def stuck_jobs(self, cid: str) -> dict[int, dict[str, Any]]:
        """Running submissions of ``cid`` with a job stuck waiting for a machine: submission id ->
        ``{"reason", "stuck_at", "waiting_since", "shard"}`` (the longest-waiting job)."""
        rows = self._query("SELECT j.submission_id, j.waiting_reason, j.stuck_at, j.started_at, j.shard FROM jobs j "
                           "JOIN submissions s ON s.id = j.submission_id WHERE s.competition_id=? AND s.status=? "
                           "AND j.stuck_at IS NOT NULL AND j.state IN (?, ?) ORDER BY j.stuck_at DESC",
                           (cid, RUNNING, JobState.QUEUED.value, JobState.RUNNING.value))
        return {int(r["submission_id"]): {"reason": r["waiting_reason"], "stuck_at": r["stuck_at"],
                                          "waiting_since": r["started_at"], "shard": r["shard"]} for r in rows}

    def job_dispatched(self, job_row: int, handle: str) -> None:
        self._execute("UPDATE jobs SET handle=?, state=?, started_at=? WHERE id=?",
                      (handle, JobState.RUNNING.value, utcnow(), job_row))

    def job_finished(self, job_row: int, st: JobStatus) -> None:
        """Record a job's final status (idempotent: a resumed controller may record it again)."""
        self._execute("UPDATE jobs SET state=?, failure_reason=?, message=?, exit_code=?, node=?, "
                      "instance_type=COALESCE(?, instance_type), started_at=COALESCE(?, started_at), "
                      "finished_at=? WHERE id=?",
                      (st.state.value, st.reason.value if st.reason else None, st.message, st.exit_code, st.node,
                       st.instance_type, st.started_at.isoformat() if st.started_at else None,
                       st.finished_at.isoformat() if st.finished_at else utcnow(), job_row))

    def job(self, sid: int, attempt: int) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE submission_id=? AND attempt=?", (sid, attempt))
        return JobRow(**dict(rows[0])) if rows else None

    def latest_job(self, sid: int) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE submission_id=? ORDER BY attempt DESC LIMIT 1", (sid,))
        return JobRow(**dict(rows[0])) if rows else None

    def jobs_of(self, sid: int) -> list[JobRow]:
        return [JobRow(**dict(r)) for r in self._query("SELECT * FROM jobs WHERE submission_id=? ORDER BY attempt",
                                                        (sid,))]

    def job_record(self, job_row: int) -> JobRecord:
        """The view of a job that job hooks (cost trackers) receive."""
        r = self._query("SELECT j.*, s.team, s.competition_id FROM jobs j JOIN submissions s "
                        "ON s.id = j.submission_id WHERE j.id=?", (job_row,))[0]
        spec = json.loads(r["spec_json"] or "{}")
        created = parse_time(r["created_at"])
        assert created is not None
        return JobRecord(id=r["id"], job_id=spec.get("job_id", f"job{r['id']}"), submission_id=r["submission_id"],
                         competition_id=r["competition_id"], team=r["team"], attempt=r["attempt"],
                         backend=r["backend"], state=r["state"], failure_reason=r["failure_reason"], cpu=r["cpu"],
                         memory=r["memory"], gpus=r["gpus"], instance_type=r["instance_type"], node=r["node"],
                         created_at=created, started_at=parse_time(r["started_at"]),
                         finished_at=parse_time(r["finished_at"]), spec=spec)

    def running_jobs(self, cid: str) -> list[RunningJob]:
        """Dispatched jobs of ``cid`` that have not finished (what a budget counts as committed)."""
        rows = self._query("SELECT j.submission_id, j.backend, j.spec_json, s.team FROM jobs j JOIN submissions s "
                           "ON s.id = j.submission_id WHERE s.competition_id=? AND j.state IN (?, ?)",
                           (cid, JobState.QUEUED.value, JobState.RUNNING.value))
        return [RunningJob(r["submission_id"], r["team"], r["backend"], json.loads(r["spec_json"] or "{}"))
                for r in rows]

    # -- scores ------------------------------------------------------------------------------------
    def scores(self, sid: int) -> list[ScoreRow]:
        return [ScoreRow(**dict(r)) for r in
                self._query("SELECT * FROM scores WHERE submission_id=? ORDER BY split, id", (sid,))]

    def score_sources(self, ids: Sequence[int], metric: str, split: str) -> dict[int, tuple[str | None, str | None]]:
        """For each listed submission with a ``metric`` score on ``split``: (the sha256 of its per-item
        statistics blob, the sha256 of the reference data it was scored against). What leaderboards
        check on every build, without reading whole score rows."""
        out: dict[int, tuple[str | None, str | None]] = {}
        for chunk in _chunks(list(ids)):
            for r in self._query("SELECT submission_id, stats_sha256, json_extract(provenance_json, "
                                 "'$.reference_sha256') AS ref FROM scores WHERE metric=? AND split=? AND "
                                 f"submission_id IN ({_marks(len(chunk))})", (metric, split, *chunk)):
                out[int(r["submission_id"])] = (r["stats_sha256"], r["ref"])
        return out

    def score_rows_written(self) -> tuple[int, int]:
        """(score rows kept now, score rows ever written). Scoring a submission again (a re-run, or a
        second scoring) replaces its rows with new ones, so the two are equal only while every scored
        submission was scored exactly once."""
        kept = int(self._query("SELECT COUNT(*) FROM scores")[0][0])
        seq = self._query("SELECT seq FROM sqlite_sequence WHERE name='scores'")
        return kept, int(seq[0][0]) if seq else 0

    def score_rows(self, ids: Sequence[int], metric: str, split: str) -> dict[int, ScoreRow]:
        """The ``metric`` score on ``split`` of each listed submission that has one."""
        out: dict[int, ScoreRow] = {}
        for chunk in _chunks(list(ids)):
            for r in self._query(f"SELECT * FROM scores WHERE metric=? AND split=? AND submission_id IN "
                                 f"({_marks(len(chunk))})", (metric, split, *chunk)):
                out[int(r["submission_id"])] = ScoreRow(**dict(r))
        return out

    def leaderboard_scores(self, cid: str, phase: str) -> list[LeaderboardScore]:
        """Every score of every ranked submission of a competition's phase, oldest submission first:
        scored, not hidden by the host, not a baseline, not from a disqualified team."""
        return self._phase_scores(cid, phase, RANKED)

    # -- costs -------------------------------------------------------------------------------------
    def record_costs(self, rows: Sequence[CostRow]) -> int:
        """Write cost rows; one per (job, tracker, unit): writing it again replaces it."""
        now = utcnow()
        with self.tx() as c:
            c.executemany("INSERT INTO costs(competition_id, submission_id, job_id, team, tracker, amount, unit, "
                          "details_json, at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(job_id, tracker, unit) DO "
                          "UPDATE SET amount=excluded.amount, details_json=excluded.details_json, at=excluded.at",
                          [(r.competition_id, r.submission_id, r.job_id, r.team, r.tracker, float(r.amount), r.unit,
                            json.dumps(r.details, default=str), now) for r in rows])
        return len(rows)

    def charge_attempt_to_platform(self, sid: int, attempt: int) -> int:
        """Move the cost rows of one attempt of a submission to the platform account (the host pays)."""
        return self._execute(
            f"UPDATE costs SET details_json=json_set(details_json, '$.account', '{PLATFORM_ACCOUNT}') "
            "WHERE job_id IN (SELECT id FROM jobs WHERE submission_id=? AND attempt=?)", (sid, attempt))

    def cost_spent(self, cid: str, unit: str, team: str | None = None) -> float:
        """Total ``unit`` of a competition (all accounts), or charged to one team (platform account left out)."""
        sql = "SELECT COALESCE(SUM(amount), 0) FROM costs WHERE competition_id=? AND unit=?"
        args: tuple[Any, ...] = (cid, unit)
        if team is not None:
            sql += f" AND team=? AND {_TEAM_CHARGED}"
            args += (team,)
        return float(self._query(sql, args)[0][0])

    def cost_per_submission(self, cid: str, unit: str, *, include_platform: bool = False) -> dict[int, float]:
        where = "" if include_platform else f" AND {_TEAM_CHARGED}"
        rows = self._query(f"SELECT submission_id, SUM(amount) AS total FROM costs WHERE competition_id=? AND unit=?"
                           f"{where} GROUP BY submission_id", (cid, unit))
        return {int(r["submission_id"]): float(r["total"]) for r in rows if r["submission_id"] is not None}

    def job_costs(self, sid: int) -> dict[int, dict[str, float]]:
        """What each job of a submission cost, per unit and account: job row id -> {unit: amount, and
        ``platform:<unit>`` for the part the platform pays}."""
        out: dict[int, dict[str, float]] = {}
        for r in self._query(f"SELECT job_id, unit, NOT ({_TEAM_CHARGED}) AS platform, SUM(amount) AS total FROM costs "
                             "WHERE submission_id=? AND job_id IS NOT NULL GROUP BY job_id, unit, platform", (sid,)):
            key = f"platform:{r['unit']}" if r["platform"] else r["unit"]
            out.setdefault(int(r["job_id"]), {})[key] = round(float(r["total"]), 6)
        return out

    def has_costs(self, cid: str) -> bool:
        return bool(self._query("SELECT 1 FROM costs WHERE competition_id=? LIMIT 1", (cid,)))

    def cost_groups(self, cid: str, key: str, *, account: str | None = None) -> dict[Any, dict[str, float]]:
        """Totals per ``key`` (competition_id, team, submission_id, or instance_type) and unit, with the
        number of jobs; ``account`` "team" or "platform" keeps only that account's rows."""
        column = {"competition_id": "competition_id", "team": "team", "submission_id": "submission_id",
                  "instance_type": "json_extract(details_json, '$.instance_type')"}[key]
        where = ""
        if account == "team":
            where = f" AND {_TEAM_CHARGED}"
        elif account == "platform":
            where = f" AND NOT ({_TEAM_CHARGED})"
        if key == "instance_type":
            where += " AND tracker='instance-time'"
        out: dict[Any, dict[str, float]] = {}
        for r in self._query(f"SELECT {column} AS k, unit, SUM(amount) AS total, COUNT(DISTINCT job_id) AS jobs "
                             f"FROM costs WHERE competition_id=?{where} GROUP BY k, unit ORDER BY k", (cid,)):
            d = out.setdefault(r["k"], {"jobs": 0})
            d[r["unit"]] = round(float(r["total"]), 6)
            d["jobs"] = max(d["jobs"], int(r["jobs"]))
        return out

    # -- web tokens --------------------------------------------------------------------------------
    def add_token(self, token_sha256: str, role: str, competition_id: str | None, team: str | None,
                  label: str | None, *, revoke_role: str | None = None, user_id: int | None = None,
                  expires_at: str | None = None) -> None:
        """Store a token's hash; ``revoke_role`` first revokes every active token of that role. Personal
        tokens and sessions belong to a user; a session expires at ``expires_at``."""
        with self.tx() as c:
            if revoke_role is not None:
                c.execute("UPDATE web_tokens SET revoked_at=? WHERE role=? AND revoked_at IS NULL",
                          (utcnow(), revoke_role))
            c.execute("INSERT INTO web_tokens(token_sha256, role, competition_id, team, label, created_at, user_id, "
                      "expires_at) VALUES (?,?,?,?,?,?,?,?)",
                      (token_sha256, role, competition_id, team, label, utcnow(), user_id, expires_at))

    def active_token(self, token_sha256: str) -> TokenRow | None:
        rows = self._query("SELECT * FROM web_tokens WHERE token_sha256=? AND revoked_at IS NULL "
                           "AND (expires_at IS NULL OR expires_at > ?)", (token_sha256, utcnow()))
        return TokenRow(**dict(rows[0])) if rows else None

    def tokens(self, competition_id: str | None = None, *, host_role: str = "host",
               user_id: int | None = None, exclude_role: str | None = None) -> list[TokenRow]:
        """Tokens (all, one competition's plus the host's, or one user's), oldest first."""
        sql, args = "SELECT * FROM web_tokens WHERE 1=1", ()  # type: tuple[str, tuple[Any, ...]]
        if competition_id is not None:
            sql, args = sql + " AND (competition_id=? OR role=?)", (competition_id, host_role)
        if user_id is not None:
            sql, args = sql + " AND user_id=?", (*args, user_id)
        if exclude_role is not None:
            sql, args = sql + " AND role<>?", (*args, exclude_role)
        return [TokenRow(**dict(r)) for r in self._query(sql + " ORDER BY created_at", args)]

    def revoke_token(self, id_prefix: str, *, user_id: int | None = None) -> str:
        """Revoke the one active token whose hash starts with ``id_prefix`` (of ``user_id`` when given);
        returns its hash."""
        owner = "" if user_id is None else " AND user_id=?"
        with self.tx() as c:
            rows = c.execute(f"SELECT token_sha256 FROM web_tokens WHERE token_sha256 LIKE ? AND revoked_at IS NULL"
                             f"{owner}", (id_prefix + "%", *(() if user_id is None else (user_id,)))).fetchall()
            if not rows:
                raise NotFound(f"no active token with id {id_prefix!r} (see `referee token list`)")
            if len(rows) > 1:
                raise RefereeError(f"token id {id_prefix!r} is ambiguous; give more digits")
            c.execute("UPDATE web_tokens SET revoked_at=? WHERE token_sha256=?", (utcnow(), rows[0]["token_sha256"]))
            return str(rows[0]["token_sha256"])
