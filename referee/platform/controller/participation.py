"""Taking part in a competition: registration, teams, invitations, organisers.

The rules, shared by the pages, the API and the host's commands:

* A competition's ``participation.registration`` says who may join: ``closed`` (the host creates
  teams and team tokens), ``open`` (a signed-up user registers and is approved at once) or
  ``approval`` (an organiser approves each registration).
* An approved participant creates a team (and becomes its captain) or joins one with the team's
  invitation code; a participant is in one team per competition, a team holds at most
  ``participation.max_team_size`` members.
* Teams are records: a submission names an existing team. The host creates teams explicitly
  (``referee team create``); a team name a person types (``--team``, the host's upload form) must
  name one (``require_team``).
* Organisers of a competition have a role: ``viewer`` (sees everything), ``admin`` (also acts on
  submissions, teams and registrations) or ``owner`` (also manages organisers). Host tokens are the
  workspace's superuser.
"""

from __future__ import annotations

import re
import secrets

from referee.platform.core.errors import Conflict, NotAllowed, NotFound, RefereeError
from referee.platform.core.spec import Competition
from referee.platform.store import RegistrationRow, Store, TeamRow, UserRow

ORGANISER_ROLES = ("viewer", "admin", "owner")  # ascending rights
SUPERUSER = "superuser"  # a host token: every right in every competition
PENDING, APPROVED, DENIED = "pending", "approved", "denied"
_TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{1,31}$")


def role_at_least(role: str | None, wanted: str) -> bool:
    """Whether organiser ``role`` (or the superuser) has the rights of ``wanted``."""
    if role == SUPERUSER:
        return True
    if role not in ORGANISER_ROLES:
        return False
    return ORGANISER_ROLES.index(role) >= ORGANISER_ROLES.index(wanted)


def check_username(name: str) -> str:
    name = name.strip().lower()
    if not _USERNAME.match(name):
        raise RefereeError("a user name is 2 to 32 characters: lowercase letters, digits, '_', '.' and '-', "
                           "starting with a letter or digit")
    return name


def check_team_name(name: str) -> str:
    name = " ".join(name.split())
    if not _TEAM_NAME.match(name):
        raise RefereeError(f"{name!r} is not a team name: 1 to 64 characters, letters, digits, spaces, '_', '.' "
                           "and '-', starting with a letter or digit")
    return name


def new_invite_code() -> str:
    return secrets.token_urlsafe(12)


def user_named(store: Store, username: str) -> UserRow:
    user = store.user_by_name(username.strip().lower())
    if user is None:
        raise NotFound(f"no user {username!r} (they sign up on the web pages first)")
    return user


# -- registration -----------------------------------------------------------------------------------
def register(store: Store, comp: Competition, uid: int) -> RegistrationRow:
    """Register a user for ``comp``: approved at once when registration is open, pending when it
    needs approval; a closed competition refuses."""
    mode = comp.participation.registration
    if mode == "closed":
        existing = store.registration(comp.id, uid)
        if existing is not None:
            return existing
        raise NotAllowed(f"registration for {comp.id!r} is closed: the host creates its teams")
    reg = store.register(comp.id, uid, APPROVED if mode == "open" else PENDING)
    store.event("registered", reg.status, competition_id=comp.id, user_id=uid)
    return reg


def require_approved(store: Store, comp: Competition, uid: int) -> None:
    reg = store.registration(comp.id, uid)
    if reg is None:
        raise NotAllowed(f"register for {comp.id!r} first")
    if reg.status == PENDING:
        raise NotAllowed(f"your registration for {comp.id!r} waits for the organisers' approval")
    if reg.status != APPROVED:
        raise NotAllowed(f"your registration for {comp.id!r} was not approved")


def decide_registration(store: Store, comp: Competition, username: str, approve: bool, *,
                        by: str) -> RegistrationRow:
    user = user_named(store, username)
    return store.decide_registration(comp.id, user.id, APPROVED if approve else DENIED, by)


# -- teams ------------------------------------------------------------------------------------------
def create_team(store: Store, comp: Competition, uid: int, name: str) -> TeamRow:
    """A participant creates a team of ``comp`` and becomes its captain."""
    require_approved(store, comp, uid)
    return store.add_team(comp.id, check_team_name(name), created_by=uid, invite_code=new_invite_code(),
                          captain=uid)


def join_team(store: Store, comp: Competition, uid: int, code: str) -> TeamRow:
    """A participant joins the team whose invitation code is ``code``."""
    require_approved(store, comp, uid)
    team = store.team_by_invite(comp.id, code.strip()) if code.strip() else None
    if team is None:
        raise NotFound("that invitation code matches no team of this competition; ask the team for a new one")
    if team.disqualified_reason:
        raise NotAllowed(f"team {team.name!r} is disqualified")
    store.join_team(team.id, uid, max_size=comp.participation.max_team_size)
    return team


def leave_team(store: Store, comp: Competition, uid: int) -> TeamRow:
    return store.leave_team(comp.id, uid)


def rotate_invite(store: Store, comp: Competition, uid: int) -> str:
    """A new invitation code for the caller's team (the old one stops working)."""
    team = store.team_of_user(comp.id, uid)
    if team is None:
        raise NotFound(f"you are in no team of {comp.id!r}")
    code = new_invite_code()
    store.set_invite_code(team.id, code)
    return code


def host_create_team(store: Store, cid: str, name: str) -> TeamRow:
    """The host creates a team (with an invitation code, for when participants join later)."""
    store.get_competition(cid)
    return store.add_team(cid, check_team_name(name), invite_code=new_invite_code())


def require_team(store: Store, cid: str, name: str) -> TeamRow:
    """The existing team ``name`` of ``cid``: a team name a person typed must name one."""
    name = name.strip()
    if not name:
        raise RefereeError("the team name is empty (pass --team NAME)")
    team = store.team(cid, name)
    if team is None:
        known = [t.name for t in store.teams(cid)]
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "") if known else "none yet"
        raise NotFound(f"no team {name!r} in {cid!r} (teams: {shown}); create it with "
                       f"`referee team create {cid} {name!r}`")
    return team


# -- organisers -------------------------------------------------------------------------------------
def set_organiser(store: Store, cid: str, username: str, role: str, *, by: str) -> UserRow:
    if role not in ORGANISER_ROLES:
        raise RefereeError(f"organiser role must be one of {', '.join(ORGANISER_ROLES)}, not {role!r}")
    store.get_competition(cid)
    user = user_named(store, username)
    store.set_organiser(cid, user.id, role, by)
    return user


def remove_organiser(store: Store, cid: str, username: str, *, by: str, superuser: bool = False) -> None:
    """Remove an organiser; only the superuser (a host token) may remove the last owner."""
    user = user_named(store, username)
    owners = [o for o in store.organisers(cid) if o.role == "owner"]
    if len(owners) == 1 and owners[0].user_id == user.id and not superuser:
        raise Conflict(f"{username!r} is the last owner of {cid!r}; make someone else owner first")
    store.remove_organiser(cid, user.id, by)
