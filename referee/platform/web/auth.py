"""Who is asking: tokens, accounts, passwords and page sessions.

Four kinds of bearer secret, all stored only as their sha256 (a lost one cannot be shown again:
create a new one and revoke the old):

* host tokens (``referee token host``): the workspace's superuser;
* team tokens (``referee token create COMP --team T``): one team of one competition;
* personal tokens of a signed-up user (``referee remote login``, the account page): act as that user;
* page sessions (``rfs_...``): what the sign-in form puts in the HttpOnly cookie; they expire.

Tokens look like ``rft_<43 url-safe characters>`` (256 bits of randomness). Passwords are hashed
with argon2id (argon2-cffi); a hash made with weaker parameters is upgraded at the next sign-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from referee.platform.core.errors import RefereeError
from referee.platform.store import Store, UserRow

TOKEN_PREFIX = "rft_"
SESSION_PREFIX = "rfs_"
HOST = "host"
TEAM = "team"
USER = "user"  # a personal token, or a session, of a signed-up user
SESSION = "session"
SESSION_DAYS = 30
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class Principal:
    """Who is asking: a host, one team of one competition, or a signed-up user."""

    role: str
    team: str | None = None
    competition_id: str | None = None
    token_id: str = ""
    user_id: int | None = None
    username: str | None = None

    @property
    def is_host(self) -> bool:
        return self.role == HOST

    @property
    def is_user(self) -> bool:
        return self.role == USER

    def member_of(self, competition_id: str) -> bool:
        """Whether this is a team token of ``competition_id`` (users: see ``access.seat``)."""
        return self.role == TEAM and self.competition_id == competition_id

    @property
    def label(self) -> str:
        if self.is_host:
            return "host"
        if self.is_user:
            return str(self.username)
        return f"team {self.team} ({self.competition_id})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_team_token(store: Store, competition_id: str, team: str, *, label: str | None = None,
                      create_team: bool = False) -> str:
    """Create a token for the existing ``team`` of ``competition_id`` (``create_team`` creates the
    team first when it is new); returns the token (shown once)."""
    from referee.platform.controller.participation import host_create_team, require_team
    store.get_competition(competition_id)  # NotFound names the loaded competitions
    if create_team and store.team(competition_id, team.strip()) is None:
        host_create_team(store, competition_id, team)
    row = require_team(store, competition_id, team)
    return _insert(store, TEAM, competition_id, row.name, label)


def create_host_token(store: Store, *, label: str | None = None, revoke_others: bool = False) -> str:
    """Create a host token; with ``revoke_others`` every earlier host token stops working."""
    return _insert(store, HOST, None, None, label, revoke_role=HOST if revoke_others else None)


def create_user_token(store: Store, user_id: int, *, label: str | None = None) -> str:
    """A personal API token for a signed-up user (for scripts and ``referee remote``)."""
    return _insert(store, USER, None, None, label or "personal token", user_id=user_id)


def create_session(store: Store, user_id: int) -> str:
    """A page session for a user who signed in with a password (expires after SESSION_DAYS)."""
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=SESSION_DAYS)
    store.delete_expired_tokens()
    token = _new_token(SESSION_PREFIX)
    store.add_token(hash_token(token), SESSION, None, None, "page session", user_id=user_id,
                    expires_at=expires.isoformat(timespec="microseconds"))
    return token


def end_session(store: Store, token: str) -> None:
    """Revoke a page session (sign-out); other kinds of token are left alone."""
    if token.startswith(SESSION_PREFIX):
        try:
            store.revoke_token(hash_token(token))
        except RefereeError:
            pass


def _insert(store: Store, role: str, competition_id: str | None, team: str | None, label: str | None,
            revoke_role: str | None = None, user_id: int | None = None) -> str:
    token = _new_token()
    store.add_token(hash_token(token), role, competition_id, team, label, revoke_role=revoke_role, user_id=user_id)
    store.event("token_created", f"{role} token" + (f" for team {team}" if team else ""),
                competition_id=competition_id, token_id=hash_token(token)[:12], user_id=user_id)
    return token


def authenticate(store: Store, token: str | None, *, sessions: bool = False) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, malformed, revoked, expired, or a
    disabled user). Page sessions count only with ``sessions`` (the cookie), never as API tokens."""
    if not token or len(token) > 200:
        return None
    if not (token.startswith(TOKEN_PREFIX) or (sessions and token.startswith(SESSION_PREFIX))):
        return None
    digest = hash_token(token)
    row = store.active_token(digest)
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    if row.role in (USER, SESSION):
        if row.user_id is None:
            return None
        user = store.user(row.user_id)
        if user.disabled_at:
            return None
        return Principal(role=USER, token_id=digest[:12], user_id=user.id, username=user.username)
    return Principal(role=row.role, team=row.team, competition_id=row.competition_id, token_id=digest[:12])


