"""Registration and teams, for participants: the API routes and the competition's Team page.

The rules are ``controller/participation.py``'s: register (open, or approved by an organiser),
then create a team or join one with its invitation code; one team per participant per
competition, at most ``participation.max_team_size`` members.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from referee.platform.controller import participation as pt
from referee.platform.core.errors import RefereeError
from referee.platform.store import Store, TeamRow
from referee.platform.web import access
from referee.platform.web.api import _ERRORS, principal, store_of
from referee.platform.web.auth import Principal
from referee.platform.web.pages import login_redirect, render, require_csrf, viewer

router = APIRouter()


class TeamName(BaseModel):
    name: str = Field(max_length=200)


class InviteCode(BaseModel):
    code: str = Field(max_length=200)


def team_view(store: Store, team: TeamRow, *, members: bool = True, invite: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": team.name, "created_at": team.created_at,
                           "disqualified": team.disqualified_reason}
    if members:
        out["members"] = [{"username": m.username, "role": m.role, "joined_at": m.joined_at}
                          for m in store.members(team.id)]
    if invite:
        out["invite_code"] = team.invite_code
    return out


def _user_and_comp(request: Request, who: Principal | None, cid: str) -> tuple[Store, Any, int]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    user = access.require_user(who)
    assert user.user_id is not None
    return store, comp, user.user_id


def my_team(store: Store, cid: str, uid: int) -> TeamRow:
    team = store.team_of_user(cid, uid)
    if team is None:
        raise access.WebError(404, "not_found", f"you are in no team of {cid!r}; create or join one")
    return team


# -- API --------------------------------------------------------------------------------------------
@router.get("/api/competitions/{cid}/registration", tags=["teams"], responses=_ERRORS,
            summary="Your registration for a competition, and your team there")
def api_registration(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store, comp, uid = _user_and_comp(request, who, cid)
    reg = store.registration(cid, uid)
    team = store.team_of_user(cid, uid)
    return {"competition_id": cid, "registration": comp.participation.registration,
            "status": reg.status if reg else None, "team": team.name if team else None}


@router.post("/api/competitions/{cid}/registration", status_code=201, tags=["teams"],
             summary="Register for a competition (approved at once, or pending the organisers' approval)",
             responses={**_ERRORS, 403: {"description": "registration is closed"}})
def api_register(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store, comp, uid = _user_and_comp(request, who, cid)
    reg = pt.register(store, comp, uid)
    return {"competition_id": cid, "status": reg.status}


@router.get("/api/competitions/{cid}/teams", tags=["teams"], responses=_ERRORS,
            summary="The competition's teams (members: organisers only)")
def api_teams(cid: str, request: Request, who: Principal | None = Depends(principal)) -> list[dict[str, Any]]:
    store = store_of(request)
    access.get_competition(store, cid)
    full = access.seat(store, who, cid).can_view_all
    sizes = store.team_sizes(cid)
    return [{**team_view(store, t, members=full), "size": sizes.get(t.id, 0)} for t in store.teams(cid)]


@router.post("/api/competitions/{cid}/teams", status_code=201, tags=["teams"],
             summary="Create a team: a registered participant becomes its captain; an organiser creates an "
                     "empty one", responses={**_ERRORS, 409: {"description": "the name is taken, or you are "
                                                                            "already in a team"}})
def api_create_team(cid: str, body: TeamName, request: Request,
                    who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    if who is not None and not who.is_user:  # a host token creates an empty team; a team token may not
        access.require_organiser(access.seat(store, who, cid))
        return team_view(store, pt.host_create_team(store, cid, body.name), invite=True)
    user = access.require_user(who)
    assert user.user_id is not None
    return team_view(store, pt.create_team(store, comp, user.user_id, body.name), invite=True)


@router.get("/api/competitions/{cid}/team", tags=["teams"], responses=_ERRORS,
            summary="Your team: members and invitation code")
def api_my_team(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store, _, uid = _user_and_comp(request, who, cid)
    return team_view(store, my_team(store, cid, uid), invite=True)


@router.post("/api/competitions/{cid}/team/join", tags=["teams"],
             summary="Join a team with its invitation code",
             responses={**_ERRORS, 409: {"description": "the team is full, or you are already in a team"}})
def api_join(cid: str, body: InviteCode, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store, comp, uid = _user_and_comp(request, who, cid)
    team = pt.join_team(store, comp, uid, body.code)
    return team_view(store, team, invite=True)


@router.post("/api/competitions/{cid}/team/invite", tags=["teams"], responses=_ERRORS,
             summary="A new invitation code for your team (the old one stops working)")
def api_rotate_invite(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store, comp, uid = _user_and_comp(request, who, cid)
    return {"invite_code": pt.rotate_invite(store, comp, uid)}


@router.post("/api/competitions/{cid}/team/leave", tags=["teams"], responses=_ERRORS,
             summary="Leave your team (the team and its submissions stay)")
def api_leave(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store, comp, uid = _user_and_comp(request, who, cid)
    return {"left": pt.leave_team(store, comp, uid).name}


# -- the Team page ----------------------------------------------------------------------------------
def _team_page(request: Request, cid: str, *, status: int = 200, error: str | None = None,
               code: str = "") -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    principal_, _ = viewer(request)
    if principal_ is None:
        return login_redirect(request)
    place = access.seat(store, principal_, cid)
    team = None
    if principal_.is_user and place.team:
        assert principal_.user_id is not None
        row = store.team_of_user(cid, principal_.user_id)
        team = team_view(store, row, invite=True) if row else None
    return render(request, "team.html.j2", status=status, title=f"Team — {comp.title}", comp=comp, who=place,
                  team=team, error=error, code=code, mode=comp.participation.registration,
                  max_size=comp.participation.max_team_size)


@router.get("/c/{cid}/team", response_class=HTMLResponse, include_in_schema=False)
def team_page(request: Request, cid: str) -> Response:
    return _team_page(request, cid)


@router.get("/c/{cid}/join", response_class=HTMLResponse, include_in_schema=False)
def join_link(request: Request, cid: str, code: str = "") -> Response:
    """The invitation link: the Team page with the join form filled in."""
    return _team_page(request, cid, code=code[:200])


def _team_action(request: Request, cid: str, csrf: str, action: Any) -> Response:
    """Run a participant's form action; errors re-render the Team page with the message."""
    store = store_of(request)
    comp = access.get_competition(store, cid)
    who = access.require_user(require_csrf(request, csrf))
    assert who.user_id is not None
    try:
        action(store, comp, who.user_id)
    except RefereeError as exc:
        status, _, _ = access.error_status(exc)
        if status in (401,):
            raise
        return _team_page(request, cid, status=status, error=str(exc))
    return RedirectResponse(f"/c/{cid}/team", status_code=303)


@router.post("/c/{cid}/register", include_in_schema=False)
def register_form(request: Request, cid: str, csrf: str = Form("")) -> Response:
    return _team_action(request, cid, csrf, pt.register)


@router.post("/c/{cid}/team/create", include_in_schema=False)
def create_form(request: Request, cid: str, csrf: str = Form(""), name: str = Form("")) -> Response:
    return _team_action(request, cid, csrf, lambda s, c, u: pt.create_team(s, c, u, name))


@router.post("/c/{cid}/team/join", include_in_schema=False)
def join_form(request: Request, cid: str, csrf: str = Form(""), code: str = Form("")) -> Response:
    return _team_action(request, cid, csrf, lambda s, c, u: pt.join_team(s, c, u, code))


@router.post("/c/{cid}/team/invite", include_in_schema=False)
def invite_form(request: Request, cid: str, csrf: str = Form("")) -> Response:
    return _team_action(request, cid, csrf, pt.rotate_invite)


@router.post("/c/{cid}/team/leave", include_in_schema=False)
def leave_form(request: Request, cid: str, csrf: str = Form("")) -> Response:
    return _team_action(request, cid, csrf, pt.leave_team)
