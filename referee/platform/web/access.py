"""Who may see and do what, shared by the JSON API and the pages.

Rules: a team (a team token, or a signed-up member) sees its own submissions (anything else is 404,
so ids do not leak). Who sees a phase's leaderboard, and which scores a team sees on its own
submissions, follows that leaderboard's visibility (``controller/phases.py``): a ``public`` one is
everyone's; under ``host`` a team sees only its own scores; under ``hidden`` (a private leaderboard
until it is published) not even those, and asking for the leaderboard is 403. A competition's
organisers see everything there; admins and owners also act (re-run, cancel, hide, approve,
publish); host tokens do everything everywhere. Re-running a submission resets it and deletes its
scores in one transaction, so readers never see a half state.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from referee.platform.controller import phases
from referee.platform.controller.participation import SUPERUSER, role_at_least
from referee.platform.controller.phases import BoardState
from referee.platform.core.errors import (
    BudgetExceeded,
    Conflict,
    LimitExceeded,
    NotAllowed,
    NotFound,
    RefereeError,
    SpecError,
    SubmissionRejected,
)
from referee.platform.store import Store, SubmissionRow
from referee.platform.web.auth import Principal, authenticate

COOKIE = "referee_token"


class WebError(RefereeError):
    """An error with an HTTP status and a short machine-readable code."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any):
        self.status = status
        self.code = code
        self.extra = extra
        self.headers = headers or {}
        super().__init__(message)


def error_status(exc: Exception) -> tuple[int, str, dict[str, Any]]:
    """HTTP status, code and extra fields for an error a user caused."""
    if isinstance(exc, WebError):
        return exc.status, exc.code, dict(exc.extra)
    if isinstance(exc, SubmissionRejected):
        extra = {k: v for k, v in (("line", exc.line), ("source", exc.source), ("hint", exc.hint)) if v is not None}
        return 422, "submission_rejected", extra
    if isinstance(exc, LimitExceeded):
        return 429, "limit_exceeded", ({"retry_after": math.ceil(exc.retry_after)}
                                       if exc.retry_after is not None else {})
    if isinstance(exc, NotFound):
        return 404, "not_found", {}
    if isinstance(exc, NotAllowed):
        return 403, "forbidden", {}
    if isinstance(exc, Conflict):
        return 409, "conflict", {}
    if isinstance(exc, BudgetExceeded):
        return 402, "budget_exceeded", {}
    if isinstance(exc, SpecError):
        return 400, "bad_request", {}
    return 400, "bad_request", {}


def error_headers(exc: Exception) -> dict[str, str]:
    """Response headers an error carries: ``Retry-After`` on a 429 when the wait is known."""
    if isinstance(exc, WebError):
        return dict(exc.headers)
    if isinstance(exc, LimitExceeded) and exc.retry_after is not None:
        return {"Retry-After": str(math.ceil(exc.retry_after))}
    return {}


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def principal_from(store: Store, token: str | None, *, required: bool = False) -> Principal | None:
    """The principal for a presented token; with ``required``, a missing or bad token is 401."""
    if token is None:
        if required:
            raise WebError(401, "unauthorized", "a token is required: send 'Authorization: Bearer <token>' "
                                                "(a personal token from your account page, or a team token)")
        return None
    who = authenticate(store, token)
    if who is None:
        raise WebError(401, "unauthorized", "the token is unknown or revoked; create a new one on your account "
                                            "page (or ask the host for a new team token)")
    return who