def list_tokens(store: Store, competition_id: str | None = None, *, user_id: int | None = None) -> list[dict[str, Any]]:
    """Tokens without their secret: id (first 12 hex digits of the hash), role, team, dates.
    Page sessions are left out."""
    return [{"id": r.token_sha256[:12], "role": r.role, "competition_id": r.competition_id, "team": r.team,
             "label": r.label, "created_at": r.created_at, "revoked_at": r.revoked_at, "user_id": r.user_id}
            for r in store.tokens(competition_id, host_role=HOST, user_id=user_id, exclude_role=SESSION)]


def revoke_token(store: Store, token_id: str, *, user_id: int | None = None) -> int:
    """Revoke the token whose id (a prefix of its hash, at least 8 hex digits) is ``token_id``
    (only among ``user_id``'s own when given)."""
    token_id = token_id.strip().lower()
    if len(token_id) < 8 or any(ch not in "0123456789abcdef" for ch in token_id):
        raise RefereeError(f"{token_id!r} is not a token id (use the id column of `referee token list`)")
    store.revoke_token(token_id, user_id=user_id)
    store.event("token_revoked", token_id, user_id=user_id)
    return 1


# -- passwords --------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _hasher() -> Any:
    from argon2 import PasswordHasher
    return PasswordHasher()  # argon2id, the library's current recommended parameters


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return str(_hasher().hash(secrets.token_urlsafe(16)))


def check_password_rules(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise RefereeError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise RefereeError(f"the password is too long: at most {MAX_PASSWORD} characters")
    if password.strip().lower() == username.lower():
        raise RefereeError("the password must differ from the user name")


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def create_user(store: Store, username: str, password: str, email: str | None = None) -> UserRow:
    """Sign a user up (user names are lowercase; the password is stored as an argon2id hash)."""
    from referee.platform.controller.participation import check_username
    username = check_username(username)
    check_password_rules(password, username)
    email = (email or "").strip() or None
    if email is not None and ("@" not in email or len(email) > 254 or any(c.isspace() for c in email)):
        raise RefereeError(f"{email!r} is not an e-mail address (leave it empty if you prefer)")
    uid = store.add_user(username, hash_password(password), email)
    return store.user(uid)


def verify_password(store: Store, username: str, password: str) -> UserRow | None:
    """The user when ``password`` is theirs, else None. An unknown name costs the same time as a wrong
    password, so answers do not tell which names exist."""
    from argon2.exceptions import InvalidHashError, VerificationError
    ph = _hasher()
    user = store.user_by_name(username.strip().lower()) if len(password) <= MAX_PASSWORD else None
    try:
        ph.verify(user.password_hash if user else _dummy_hash(), password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled_at:
        return None
    if ph.check_needs_rehash(user.password_hash):
        store.set_password_hash(user.id, ph.hash(password))
    return user


# -- CSRF -------------------------------------------------------------------------------------------
def csrf_token(token: str) -> str:
    """A per-token value that page forms echo back: a cross-site form cannot know it."""
    return hmac.new(hash_token(token).encode(), b"referee-csrf", hashlib.sha256).hexdigest()[:32]


def check_csrf(token: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(token), presented or "")
