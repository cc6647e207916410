"""The organisers' tools: registrations, teams, organisers, bulk re-runs, hiding, baselines, downloads
(publishing a phase's leaderboard: ``phases.py``).

Viewers see; admins act on submissions, teams and registrations; owners also manage organisers
(``controller/participation.py``). A hidden submission leaves every leaderboard (its team's next
best counts) and the reason is shown to its team and in a note below the leaderboard; a
disqualified team leaves them altogether, with its reason in that note, and cannot submit.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from referee.platform.controller import participation as pt
from referee.platform.controller.phases import phase_info
from referee.platform.core.errors import NotFound, RefereeError
from referee.platform.core.jobs import FINAL_STATUSES
from referee.platform.store import Store, SubmissionRow
from referee.platform.web import access
from referee.platform.web.api import (
    _ERRORS,
    poke,
    principal,
    require_submission_admin,
    store_of,
)
from referee.platform.web.auth import Principal
from referee.platform.web.pages import login_redirect, render, require_csrf, viewer
from referee.platform.web.teams import team_view

router = APIRouter()
MAX_REASON = 500
FINAL = [s.value for s in FINAL_STATUSES]


class Decision(BaseModel):
    approve: bool


class Role(BaseModel):
    role: Literal["viewer", "admin", "owner"]


class Reason(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class Baseline(BaseModel):
    baseline: bool = True


FinalStatus = Literal["scored", "failed", "cancelled"]


def _all_final() -> list[FinalStatus]:
    return ["scored", "failed", "cancelled"]


class BulkRerun(BaseModel):
    ids: list[int] | None = Field(default=None, description="only these submissions (default: every match)")
    status: list[FinalStatus] = Field(default_factory=_all_final)
    team: str | None = None
    phase: str | None = None


def organiser(store: Store, who: Principal | None, cid: str, wanted: str = "admin") -> access.Seat:
    access.get_competition(store, cid)
    return access.require_organiser(access.seat(store, who, cid), wanted)


def by_label(place: access.Seat) -> str:
    return place.label if place.who is not None else "host"


def registration_view(r: Any) -> dict[str, Any]:
    return {"username": r.username, "status": r.status, "created_at": r.created_at, "decided_at": r.decided_at,
            "decided_by": r.decided_by}


def hide(store: Store, sid: int, reason: str | None, place: access.Seat) -> SubmissionRow:
    return store.set_hidden(sid, " ".join(reason.split())[:MAX_REASON] if reason else None, by_label(place))


# -- API --------------------------------------------------------------------------------------------
@router.get("/api/competitions/{cid}/registrations", tags=["host"], responses=_ERRORS,
            summary="Organisers: registrations (filter by status)")
def api_registrations(cid: str, request: Request, status: Literal["pending", "approved", "denied"] | None = None,
                      who: Principal | None = Depends(principal)) -> list[dict[str, Any]]:
    store = store_of(request)
    organiser(store, who, cid, "viewer")
    return [registration_view(r) for r in store.registrations(cid, status)]


@router.post("/api/competitions/{cid}/registrations/{username}", tags=["host"], responses=_ERRORS,
             summary="Organisers: approve or deny a registration")
def api_decide(cid: str, username: str, body: Decision, request: Request,
               who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid)
    reg = pt.decide_registration(store, store.get_competition(cid), username, body.approve, by=by_label(place))
    return registration_view(reg)


@router.get("/api/competitions/{cid}/organisers", tags=["host"], responses=_ERRORS,
            summary="Organisers: who organises the competition, with their roles")
def api_organisers(cid: str, request: Request, who: Principal | None = Depends(principal)) -> list[dict[str, Any]]:
    store = store_of(request)
    organiser(store, who, cid, "viewer")
    return [{"username": o.username, "role": o.role, "added_at": o.added_at, "added_by": o.added_by}
            for o in store.organisers(cid)]


@router.put("/api/competitions/{cid}/organisers/{username}", tags=["host"], responses=_ERRORS,
            summary="Owners: make a user an organiser (viewer, admin or owner)")
def api_set_organiser(cid: str, username: str, body: Role, request: Request,
                      who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid, "owner")
    user = pt.set_organiser(store, cid, username, body.role, by=by_label(place))
    return {"username": user.username, "role": body.role}


@router.delete("/api/competitions/{cid}/organisers/{username}", tags=["host"], responses=_ERRORS,
               summary="Owners: remove an organiser")
def api_remove_organiser(cid: str, username: str, request: Request,
                         who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid, "owner")
    pt.remove_organiser(store, cid, username, by=by_label(place), superuser=place.organiser == pt.SUPERUSER)
    return {"username": username, "removed": True}


@router.post("/api/competitions/{cid}/teams/{name}/disqualify", tags=["host"], responses=_ERRORS,
             summary="Admins: disqualify a team (off every leaderboard, with the reason; no more submissions)")
def api_disqualify(cid: str, name: str, body: Reason, request: Request,
                   who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid)
    return team_view(store, store.set_team_disqualified(cid, name, " ".join(body.reason.split()), by_label(place)))


@router.delete("/api/competitions/{cid}/teams/{name}/disqualify", tags=["host"], responses=_ERRORS,
               summary="Admins: reinstate a disqualified team")
def api_reinstate(cid: str, name: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid)
    return team_view(store, store.set_team_disqualified(cid, name, None, by_label(place)))


@router.post("/api/competitions/{cid}/rerun", tags=["host"], responses=_ERRORS,
             summary="Admins: re-run every finished submission that matches (one transaction)")
def api_bulk_rerun(cid: str, body: BulkRerun, request: Request,
                   who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid)
    if body.phase is not None:
        store.get_competition(cid).phase(body.phase)  # unknown phase: 400 naming the known ones
    ids = store.request_rerun_many(cid, ids=body.ids, statuses=body.status, team=body.team, phase=body.phase,
                                   by=by_label(place))
    poke(request, cid)
    return {"count": len(ids), "ids": ids}


@router.post("/api/submissions/{sid}/hide", tags=["host"], responses=_ERRORS,
             summary="Admins: take a submission off the leaderboards, with a reason its team sees")
def api_hide(sid: int, body: Reason, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = require_submission_admin(store, who, sid)
    sub = hide(store, sid, body.reason, place)
    return {"id": sid, "hidden_reason": sub.hidden_reason}


@router.post("/api/submissions/{sid}/unhide", tags=["host"], responses=_ERRORS,
             summary="Admins: put a hidden submission back on the leaderboards")
def api_unhide(sid: int, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = require_submission_admin(store, who, sid)
    hide(store, sid, None, place)
    return {"id": sid, "hidden_reason": None}


@router.post("/api/submissions/{sid}/baseline", tags=["host"], responses=_ERRORS,
             summary="Admins: flag a submission as a baseline (shown for comparison, ranked as no team)")
def api_baseline(sid: int, body: Baseline, request: Request,
                 who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = require_submission_admin(store, who, sid)
    sub = store.set_baseline(sid, body.baseline, by_label(place))
    return {"id": sid, "baseline": bool(sub.baseline)}


def submission_file(store: Store, sub: SubmissionRow) -> FileResponse:
    """The submitted file from the blob store (a prediction file, a script or Dockerfile context
    archive, an image tarball); a submission that names an image on the engine has none."""
    path = store.blob_path(sub.sha256)
    if not path.is_file():
        raise NotFound(f"submission #{sub.id} has no stored file (it names the container image "
                       f"{sub.filename!r}; export it with `docker save`)")
    name = sub.filename or f"submission-{sub.id}"
    return FileResponse(path, filename=f"{sub.id}-{name}", media_type="application/octet-stream")


@router.get("/api/submissions/{sid}/file", tags=["api"], responses=_ERRORS,
            summary="Download a submission's file (organisers: any; teams: their own)")
def api_download(sid: int, request: Request, who: Principal | None = Depends(principal)) -> Response:
    store = store_of(request)
    sub, _ = access.visible_submission(store, who, sid)
    return submission_file(store, sub)


# -- pages ------------------------------------------------------------------------------------------
@router.get("/submissions/{sid}/file", include_in_schema=False)
def download_page(request: Request, sid: int) -> Response:
    principal_, _ = viewer(request)
    if principal_ is None:
        return login_redirect(request)
    store = store_of(request)
    sub, _ = access.visible_submission(store, principal_, sid)
    return submission_file(store, sub)


def _submission_admin(request: Request, sid: int, csrf: str) -> tuple[Store, access.Seat]:
    principal_ = require_csrf(request, csrf)
    store = store_of(request)
    _, place = access.visible_submission(store, principal_, sid)
    return store, access.require_organiser(place)


@router.post("/submissions/{sid}/hide", include_in_schema=False)
def hide_form(request: Request, sid: int, csrf: str = Form(""), reason: str = Form("")) -> Response:
    store, place = _submission_admin(request, sid, csrf)
    if not reason.strip():
        raise access.WebError(422, "invalid_request", "give a reason: the team sees it")
    hide(store, sid, reason, place)
    return RedirectResponse(f"/submissions/{sid}", status_code=303)


@router.post("/submissions/{sid}/unhide", include_in_schema=False)
def unhide_form(request: Request, sid: int, csrf: str = Form("")) -> Response:
    store, place = _submission_admin(request, sid, csrf)
    hide(store, sid, None, place)
    return RedirectResponse(f"/submissions/{sid}", status_code=303)


@router.post("/submissions/{sid}/baseline", include_in_schema=False)
def baseline_form(request: Request, sid: int, csrf: str = Form(""), baseline: str = Form("1")) -> Response:
    store, place = _submission_admin(request, sid, csrf)
    store.set_baseline(sid, baseline == "1", by_label(place))
    return RedirectResponse(f"/submissions/{sid}", status_code=303)


def _host_page(request: Request, cid: str, *, status: int = 200, error: str | None = None,
               notice: str | None = None) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    principal_, _ = viewer(request)
    if principal_ is None:
        return login_redirect(request)
    place = access.require_organiser(access.seat(store, principal_, cid), "viewer")
    sizes = store.team_sizes(cid)
    teams = [{**team_view(store, t), "size": sizes.get(t.id, 0)} for t in store.teams(cid)]
    return render(request, "host.html.j2", status=status, title=f"Organise — {comp.title}", comp=comp, who=place,
                  pending=store.registrations(cid, "pending"), registrations=store.registrations(cid),
                  teams=teams, organisers=store.organisers(cid), error=error, notice=notice,
                  is_owner=pt.role_at_least(place.organiser, "owner"), phases=phase_info(store, comp))


@router.get("/c/{cid}/host", response_class=HTMLResponse, include_in_schema=False)
def host_page(request: Request, cid: str) -> Response:
    return _host_page(request, cid)


def _host_action(request: Request, cid: str, csrf: str, wanted: str, action: Any) -> Response:
    principal_ = require_csrf(request, csrf)
    store = store_of(request)
    place = organiser(store, principal_, cid, wanted)
    try:
        notice = action(store, place)
    except RefereeError as exc:
        status, _, _ = access.error_status(exc)
        return _host_page(request, cid, status=status, error=str(exc))
    if notice:
        return _host_page(request, cid, notice=notice)
    return RedirectResponse(f"/c/{cid}/host", status_code=303)


@router.post("/c/{cid}/host/registrations/{username}", include_in_schema=False)
def decide_form(request: Request, cid: str, username: str, csrf: str = Form(""),
                decision: str = Form("")) -> Response:
    return _host_action(request, cid, csrf, "admin", lambda s, p: pt.decide_registration(
        s, s.get_competition(cid), username, decision == "approve", by=by_label(p)) and None)


@router.post("/c/{cid}/host/teams", include_in_schema=False)
def host_team_form(request: Request, cid: str, csrf: str = Form(""), name: str = Form("")) -> Response:
    return _host_action(request, cid, csrf, "admin", lambda s, p: pt.host_create_team(s, cid, name) and None)


@router.post("/c/{cid}/host/teams/{name}/disqualify", include_in_schema=False)
def disqualify_form(request: Request, cid: str, name: str, csrf: str = Form(""), reason: str = Form("")) -> Response:
    def act(s: Store, p: access.Seat) -> None:
        if not reason.strip():
            raise RefereeError("give a reason: it is shown below the leaderboard")
        s.set_team_disqualified(cid, name, " ".join(reason.split())[:MAX_REASON], by_label(p))
    return _host_action(request, cid, csrf, "admin", act)


@router.post("/c/{cid}/host/teams/{name}/reinstate", include_in_schema=False)
def reinstate_form(request: Request, cid: str, name: str, csrf: str = Form("")) -> Response:
    return _host_action(request, cid, csrf, "admin",
                        lambda s, p: s.set_team_disqualified(cid, name, None, by_label(p)) and None)


@router.post("/c/{cid}/host/organisers", include_in_schema=False)
def organiser_form(request: Request, cid: str, csrf: str = Form(""), username: str = Form(""),
                   role: str = Form("viewer")) -> Response:
    def act(s: Store, p: access.Seat) -> None:
        if role == "remove":
            pt.remove_organiser(s, cid, username, by=by_label(p), superuser=p.organiser == pt.SUPERUSER)
        else:
            pt.set_organiser(s, cid, username, role, by=by_label(p))
    return _host_action(request, cid, csrf, "owner", act)


@router.post("/c/{cid}/host/rerun", include_in_schema=False)
def bulk_rerun_form(request: Request, cid: str, csrf: str = Form(""), status: str = Form("scored"),
                    team: str = Form(""), phase: str = Form("")) -> Response:
    def act(s: Store, p: access.Seat) -> str:
        statuses = FINAL if status == "all" else [status]
        ids = s.request_rerun_many(cid, statuses=statuses, team=team.strip() or None, phase=phase.strip() or None,
                                   by=by_label(p))
        poke(request, cid)
        return f"{len(ids)} submission(s) queued to run again"
    return _host_action(request, cid, csrf, "admin", act)
