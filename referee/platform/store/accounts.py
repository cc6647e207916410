"""Accounts, teams, registrations and organisers: the store's typed methods for who takes part.

A team is a record of one competition; the ``team`` text of a submission is its name there. A user
is in at most one team per competition (a unique index, so two racing joins cannot both land), and
a join checks the team's member limit in the same transaction that adds the member.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from referee.platform.core.errors import Conflict, NotFound
from referee.platform.store.database import Database, utcnow
from referee.platform.store.rows import (
    CompetitionFileRow,
    MemberRow,
    OrganiserRow,
    RegistrationRow,
    TeamRow,
    UserRow,
)

CAPTAIN, MEMBER = "captain", "member"


class AccountsMixin(Database):
    """Users, teams and their members, registrations, organisers, competition files."""

    # -- users -------------------------------------------------------------------------------------
    def add_user(self, username: str, password_hash: str, email: str | None = None) -> int:
        try:
            with self.tx() as c:
                cur = c.execute("INSERT INTO users(username, email, password_hash, created_at) VALUES (?,?,?,?)",
                                (username, email, password_hash, utcnow()))
                self._event(c, "user_created", username)
                return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise Conflict(f"the user name {username!r} is taken; choose another") from None

    def user(self, uid: int) -> UserRow:
        rows = self._query("SELECT * FROM users WHERE id=?", (uid,))
        if not rows:
            raise NotFound(f"no user #{uid}")
        return UserRow(**dict(rows[0]))

    def user_by_name(self, username: str) -> UserRow | None:
        rows = self._query("SELECT * FROM users WHERE username=?", (username,))
        return UserRow(**dict(rows[0])) if rows else None

    def set_password_hash(self, uid: int, password_hash: str) -> None:
        self._execute("UPDATE users SET password_hash=? WHERE id=?", (password_hash, uid))

    def delete_expired_tokens(self) -> int:
        """Forget page sessions (and any other token) past their expiry."""
        return self._execute("DELETE FROM web_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?", (utcnow(),))

    def users(self, *, limit: int = 100, offset: int = 0) -> list[UserRow]:
        return [UserRow(**dict(r)) for r in self._query("SELECT * FROM users ORDER BY id LIMIT ? OFFSET ?",
                                                        (limit, offset))]

    # -- teams -------------------------------------------------------------------------------------
    def add_team(self, cid: str, name: str, *, created_by: int | None = None, invite_code: str | None = None,
                 captain: int | None = None) -> TeamRow:
        """Create a team (names are unique per competition, ignoring case); ``captain`` joins it at once."""
        try:
            with self.tx() as c:
                if captain is not None:
                    self._not_in_a_team(c, cid, captain)
                cur = c.execute("INSERT INTO teams(competition_id, name, invite_code, created_by, created_at) "
                                "VALUES (?,?,?,?,?)", (cid, name, invite_code, created_by, utcnow()))
                tid = int(cur.lastrowid or 0)
                if captain is not None:
                    c.execute("INSERT INTO team_members(team_id, competition_id, user_id, role, joined_at) "
                              "VALUES (?,?,?,?,?)", (tid, cid, captain, CAPTAIN, utcnow()))
                self._event(c, "team_created", name, competition_id=cid, team_id=tid, created_by=created_by)
                return TeamRow(**dict(c.execute("SELECT * FROM teams WHERE id=?", (tid,)).fetchone()))
        except sqlite3.IntegrityError:
            raise Conflict(f"there is already a team called {name!r} in {cid!r}; choose another name") from None

    def team(self, cid: str, name: str) -> TeamRow | None:
        """The team of ``cid`` called ``name`` (ignoring case), or None."""
        rows = self._query("SELECT * FROM teams WHERE competition_id=? AND name=? COLLATE NOCASE", (cid, name))
        return TeamRow(**dict(rows[0])) if rows else None

    def team_by_id(self, tid: int) -> TeamRow:
        rows = self._query("SELECT * FROM teams WHERE id=?", (tid,))
        if not rows:
            raise NotFound(f"no team #{tid}")
        return TeamRow(**dict(rows[0]))

    def team_by_invite(self, cid: str, code: str) -> TeamRow | None:
        rows = self._query("SELECT * FROM teams WHERE competition_id=? AND invite_code=?", (cid, code))
        return TeamRow(**dict(rows[0])) if rows else None

    def teams(self, cid: str) -> list[TeamRow]:
        return [TeamRow(**dict(r)) for r in
                self._query("SELECT * FROM teams WHERE competition_id=? ORDER BY name COLLATE NOCASE", (cid,))]

    def team_sizes(self, cid: str) -> dict[int, int]:
        return {int(r["team_id"]): int(r["n"]) for r in self._query(
            "SELECT team_id, COUNT(*) AS n FROM team_members WHERE competition_id=? GROUP BY team_id", (cid,))}

    def set_invite_code(self, tid: int, code: str | None) -> None:
        self._execute("UPDATE teams SET invite_code=? WHERE id=?", (code, tid))

    def team_of_user(self, cid: str, uid: int) -> TeamRow | None:
        rows = self._query("SELECT t.* FROM teams t JOIN team_members m ON m.team_id = t.id "
                           "WHERE m.competition_id=? AND m.user_id=?", (cid, uid))
        return TeamRow(**dict(rows[0])) if rows else None

    def teams_of_user(self, uid: int) -> list[TeamRow]:
        return [TeamRow(**dict(r)) for r in self._query(
            "SELECT t.* FROM teams t JOIN team_members m ON m.team_id = t.id WHERE m.user_id=? "
            "ORDER BY t.competition_id", (uid,))]

    def members(self, tid: int) -> list[MemberRow]:
        return [MemberRow(r["team_id"], r["user_id"], r["username"], r["role"], r["joined_at"]) for r in self._query(
            "SELECT m.team_id, m.user_id, u.username, m.role, m.joined_at FROM team_members m "
            "JOIN users u ON u.id = m.user_id WHERE m.team_id=? ORDER BY m.joined_at", (tid,))]

    def _not_in_a_team(self, c: Any, cid: str, uid: int) -> None:
        row = c.execute("SELECT t.name FROM team_members m JOIN teams t ON t.id = m.team_id "
                        "WHERE m.competition_id=? AND m.user_id=?", (cid, uid)).fetchone()
        if row is not None:
            raise Conflict(f"you are already in team {row['name']!r} of {cid!r}; a participant is in one team "
                           "per competition")

    def join_team(self, tid: int, uid: int, *, max_size: int | None) -> None:
        """Add ``uid`` to team ``tid``: one transaction checks that the user is in no team of the
        competition yet and that the team has room."""
        with self.tx() as c:
            row = c.execute("SELECT competition_id, name FROM teams WHERE id=?", (tid,)).fetchone()
            if row is None:
                raise NotFound(f"no team #{tid}")
            self._not_in_a_team(c, row["competition_id"], uid)
            if max_size is not None:
                n = c.execute("SELECT COUNT(*) FROM team_members WHERE team_id=?", (tid,)).fetchone()[0]
                if n >= max_size:
                    raise Conflict(f"team {row['name']!r} is full ({n} of {max_size} members)")
            c.execute("INSERT INTO team_members(team_id, competition_id, user_id, role, joined_at) "
                      "VALUES (?,?,?,?,?)", (tid, row["competition_id"], uid, MEMBER, utcnow()))
            self._event(c, "team_joined", row["name"], competition_id=row["competition_id"], team_id=tid, user_id=uid)

    def leave_team(self, cid: str, uid: int) -> TeamRow:
        """Take ``uid`` out of its team of ``cid`` (the team and its submissions stay)."""
        with self.tx() as c:
            row = c.execute("SELECT t.* FROM teams t JOIN team_members m ON m.team_id = t.id "
                            "WHERE m.competition_id=? AND m.user_id=?", (cid, uid)).fetchone()
            if row is None:
                raise NotFound(f"you are in no team of {cid!r}")
            c.execute("DELETE FROM team_members WHERE team_id=? AND user_id=?", (row["id"], uid))
            # the longest-standing member becomes captain when the captain leaves
            c.execute("UPDATE team_members SET role=? WHERE team_id=? AND user_id = (SELECT user_id FROM team_members "
                      "WHERE team_id=? ORDER BY joined_at LIMIT 1) AND NOT EXISTS (SELECT 1 FROM team_members "
                      "WHERE team_id=? AND role=?)", (CAPTAIN, row["id"], row["id"], row["id"], CAPTAIN))
            self._event(c, "team_left", row["name"], competition_id=cid, team_id=row["id"], user_id=uid)
            return TeamRow(**dict(row))

    def set_team_disqualified(self, cid: str, name: str, reason: str | None, by: str) -> TeamRow:
        """Disqualify a team (``reason``) or reinstate it (None)."""
        with self.tx() as c:
            n = c.execute("UPDATE teams SET disqualified_reason=?, disqualified_at=? WHERE competition_id=? "
                          "AND name=? COLLATE NOCASE", (reason, utcnow() if reason else None, cid, name)).rowcount
            if not n:
                raise NotFound(f"no team {name!r} in {cid!r}")
            self._event(c, "team_disqualified" if reason else "team_reinstated", reason or "", competition_id=cid,
                        team=name, by=by)
            return TeamRow(**dict(c.execute("SELECT * FROM teams WHERE competition_id=? AND name=? COLLATE NOCASE",
                                            (cid, name)).fetchone()))

    # -- registrations -----------------------------------------------------------------------------
    def register(self, cid: str, uid: int, status: str) -> RegistrationRow:
        """Record a user's registration (idempotent: an existing one is returned unchanged)."""
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO registrations(competition_id, user_id, status, created_at) "
                      "VALUES (?,?,?,?)", (cid, uid, status, utcnow()))
        reg = self.registration(cid, uid)
        assert reg is not None
        return reg

    def registration(self, cid: str, uid: int) -> RegistrationRow | None:
        rows = self._query("SELECT r.*, u.username FROM registrations r JOIN users u ON u.id = r.user_id "
                           "WHERE r.competition_id=? AND r.user_id=?", (cid, uid))
        return _registration(rows[0]) if rows else None

    def registrations(self, cid: str, status: str | None = None) -> list[RegistrationRow]:
        sql = ("SELECT r.*, u.username FROM registrations r JOIN users u ON u.id = r.user_id "
               "WHERE r.competition_id=?")
        args: tuple[Any, ...] = (cid,)
        if status is not None:
            sql, args = sql + " AND r.status=?", (cid, status)
        return [_registration(r) for r in self._query(sql + " ORDER BY r.created_at", args)]

    def decide_registration(self, cid: str, uid: int, status: str, by: str) -> RegistrationRow:
        with self.tx() as c:
            n = c.execute("UPDATE registrations SET status=?, decided_at=?, decided_by=? WHERE competition_id=? "
                          "AND user_id=?", (status, utcnow(), by, cid, uid)).rowcount
            if not n:
                raise NotFound(f"user #{uid} has not registered for {cid!r}")
            self._event(c, "registration_" + status, by, competition_id=cid, user_id=uid)
        reg = self.registration(cid, uid)
        assert reg is not None
        return reg

    # -- organisers --------------------------------------------------------------------------------
    def set_organiser(self, cid: str, uid: int, role: str, by: str) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO organisers(competition_id, user_id, role, added_at, added_by) VALUES (?,?,?,?,?) "
                      "ON CONFLICT(competition_id, user_id) DO UPDATE SET role=excluded.role",
                      (cid, uid, role, utcnow(), by))
            self._event(c, "organiser_set", role, competition_id=cid, user_id=uid, by=by)

    def remove_organiser(self, cid: str, uid: int, by: str) -> None:
        with self.tx() as c:
            if not c.execute("DELETE FROM organisers WHERE competition_id=? AND user_id=?", (cid, uid)).rowcount:
                raise NotFound(f"user #{uid} is no organiser of {cid!r}")
            self._event(c, "organiser_removed", "", competition_id=cid, user_id=uid, by=by)

    def organiser_role(self, cid: str, uid: int) -> str | None:
        rows = self._query("SELECT role FROM organisers WHERE competition_id=? AND user_id=?", (cid, uid))
        return str(rows[0]["role"]) if rows else None

    def organisers(self, cid: str) -> list[OrganiserRow]:
        return [OrganiserRow(r["competition_id"], r["user_id"], r["username"], r["role"], r["added_at"],
                             r["added_by"]) for r in self._query(
            "SELECT o.*, u.username FROM organisers o JOIN users u ON u.id = o.user_id WHERE o.competition_id=? "
            "ORDER BY o.added_at", (cid,))]

    # -- competition files (pages, starting kit, data snapshots) -----------------------------------
    def replace_competition_files(self, cid: str, files: list[tuple[str, str, str, int]]) -> None:
        """Set a competition's files to ``(kind, name, sha256, size)`` rows (a load replaces them all)."""
        now = utcnow()
        with self.tx() as c:
            c.execute("DELETE FROM competition_files WHERE competition_id=?", (cid,))
            c.executemany("INSERT INTO competition_files(competition_id, kind, name, sha256, size, loaded_at) "
                          "VALUES (?,?,?,?,?,?)", [(cid, k, n, sha, size, now) for k, n, sha, size in files])

    def competition_files(self, cid: str, kind: str | None = None) -> list[CompetitionFileRow]:
        sql, args = "SELECT * FROM competition_files WHERE competition_id=?", (cid,)  # type: str, tuple[Any, ...]
        if kind is not None:
            sql, args = sql + " AND kind=?", (cid, kind)
        return [CompetitionFileRow(**dict(r)) for r in self._query(sql + " ORDER BY kind, name", args)]


def _registration(r: Any) -> RegistrationRow:
    return RegistrationRow(r["competition_id"], r["user_id"], r["username"], r["status"], r["created_at"],
                           r["decided_at"], r["decided_by"])
