"""The store's phase records: the host's leaderboard switches, teams' final picks, accepted rules."""

from __future__ import annotations

from referee.platform.core.errors import Conflict, NotAllowed, NotFound
from referee.platform.core.jobs import SubmissionStatus
from referee.platform.store.database import Database, utcnow
from referee.platform.store.rows import PhaseVisibilityRow, PickRow, RulesAcceptanceRow

# a pick may name a submission that will still be scored, not one that failed or was cancelled
_PICKABLE = (SubmissionStatus.PENDING.value, SubmissionStatus.RUNNING.value, SubmissionStatus.SCORED.value)


class PhasesMixin(Database):
    """What changes about a phase while it runs, besides its submissions."""

    # -- leaderboard visibility ----------------------------------------------------------------------
    def phase_visibility(self, cid: str) -> dict[tuple[str, str], PhaseVisibilityRow]:
        """The host's switches of ``cid``'s leaderboards, by (phase, split)."""
        return {(r["phase"], r["split"]): PhaseVisibilityRow(**dict(r)) for r in self._query(
            "SELECT * FROM phase_visibility WHERE competition_id=?", (cid,))}

    def set_phase_visibility(self, cid: str, phase: str, split: str, visibility: str | None, by: str) -> None:
        """Switch who sees a leaderboard (``visibility`` None: back to what the spec says)."""
        with self.tx() as c:
            if visibility is None:
                c.execute("DELETE FROM phase_visibility WHERE competition_id=? AND phase=? AND split=?",
                          (cid, phase, split))
            else:
                c.execute("INSERT INTO phase_visibility(competition_id, phase, split, visibility, set_at, set_by) "
                          "VALUES (?,?,?,?,?,?) ON CONFLICT(competition_id, phase, split) DO UPDATE SET "
                          "visibility=excluded.visibility, set_at=excluded.set_at, set_by=excluded.set_by",
                          (cid, phase, split, visibility, utcnow(), by))
            self._event(c, "leaderboard_visibility", f"{phase}/{split}: {visibility or 'as the spec says'}",
                        competition_id=cid, phase=phase, split=split, visibility=visibility, by=by)

    # -- final picks -----------------------------------------------------------------------------------
    def picks(self, cid: str, phase: str, team: str | None = None) -> list[PickRow]:
        """The picks of a phase (of one team), oldest first."""
        sql, args = "SELECT * FROM final_picks WHERE competition_id=? AND phase=?", [cid, phase]
        if team is not None:
            sql += " AND team=? COLLATE NOCASE"
            args.append(team)
        return [PickRow(**dict(r)) for r in self._query(sql + " ORDER BY picked_at, submission_id", tuple(args))]

    def pick(self, sid: int, team: str, max_picks: int, by: str) -> PickRow:
        """Pick submission ``sid`` of ``team`` for its final entry, in one transaction with the check that
        the team has fewer than ``max_picks`` picks in that phase. Picking it again changes nothing."""
        with self.tx() as c:
            row = c.execute("SELECT * FROM submissions WHERE id=?", (sid,)).fetchone()
            if row is None or row["team"].casefold() != team.casefold() or row["baseline"]:
                raise NotFound(f"no submission #{sid} of team {team!r}")
            mine = c.execute("SELECT * FROM final_picks WHERE submission_id=?", (sid,)).fetchone()
            if mine is not None:
                return PickRow(**dict(mine))
            if row["status"] not in _PICKABLE:
                raise NotAllowed(f"submission #{sid} is {row['status']}; pick a scored (or still running) one")
            if row["hidden_reason"]:
                raise NotAllowed(f"submission #{sid} was removed by the organisers: {row['hidden_reason']}")
            n = c.execute("SELECT COUNT(*) FROM final_picks WHERE competition_id=? AND phase=? AND team=?",
                          (row["competition_id"], row["phase"], row["team"])).fetchone()[0]
            if n >= max_picks:
                raise Conflict(f"team {row['team']!r} has already picked {n} submission(s) of phase {row['phase']!r}, "
                               f"the most it may; unpick one first")
            now = utcnow()
            c.execute("INSERT INTO final_picks(submission_id, competition_id, phase, team, picked_at, picked_by) "
                      "VALUES (?,?,?,?,?,?)", (sid, row["competition_id"], row["phase"], row["team"], now, by))
            self._event(c, "picked", f"picked by {by}", competition_id=row["competition_id"], submission_id=sid)
            return PickRow(sid, row["competition_id"], row["phase"], row["team"], now, by)

    def unpick(self, sid: int, by: str) -> bool:
        """Withdraw a pick; False when ``sid`` was not picked."""
        with self.tx() as c:
            row = c.execute("SELECT competition_id FROM final_picks WHERE submission_id=?", (sid,)).fetchone()
            if row is None:
                return False
            c.execute("DELETE FROM final_picks WHERE submission_id=?", (sid,))
            self._event(c, "unpicked", f"unpicked by {by}", competition_id=row["competition_id"], submission_id=sid)
            return True

    # -- rules -------------------------------------------------------------------------------------------
    def accept_rules(self, cid: str, uid: int, rules_sha256: str | None) -> RulesAcceptanceRow:
        """Record that user ``uid`` accepted ``cid``'s rules (the version with ``rules_sha256``)."""
        now = utcnow()
        with self.tx() as c:
            c.execute("INSERT INTO rules_accepted(competition_id, user_id, rules_sha256, accepted_at) VALUES "
                      "(?,?,?,?) ON CONFLICT(competition_id, user_id) DO UPDATE SET "
                      "rules_sha256=excluded.rules_sha256, accepted_at=excluded.accepted_at",
                      (cid, uid, rules_sha256, now))
            self._event(c, "rules_accepted", rules_sha256 or "", competition_id=cid, user_id=uid)
        return RulesAcceptanceRow(cid, uid, rules_sha256, now)

    def rules_accepted(self, cid: str, uid: int) -> RulesAcceptanceRow | None:
        rows = self._query("SELECT * FROM rules_accepted WHERE competition_id=? AND user_id=?", (cid, uid))
        return RulesAcceptanceRow(**dict(rows[0])) if rows else None
