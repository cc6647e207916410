"""Who may see and do what, shared by the JSON API and the pages.

Rules: a team sees its own submissions (anything else is 404, so ids do not leak), never a private
leaderboard or private-split scores (403); hosts see and do everything. Re-running a submission
resets it and deletes its scores in one transaction, so readers never see a half state.
"""

from __future__ import annotations

from typing import Any

from referee.platform.core.errors import (
    BudgetExceeded,
    LimitExceeded,
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

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        self.status = status
        self.code = code
        self.extra = extra
        super().__init__(message)


def error_status(exc: Exception) -> tuple[int, str, dict[str, Any]]:
    """HTTP status, code and extra fields for an error a user caused."""
    if isinstance(exc, WebError):
        return exc.status, exc.code, dict(exc.extra)
    if isinstance(exc, SubmissionRejected):
        extra = {k: v for k, v in (("line", exc.line), ("source", exc.source), ("hint", exc.hint)) if v is not None}
        return 422, "submission_rejected", extra
    if isinstance(exc, LimitExceeded):
        return 429, "limit_exceeded", {}
    if isinstance(exc, NotFound):
        return 404, "not_found", {}
    if isinstance(exc, BudgetExceeded):
        return 402, "budget_exceeded", {}
    if isinstance(exc, SpecError):
        return 400, "bad_request", {}
    return 400, "bad_request", {}


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
                                                "(ask the host for a team token)")
        return None
    who = authenticate(store, token)
    if who is None:
        raise WebError(401, "unauthorized", "the token is unknown or revoked; ask the host for a new one")
    return who


def require_host(who: Principal | None) -> Principal:
    if who is None:
        raise WebError(401, "unauthorized", "a host token is required")
    if not who.is_host:
        raise WebError(403, "forbidden", "only the host may do this")
    return who


def check_split_visible(who: Principal | None, split: str) -> None:
    """Private leaderboards are for hosts only."""
    if split == "private" and not (who and who.is_host):
        if who is None:
            raise WebError(401, "unauthorized", "the private leaderboard needs a host token")
        raise WebError(403, "forbidden", "the private leaderboard is visible to the host only")


def get_competition(store: Store, cid: str) -> Any:
    try:
        return store.get_competition(cid)
    except NotFound:
        raise WebError(404, "not_found", f"no competition {cid!r}") from None


def visible_submission(store: Store, who: Principal | None, sid: int) -> SubmissionRow:
    """The submission if ``who`` may see it; otherwise 404 (the same answer as for a missing one)."""
    if who is None:
        raise WebError(401, "unauthorized", "sign in with your team token to see submissions")
    try:
        sub = store.get_submission(sid)
    except NotFound:
        sub = None
    if sub is None or not who.can_see(sub):
        raise WebError(404, "not_found", f"no submission #{sid}")
    return sub


def redact_detail(detail: dict[str, Any], who: Principal) -> dict[str, Any]:
    """Drop what a team must not see of its own submission: private-split scores, host notes."""
    if who.is_host:
        return detail
    out = dict(detail)
    out.pop("host_notes", None)
    out["scores"] = [s for s in detail["scores"] if s["split"] != "private"]
    return out


def allowed_splits(who: Principal | None) -> list[str]:
    return ["public", "private"] if who and who.is_host else ["public"]


def public_competition(comp: Any, store: Store) -> dict[str, Any]:
    """What anyone may know about a competition (never the reference path or the spec file)."""
    now_phase = comp.phase()
    n_subs, n_teams = store.count_submissions(comp.id)
    return {"id": comp.id, "title": comp.title, "description": comp.description.strip(),
            "current_phase": now_phase.name,
            "phases": [{"name": p.name, "start": p.start.isoformat() if p.start else None,
                        "end": p.end.isoformat() if p.end else None} for p in comp.phases],
            "metrics": [{"key": m.key, "scorer": m.scorer, "primary": m.primary} for m in comp.metrics],
            "prediction": {"format": comp.prediction.format, "id_column": comp.prediction.id_column,
                           "columns": comp.prediction.columns, "type": comp.prediction.type,
                           "max_bytes": comp.prediction.max_bytes},
            "limits": comp.limits.model_dump(), "submissions": n_subs, "teams": n_teams}


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
    return cancel_submission(store, sid)