@dataclass(frozen=True)
class Seat:
    """A principal's standing in one competition: the team it acts for, its organiser role
    (``superuser`` for a host token) and, for a signed-up user, its registration."""

    who: Principal | None
    competition_id: str
    team: str | None = None
    organiser: str | None = None
    registration: str | None = None

    @property
    def is_host(self) -> bool:
        """May act on this competition's submissions, teams and registrations (admin or better)."""
        return role_at_least(self.organiser, "admin")

    @property
    def can_view_all(self) -> bool:
        """Sees every submission and the private leaderboard (any organiser)."""
        return self.organiser is not None

    def __bool__(self) -> bool:  # templates: "{% if who %}" means "signed in"
        return self.who is not None

    def member_of(self, competition_id: str) -> bool:
        return self.team is not None and competition_id == self.competition_id

    @property
    def label(self) -> str:
        if self.who is None:
            return "anonymous"
        if not self.who.is_user:
            return self.who.label
        extra = [x for x in (f"team {self.team}" if self.team else None,
                             self.organiser if self.organiser else None) if x]
        return str(self.who.username) + (f" ({', '.join(extra)})" if extra else "")

    @property
    def elsewhere(self) -> str:
        """Why a principal with no place here cannot act (for 403 messages)."""
        if self.who is not None and self.who.role == "team":
            return f"this token belongs to competition {self.who.competition_id!r}, not {self.competition_id!r}"
        if self.who is not None and self.who.is_user:
            return f"you are in no team of {self.competition_id!r}: register, then create or join a team"
        return "sign in first"


def seat(store: Store, who: Principal | None, cid: str) -> Seat:
    """``who``'s standing in competition ``cid``."""
    if who is None:
        return Seat(None, cid)
    if who.is_host:
        return Seat(who, cid, organiser=SUPERUSER)
    if not who.is_user:
        return Seat(who, cid, team=who.team if who.competition_id == cid else None)
    assert who.user_id is not None
    team = store.team_of_user(cid, who.user_id)
    reg = store.registration(cid, who.user_id)
    return Seat(who, cid, team=team.name if team else None, organiser=store.organiser_role(cid, who.user_id),
                registration=reg.status if reg else None)


def require_host(who: Principal | None) -> Principal:
    """The workspace superuser (a host token) only."""
    if who is None:
        raise WebError(401, "unauthorized", "a host token is required")
    if not who.is_host:
        raise WebError(403, "forbidden", "only the host may do this")
    return who


def require_organiser(place: Seat, wanted: str = "admin") -> Seat:
    """401 for the anonymous, 403 unless an organiser of at least ``wanted`` (or the superuser)."""
    if place.who is None:
        raise WebError(401, "unauthorized", "sign in as an organiser of this competition")
    if not role_at_least(place.organiser, wanted):
        raise WebError(403, "forbidden", f"only the competition's organisers ({wanted} or above) may do this")
    return place


def require_user(who: Principal | None) -> Principal:
    """A signed-up user (a session or a personal token)."""
    if who is None:
        raise WebError(401, "unauthorized", "sign in with your account first")
    if not who.is_user:
        raise WebError(403, "forbidden", "this needs a user account (sign up), not a host or team token")
    return who


def check_board_visible(place: Seat, state: BoardState) -> None:
    """A leaderboard that is not ``public`` is for the organisers only (401 anonymous, else 403)."""
    if state.visibility == "public" or place.can_view_all:
        return
    what = f"the {state.split} leaderboard of phase {state.phase!r}"
    if place.who is None:
        raise WebError(401, "unauthorized", f"{what} is not published: sign in as an organiser")
    until = " until the organisers publish it" if state.split == "private" else ""
    raise WebError(403, "forbidden", f"{what} is visible to the host only{until}")


def board(store: Store, comp: Any, phase: str | None, split: str) -> BoardState:
    """The state of the ``split`` leaderboard of ``phase`` (default: the open one); 404 for a phase the
    competition does not have."""
    return phases.board_state(store, comp, phase_name(comp, phase), split)


def phase_name(comp: Any, phase: str | None) -> str:
    """The name of ``phase`` (default: the one open now); 404 naming the known ones when unknown."""
    if phase and phase not in comp.phase_names():
        raise WebError(404, "not_found", f"competition {comp.id!r} has no phase {phase!r}; its phases: "
                                         f"{', '.join(comp.phase_names())}")
    return str(comp.phase(phase or None).name)


def get_competition(store: Store, cid: str) -> Any:
    try:
        return store.get_competition(cid)
    except NotFound:
        raise WebError(404, "not_found", f"no competition {cid!r}") from None


