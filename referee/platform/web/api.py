"""JSON API under ``/api``: submissions, status, leaderboards; host actions (re-run, cancel, export).

Authentication is ``Authorization: Bearer <token>``: a personal token of a signed-up user, a team
token or a host token. Errors are JSON ``{"error": code, "message": text}`` with the HTTP status of
``access.error_status``. Accounts and teams live in ``accounts.py`` and ``teams.py``, the
organisers' tools in ``hosting.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from referee.platform.core.errors import NotFound, RefereeError
from referee.platform.leaderboard import build as lbm
from referee.platform.leaderboard.render import renderer
from referee.platform.reports.views import submission_detail
from referee.platform.store import Store
from referee.platform.web import access
from referee.platform.web.auth import Principal
from referee.platform.web.listing import scored_rows
from referee.platform.web.uploads import accept_upload

router = APIRouter(prefix="/api", tags=["api"])
bearer = HTTPBearer(auto_error=False, description="A personal token (account page or `referee remote login`), "
                                                   "a team token or a host token (`referee token ...`).")

Split = Literal["public", "private"]
Mode = Literal["best", "latest", "all"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or an unknown or revoked one"},
    403: {"description": "the token may not do this (e.g. a team asking for a private leaderboard)"},
    404: {"description": "no such competition or submission (or not yours)"},
}
MAX_PAGE = 1000

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "a prediction file or a container image tarball (.tar)"},
        "phase": {"type": "string", "description": "phase name (default: the open one)"},
        "description": {"type": "string", "description": "optional: what this submission is (method, changes)"},
        "team": {"type": "string", "description": "organisers only: the (existing) team to submit for"},
        "baseline": {"type": "string", "description": "organisers only: file a baseline entry under this label "
                                                      "(shown for comparison, ranked as no team)"}}}}}}}


def store_of(request: Request) -> Store:
    return request.app.state.store


def poke(request: Request, cid: str) -> None:
    """Wake the background scoring loop (when the app runs one) for competition ``cid``."""
    loop = getattr(request.app.state, "scoring_loop", None)
    if loop is not None:
        loop.poke(cid)


def principal(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal | None:
    """The caller (None when anonymous); a bad token is 401 rather than anonymous."""
    return access.principal_from(store_of(request), cred.credentials if cred is not None else None)


@router.get("/health", summary="Liveness and background scoring state")
def health(request: Request) -> dict[str, Any]:
    loop = getattr(request.app.state, "scoring_loop", None)
    return {"ok": True, "scheduler": bool(loop and loop.alive), "scheduler_runs": loop.runs if loop else 0}


@router.get("/me", summary="Who the presented token belongs to", responses=_ERRORS)
def me(request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    if who is None:
        raise access.WebError(401, "unauthorized", "no token given")
    out: dict[str, Any] = {"role": who.role, "team": who.team, "competition_id": who.competition_id,
                           "token_id": who.token_id}
    if who.is_user:
        store = store_of(request)
        assert who.user_id is not None
        out["username"] = who.username
        out["teams"] = [{"competition_id": t.competition_id, "team": t.name} for t in store.teams_of_user(who.user_id)]
    return out


@router.get("/competitions", summary="Loaded competitions")
def competitions(request: Request) -> list[dict[str, Any]]:
    store = store_of(request)
    return [access.public_competition(store.get_competition(r.id), store) for r in store.list_competitions()]


@router.get("/competitions/{cid}", summary="One competition: phases, metrics, format, limits", responses=_ERRORS)
def competition(cid: str, request: Request) -> dict[str, Any]:
    store = store_of(request)
    return access.public_competition(access.get_competition(store, cid), store)


@router.post("/competitions/{cid}/submissions", status_code=201, openapi_extra=UPLOAD_BODY,
             summary="Upload a submission (multipart field 'file')",
             responses={**_ERRORS, 413: {"description": "larger than the competition's upload limit"},
                        415: {"description": "not multipart/form-data"},
                        422: {"description": "rejected by validation (the message says where and why)"},
                        429: {"description": "a submission limit (per day, total, concurrent) is reached"}})
async def upload(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    # the database is read in the thread pool: the event loop never waits on SQLite
    store = store_of(request)
    comp = await run_in_threadpool(access.get_competition, store, cid)
    if who is None:
        access.principal_from(store, None, required=True)
    assert who is not None
    sid = await accept_upload(request, store, comp, who, cap=request.app.state.max_upload_bytes)
    poke(request, cid)
    sub = await run_in_threadpool(store.get_submission, sid)
    return {"id": sid, "status": sub.status, "kind": sub.kind, "sha256": sub.sha256, "team": sub.team,
            "phase": sub.phase, "url": f"/api/submissions/{sid}", "page": f"/submissions/{sid}"}


@router.get("/competitions/{cid}/submissions",
            summary="Your team's submissions (all of them, for the organisers), oldest first, paged, with the "
                    "primary score of each on the splits you see and whether your team picked it",
            description="`limit` and `offset` page through the list; the response carries `X-Total-Count` and, "
                        "when there are more, a `Link: <...>; rel=\"next\"` header.", responses=_ERRORS)
def list_submissions(cid: str, request: Request, response: Response, team: str | None = None,
                     limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0),
                     who: Principal | None = Depends(principal)) -> list[dict[str, Any]]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    if who is None:
        access.principal_from(store, None, required=True)
    place = access.seat(store, who, cid)
    if not place.can_view_all:
        if not place.team:
            raise access.WebError(403, "forbidden", place.elsewhere)
        team = place.team
    rows, total = store.submissions_page(cid, team=team, limit=limit, offset=offset, newest_first=False)
    response.headers["X-Total-Count"] = str(total)
    if offset + len(rows) < total:
        nxt = request.url.include_query_params(offset=offset + len(rows), limit=limit)
        response.headers["Link"] = f'<{nxt}>; rel="next"'
    return scored_rows(store, comp, rows, place)


@router.get("/submissions/{sid}", summary="Status, failure reason, log tail and scores of a submission",
            responses=_ERRORS)
def get_submission(sid: int, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    sub, place = access.visible_submission(store, who, sid)
    return access.redact_detail(submission_detail(store, sid), place, access.team_splits(store, place, sub))


@router.get("/competitions/{cid}/leaderboard", summary="A phase's leaderboard (as its visibility allows)",
            description="`phase` defaults to the open one. A leaderboard that is not public (a private one "
                        "until the organisers publish it) is for the organisers only. A team's own entry "
                        "is repeated under `your_entry`.", responses=_ERRORS)
def leaderboard(cid: str, request: Request, split: Split = "public", phase: str | None = None, mode: Mode = "best",
                who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    state = access.board(store, comp, phase, split)
    place = access.seat(store, who, cid)
    access.check_board_visible(place, state)
    out = lbm.build(store, comp, phase=state.phase, split=split, mode=mode).to_dict()
    out["visibility"] = state.visibility
    if place.team:
        out["your_entry"] = next((e for e in out["entries"] if e["team"].casefold() == place.team.casefold()), None)
    return out


@router.post("/submissions/{sid}/rerun", summary="Host: score a finished submission again", responses=_ERRORS)
def rerun(sid: int, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = require_submission_admin(store, who, sid)
    access.rerun_submission(store, sid)
    poke(request, place.competition_id)
    return {"id": sid, "status": store.get_submission(sid).status}


def require_submission_admin(store: Store, who: Principal | None, sid: int) -> access.Seat:
    """An organiser (admin or better) of the submission's competition; others get 401/403 (or 404
    for a submission they may not even see)."""
    if who is None:
        raise access.WebError(401, "unauthorized", "a token of an organiser is required")
    try:
        sub = store.get_submission(sid)
    except NotFound:
        raise access.WebError(404, "not_found", f"no submission #{sid}") from None
    return access.require_organiser(access.seat(store, who, sub.competition_id))


@router.post("/submissions/{sid}/cancel", summary="Host: cancel a pending or running submission",
             responses={**_ERRORS, 409: {"description": "the submission already finished (its status is kept)"}})
def cancel(sid: int, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    require_submission_admin(store, who, sid)
    return {"id": sid, "status": access.cancel(store, sid)}


@router.get("/competitions/{cid}/export", summary="Organisers: export a leaderboard (json, csv, md, html, or a "
                                                 "format a plugin adds)", responses=_ERRORS)
def export(cid: str, request: Request, format: str = Query("json", description="json, csv, md, html, table, or "
                                                                                "a format a plugin adds"),
           split: Split = "private", phase: str | None = None, mode: Mode = "best",
           who: Principal | None = Depends(principal)) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    access.require_organiser(access.seat(store, who, cid), "viewer")
    return export_response(store, cid, format, split=split, mode=mode, phase=access.phase_name(comp, phase))


def export_response(store: Store, cid: str, fmt: str, *, split: str, mode: str, phase: str | None) -> Response:
    """A leaderboard as a download in ``fmt`` (any format of the renderer registry)."""
    try:
        render = renderer(fmt)
    except RefereeError as exc:
        raise access.WebError(400, "bad_request", str(exc)) from None
    lb = lbm.build(store, access.get_competition(store, cid), phase=phase or None, split=split, mode=mode)
    name = f"{cid}-{lb.phase}-{split}-{mode}.{render.extension}"
    return Response(render.render(lb), media_type=render.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
