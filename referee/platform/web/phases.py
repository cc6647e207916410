"""Phases on the web: what each phase is, and the organisers' switches of who sees its leaderboards.

``POST /api/competitions/{cid}/phases/{phase}/publish`` publishes a leaderboard (the private one by
default): every team then sees it and its own rank there, and final picks of that phase are closed.
``PUT .../visibility`` sets ``hidden``, ``host`` or ``public`` (or ``null``: what the spec says).
The Organise page has the same as buttons (``/c/ID/host``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel

from referee.platform.controller import phases
from referee.platform.controller.phases import BoardState
from referee.platform.store import Store
from referee.platform.web import access
from referee.platform.web.api import _ERRORS, principal, store_of
from referee.platform.web.auth import Principal
from referee.platform.web.hosting import _host_action, by_label, organiser

router = APIRouter()

SplitName = Literal["public", "private"]


class Publish(BaseModel):
    split: SplitName = "private"


class Visibility(BaseModel):
    split: SplitName
    visibility: Literal["hidden", "host", "public"] | None


def state_view(state: BoardState) -> dict[str, Any]:
    return {"phase": state.phase, "split": state.split, "visibility": state.visibility, "setting": state.setting,
            "switched_by": state.switched_by, "switched_at": state.switched_at}


@router.get("/api/competitions/{cid}/phases", tags=["competition"], responses=_ERRORS,
            summary="Every phase: window, metrics, limits, who sees its leaderboards, final selection rule")
def api_phases(cid: str, request: Request) -> list[dict[str, Any]]:
    store = store_of(request)
    return phases.phase_info(store, access.get_competition(store, cid))


@router.post("/api/competitions/{cid}/phases/{phase}/publish", tags=["host"], responses=_ERRORS,
             summary="Admins: publish a phase's leaderboard (default: the private one) to every team")
def api_publish(cid: str, phase: str, request: Request, body: Publish | None = None,
                who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid)
    comp = store.get_competition(cid)
    name = access.phase_name(comp, phase)
    return state_view(phases.publish(store, comp, name, by=by_label(place), split=(body or Publish()).split))


@router.put("/api/competitions/{cid}/phases/{phase}/visibility", tags=["host"], responses=_ERRORS,
            summary="Admins: who sees a phase's leaderboard: hidden, host or public (null: as the spec says)")
def api_visibility(cid: str, phase: str, body: Visibility, request: Request,
                   who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    place = organiser(store, who, cid)
    comp = store.get_competition(cid)
    name = access.phase_name(comp, phase)
    return state_view(phases.set_visibility(store, comp, name, body.split, body.visibility, by=by_label(place)))


@router.post("/c/{cid}/host/phases/{phase}/visibility", include_in_schema=False)
def visibility_form(request: Request, cid: str, phase: str, csrf: str = Form(""), split: str = Form("private"),
                    visibility: str = Form("public")) -> Response:
    """The Organise page's buttons: publish, hide, or follow the spec again."""
    def act(store: Store, place: access.Seat) -> str:
        comp = store.get_competition(cid)
        state = phases.set_visibility(store, comp, access.phase_name(comp, phase), split,
                                      None if visibility == "spec" else visibility, by=by_label(place))
        return f"The {state.split} leaderboard of phase {state.phase!r} is now {state.visibility}."
    return _host_action(request, cid, csrf, "admin", act)
