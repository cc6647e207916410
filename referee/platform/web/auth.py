"""Access tokens for the web service: team tokens (one competition, one team) and host tokens.

Only the sha256 of a token is stored, so a lost token cannot be shown again: create a new one and
revoke the old. A token looks like ``rft_<43 url-safe characters>`` (256 bits of randomness).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from referee.platform.core.errors import RefereeError
from referee.platform.store import Store, SubmissionRow

TOKEN_PREFIX = "rft_"
HOST = "host"
TEAM = "team"

@dataclass(frozen=True)
class Principal:
    """Who is asking: a host, or one team of one competition."""

    role: str
    team: str | None = None
    competition_id: str | None = None
    token_id: str = ""

    @property
    def is_host(self) -> bool:
        return self.role == HOST

    def member_of(self, competition_id: str) -> bool:
        return self.role == TEAM and self.competition_id == competition_id

    def can_see(self, sub: SubmissionRow) -> bool:
        """Hosts see every submission; a team only its own, in its own competition."""
        return self.is_host or (self.member_of(sub.competition_id) and self.team == sub.team)

    @property
    def label(self) -> str:
        return "host" if self.is_host else f"team {self.team} ({self.competition_id})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_team_token(store: Store, competition_id: str, team: str, *, label: str | None = None) -> str:
    """Create a token for ``team`` in ``competition_id``; returns the token (shown once)."""
    store.get_competition(competition_id)  # NotFound names the loaded competitions
    team = team.strip()
    if not team:
        raise RefereeError("team name is empty (pass --team NAME)")
    return _insert(store, TEAM, competition_id, team, label)


def create_host_token(store: Store, *, label: str | None = None, revoke_others: bool = False) -> str:
    """Create a host token; with ``revoke_others`` every earlier host token stops working."""
    return _insert(store, HOST, None, None, label, revoke_role=HOST if revoke_others else None)


def _insert(store: Store, role: str, competition_id: str | None, team: str | None, label: str | None,
            revoke_role: str | None = None) -> str:
    token = _new_token()
    store.add_token(hash_token(token), role, competition_id, team, label, revoke_role=revoke_role)
    store.event("token_created", f"{role} token" + (f" for team {team}" if team else ""),
                competition_id=competition_id, token_id=hash_token(token)[:12])
    return token


def authenticate(store: Store, token: str | None) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, malformed or revoked)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    row = store.active_token(digest)
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    return Principal(role=row.role, team=row.team, competition_id=row.competition_id, token_id=digest[:12])


def list_tokens(store: Store, competition_id: str | None = None) -> list[dict[str, Any]]:
    """Tokens without their secret: id (first 12 hex digits of the hash), role, team, dates."""
    return [{"id": r.token_sha256[:12], "role": r.role, "competition_id": r.competition_id, "team": r.team,
             "label": r.label, "created_at": r.created_at, "revoked_at": r.revoked_at}
            for r in store.tokens(competition_id, host_role=HOST)]


def revoke_token(store: Store, token_id: str) -> int:
    """Revoke the token whose id (a prefix of its hash, at least 8 hex digits) is ``token_id``."""
    token_id = token_id.strip().lower()
    if len(token_id) < 8 or any(ch not in "0123456789abcdef" for ch in token_id):
        raise RefereeError(f"{token_id!r} is not a token id (use the id column of `referee token list`)")
    store.revoke_token(token_id)
    store.event("token_revoked", token_id)
    return 1


def csrf_token(token: str) -> str:
    """A per-token value that page forms echo back: a cross-site form cannot know it."""
    return hmac.new(hash_token(token).encode(), b"referee-csrf", hashlib.sha256).hexdigest()[:32]


def check_csrf(token: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(token), presented or "")
