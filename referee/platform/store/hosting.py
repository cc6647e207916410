"""The store's host tools: hiding submissions, baselines, bulk re-runs and paged lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from referee.platform.core.errors import NotFound
from referee.platform.core.jobs import FINAL_STATUSES, SubmissionStatus
from referee.platform.store.database import Database, utcnow
from referee.platform.store.rows import LeaderboardScore, SubmissionRow

_FINAL = tuple(s.value for s in FINAL_STATUSES)


class HostingMixin(Database):
    """What a competition's organisers do to submissions besides cancel and re-run one."""

    def set_hidden(self, sid: int, reason: str | None, by: str) -> SubmissionRow:
        """Take a submission off every leaderboard with a ``reason`` shown to its team and below the
        leaderboard, or put it back (``reason`` None). Its scores are kept."""
        with self.tx() as c:
            row = c.execute("SELECT competition_id FROM submissions WHERE id=?", (sid,)).fetchone()
            if row is None:
                raise NotFound(f"no submission #{sid}")
            c.execute("UPDATE submissions SET hidden_reason=?, hidden_at=?, hidden_by=? WHERE id=?",
                      (reason, utcnow() if reason else None, by if reason else None, sid))
            self._event(c, "hidden" if reason else "unhidden", reason or "", competition_id=row["competition_id"],
                        submission_id=sid, by=by)
            return SubmissionRow(**dict(c.execute("SELECT * FROM submissions WHERE id=?", (sid,)).fetchone()))

    def set_baseline(self, sid: int, baseline: bool, by: str) -> SubmissionRow:
        """Flag a submission as a baseline (shown for comparison, ranked as no team) or unflag it.
        A baseline counts toward no quota."""
        with self.tx() as c:
            row = c.execute("SELECT competition_id FROM submissions WHERE id=?", (sid,)).fetchone()
            if row is None:
                raise NotFound(f"no submission #{sid}")
            c.execute("UPDATE submissions SET baseline=?, counts_toward_quota=CASE WHEN ? THEN 0 ELSE "
                      "counts_toward_quota END WHERE id=?", (1 if baseline else 0, 1 if baseline else 0, sid))
            self._event(c, "baseline" if baseline else "not_baseline", "", competition_id=row["competition_id"],
                        submission_id=sid, by=by)
            return SubmissionRow(**dict(c.execute("SELECT * FROM submissions WHERE id=?", (sid,)).fetchone()))

    def request_rerun_many(self, cid: str, *, ids: Sequence[int] | None = None,
                           statuses: Sequence[str] = _FINAL, team: str | None = None, phase: str | None = None,
                           by: str = "host") -> list[int]:
        """Put every finished submission of ``cid`` that matches back in the queue, in one transaction
        (what ``request_rerun`` does for one); returns their ids. Submissions still pending or running
        are left alone."""
        wanted = [s for s in statuses if s in _FINAL]
        if not wanted:
            return []
        sql = (f"SELECT id, status FROM submissions WHERE competition_id=? AND status IN "
               f"({','.join('?' * len(wanted))})")
        args: list[Any] = [cid, *wanted]
        if team is not None:
            sql += " AND team=? COLLATE NOCASE"
            args.append(team)
        if phase is not None:
            sql += " AND phase=?"
            args.append(phase)
        now = utcnow()
        with self.tx() as c:
            rows = c.execute(sql + " ORDER BY id", tuple(args)).fetchall()
            chosen = [(int(r["id"]), r["status"]) for r in rows if ids is None or int(r["id"]) in set(ids)]
            for sid, status in chosen:
                c.execute("UPDATE submissions SET status=?, claimed_by=NULL, failure_reason=NULL, "
                          "failure_message=NULL, log_tail=NULL, attempt_base=attempts, "
                          "counts_toward_quota=CASE WHEN baseline=1 THEN 0 ELSE 1 END, updated_at=? "
                          "WHERE id=? AND status=?", (SubmissionStatus.PENDING.value, now, sid, status))
            if chosen:
                self._event(c, "rerun_bulk", f"{len(chosen)} submission(s) re-run by {by}", competition_id=cid,
                            ids=[sid for sid, _ in chosen])
        return [sid for sid, _ in chosen]

    def submissions_page(self, cid: str, *, team: str | None = None, status: str | None = None,
                         limit: int = 50, offset: int = 0, newest_first: bool = True,
                         include_baselines: bool = True) -> tuple[list[SubmissionRow], int]:
        """One page of a competition's submissions and the number of all that match."""
        where, args = "competition_id=?", [cid]  # type: str, list[Any]
        if team is not None:
            where += " AND team=? AND baseline=0"
            args.append(team)
        elif not include_baselines:
            where += " AND baseline=0"
        if status is not None:
            where += " AND status=?"
            args.append(status)
        total = int(self._query(f"SELECT COUNT(*) FROM submissions WHERE {where}", tuple(args))[0][0])
        order = "DESC" if newest_first else "ASC"
        rows = self._query(f"SELECT * FROM submissions WHERE {where} ORDER BY id {order} LIMIT ? OFFSET ?",
                           (*args, limit, offset))
        return [SubmissionRow(**dict(r)) for r in rows], total

    def baseline_scores(self, cid: str, phase: str) -> list[LeaderboardScore]:
        """Every score of the scored, not hidden baselines of a phase (shown as unranked rows)."""
        return self._phase_scores(cid, phase, "s.baseline=1 AND s.hidden_reason IS NULL")

    def _phase_scores(self, cid: str, phase: str, where: str) -> list[LeaderboardScore]:
        """Every score of the scored submissions ``s`` of a phase that meet ``where``, oldest submission first."""
        rows = self._query(
            "SELECT s.id, s.team, s.created_at, sc.metric, sc.split, sc.value, sc.ci_low, sc.ci_high "
            "FROM submissions s JOIN scores sc ON sc.submission_id = s.id WHERE s.competition_id=? AND s.phase=? "
            f"AND s.status=? AND {where} ORDER BY s.id", (cid, phase, SubmissionStatus.SCORED.value))
        return [LeaderboardScore(r["id"], r["team"], r["created_at"], r["metric"], r["split"], r["value"],
                                 r["ci_low"], r["ci_high"]) for r in rows]

    def moderated(self, cid: str, phase: str) -> list[SubmissionRow]:
        """Scored submissions of a phase that stand on no leaderboard: hidden ones and baselines."""
        return [SubmissionRow(**dict(r)) for r in self._query(
            "SELECT * FROM submissions WHERE competition_id=? AND phase=? AND status=? "
            "AND (hidden_reason IS NOT NULL OR baseline=1) ORDER BY id",
            (cid, phase, SubmissionStatus.SCORED.value))]