def can_see(place: Seat, sub: SubmissionRow) -> bool:
    """Organisers see every submission of their competition; a team its own (never a baseline)."""
    if place.can_view_all:
        return True
    return place.team is not None and not sub.baseline and sub.team.casefold() == place.team.casefold()


def visible_submission(store: Store, who: Principal | None, sid: int) -> tuple[SubmissionRow, Seat]:
    """The submission and ``who``'s seat in its competition if ``who`` may see it; otherwise 404
    (the same answer as for a missing one)."""
    if who is None:
        raise WebError(401, "unauthorized", "sign in to see submissions")
    try:
        sub = store.get_submission(sid)
    except NotFound:
        sub = None
    place = seat(store, who, sub.competition_id) if sub is not None else None
    if sub is None or place is None or not can_see(place, sub):
        raise WebError(404, "not_found", f"no submission #{sid}")
    return sub, place


def redact_detail(detail: dict[str, Any], place: Seat, splits: Collection[str] = ("public",)) -> dict[str, Any]:
    """Drop what a team must not see of its own submission: scores of the splits it does not see
    (``splits``: by its phase's visibility, ``phases.team_score_splits``), host notes."""
    if place.can_view_all:
        return detail
    out = dict(detail)
    out.pop("host_notes", None)
    out["scores"] = [s for s in detail["scores"] if s["split"] in splits]
    return out


def team_splits(store: Store, place: Seat, sub: SubmissionRow) -> list[str]:
    """The splits whose scores ``place`` sees on submission ``sub``."""
    if place.can_view_all:
        return ["public", "private"]
    comp = store.get_competition(sub.competition_id)
    if sub.phase not in comp.phase_names():
        return ["public"]
    return phases.team_score_splits(store, comp, sub.phase)


def allowed_splits(place: Seat, states: dict[str, BoardState] | None = None) -> list[str]:
    """The leaderboards of one phase (``states`` by split) that ``place`` may open."""
    if place.can_view_all:
        return ["public", "private"]
    if states is None:
        return ["public"]
    return [s for s in ("public", "private") if s in states and states[s].visibility == "public"]


def public_competition(comp: Any, store: Store) -> dict[str, Any]:
    """What anyone may know about a competition (never the reference path or the spec file). The
    top-level ``metrics`` and ``limits`` are those of the phase open now; ``phases`` has each
    phase's own, with who sees its leaderboards and how final entries are chosen."""
    now_phase = comp.for_phase()
    n_subs, n_teams = store.count_submissions(comp.id)
    return {"id": comp.id, "title": comp.title, "description": comp.description.strip(),
            "current_phase": now_phase.phase_name,
            "phases": phases.phase_info(store, comp),
            "metrics": [{"key": m.key, "scorer": m.scorer, "primary": m.primary} for m in now_phase.metrics],
            "prediction": {"format": comp.prediction.format, "id_column": comp.prediction.id_column,
                           "columns": comp.prediction.columns, "type": comp.prediction.type,
                           "max_bytes": comp.prediction.max_bytes},
            "limits": now_phase.limits.model_dump(), "participation": comp.participation.model_dump(),
            "submissions": n_subs, "teams": n_teams}


def rerun_submission(store: Store, sid: int, *, by: str = "host") -> None:
    """Put a finished submission back in the queue (the scheduler's helper), as a web error on conflict."""
    from referee.platform.controller.actions import rerun_submission as rerun
    from referee.platform.core.errors import NotFound, RefereeError
    try:
        rerun(store, sid, by=by)
    except NotFound:
        raise WebError(404, "not_found", f"no submission #{sid}") from None
    except RefereeError as exc:
        raise WebError(409, "conflict", str(exc)) from None


def cancel(store: Store, sid: int) -> str:
    """Cancel through the scheduler's helper (pending at once, running on its backend)."""
    from referee.platform.controller.actions import cancel_submission
    try:
        store.get_submission(sid)
    except NotFound:
        raise WebError(404, "not_found", f"no submission #{sid}") from None
    status = cancel_submission(store, sid)
    if status != "cancelled":
        raise WebError(409, "conflict", f"submission #{sid} is already {status}; only a pending or running "
                                        "submission can be cancelled", current_status=status)
    return status
