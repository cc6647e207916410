"""What a team sees and does in a competition besides submitting: its pages, the data, the rules,
final picks and quotas, as pages and as API routes.

The pages (``/c/ID/overview``, ``/data``, ``/rules``, ``/evaluation``) show the competition's
Markdown pages (``pages/*.md``, stored at load; rendered by markdown-it with raw HTML off) next to
what referee knows: phases and their windows, the public inputs of each phase and the starting kit
to download, each phase's metrics with their signatures, limits and final selection rule. With
``participation.accept_rules`` a participant accepts the rules before downloading or submitting.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from referee.platform.controller import phases
from referee.platform.controller.competitions import PAGES, inputs_of_phase
from referee.platform.core.errors import NotFound
from referee.platform.store import CompetitionFileRow, Store, SubmissionRow
from referee.platform.web import access
from referee.platform.web.api import _ERRORS, principal, store_of
from referee.platform.web.auth import Principal
from referee.platform.web.pages import login_redirect, render, require_csrf, viewer

router = APIRouter()
DOWNLOADS = ("starting_kit", "input")  # kinds of competition file a participant may download


@lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def page_markdown(store: Store, cid: str, name: str) -> str | None:
    """The Markdown text of one of the competition's pages, or None when it has none."""
    row = next((r for r in store.competition_files(cid, "page") if r.name == name), None)
    if row is None:
        return None
    return store.blob_path(row.sha256).read_text(encoding="utf-8", errors="replace")


def page_html(store: Store, cid: str, name: str) -> str:
    """A page rendered to HTML (raw HTML in the Markdown is shown as text; unsafe links are refused)."""
    text = page_markdown(store, cid, name)
    return _markdown().render(text) if text else ""


def downloads(store: Store, cid: str) -> list[CompetitionFileRow]:
    return [r for r in store.competition_files(cid) if r.kind in DOWNLOADS]


def phases_of_files(comp: Any) -> dict[str, list[str]]:
    """The phases whose submissions see each inputs zip, by the zip's name."""
    out: dict[str, list[str]] = {}
    for p in comp.phase_names():
        name = inputs_of_phase(comp, p)
        if name is not None:
            out.setdefault(name, []).append(p)
    return out


def evaluation(comp: Any) -> list[dict[str, Any]]:
    """Each phase's metrics (with direction, parameters and signature), split rule and selection."""
    from referee.plugins.manager import get_plugin_manager
    from referee.scoring.engine import metric_signature

    pm = get_plugin_manager()
    out = []
    for p in comp.phases:
        view = comp.for_phase(p.name)
        metrics = []
        for m in view.metrics:
            params = view.metric_params(m)
            try:
                scorer = pm.scorer(m.scorer)
                signature = metric_signature(scorer, params)
                direction = m.direction or ("maximize" if scorer.higher_is_better else "minimize")
            except NotFound:
                signature, direction = "(scorer not installed)", m.direction or "?"
            metrics.append({"key": m.key, "scorer": m.scorer, "primary": m.primary, "direction": direction,
                            "params": params, "signature": signature})
        split = view.effective_split
        rule = (f"by the reference's {split.column!r} column" if split.column else
                "every item public" if split.public_fraction == 1.0 else
                f"{split.public_fraction:.0%} of the items public (seed {split.seed}), the rest private")
        out.append({"phase": p.name, "metrics": metrics, "split": rule, "limits": view.limits.model_dump(),
                    "final_selection": p.final_selection.model_dump()})
    return out


# -- who may download, accept, pick ------------------------------------------------------------------------
def check_download(store: Store, comp: Any, who: Principal | None) -> None:
    """Data downloads: anyone, unless the competition asks participants to accept its rules first
    (then a signed-up user who accepted them, an organiser, or a team token)."""
    if not phases.rules_required(comp):
        return
    if who is None:
        raise access.WebError(401, "unauthorized", f"sign in and accept the rules of {comp.id!r} to download "
                                                   "its data")
    place = access.seat(store, who, comp.id)
    if place.can_view_all or not who.is_user:
        return
    assert who.user_id is not None
    phases.require_rules_accepted(store, comp, who.user_id)


def file_response(store: Store, comp: Any, name: str) -> FileResponse:
    row = next((r for r in downloads(store, comp.id) if r.name == name), None)
    if row is None:
        raise access.WebError(404, "not_found", f"competition {comp.id!r} has no file {name!r} to download")
    return FileResponse(store.blob_path(row.sha256), filename=row.name, media_type="application/zip")


def accepted_at(store: Store, cid: str, who: Principal | None) -> str | None:
    """When a signed-up user accepted the competition's rules (None: not yet, or not a user)."""
    if who is None or not who.is_user:
        return None
    assert who.user_id is not None
    row = store.rules_accepted(cid, who.user_id)
    return row.accepted_at if row else None


def team_seat(store: Store, who: Principal | None, cid: str) -> access.Seat:
    """A team's seat in ``cid`` (401 anonymous, 403 for someone in no team of it)."""
    if who is None:
        raise access.WebError(401, "unauthorized", "sign in first")
    place = access.seat(store, who, cid)
    if not place.team:
        raise access.WebError(403, "forbidden", place.elsewhere)
    return place


def own_submission(store: Store, who: Principal | None, sid: int) -> tuple[SubmissionRow, access.Seat]:
    """A submission of the caller's own team (404 for any other, as for a missing one)."""
    sub, place = access.visible_submission(store, who, sid)
    if not place.team or sub.team.casefold() != place.team.casefold():
        raise access.WebError(404, "not_found", f"no submission #{sid} of your team")
    return sub, place


# -- API ---------------------------------------------------------------------------------------------------
@router.get("/api/competitions/{cid}/pages/{name}", tags=["competition"], responses=_ERRORS,
            summary="One of the competition's pages (overview, rules, evaluation, data) as Markdown")
def api_page(cid: str, name: str, request: Request) -> dict[str, Any]:
    store = store_of(request)
    access.get_competition(store, cid)
    text = page_markdown(store, cid, name) if name in PAGES else None
    if text is None:
        raise access.WebError(404, "not_found", f"competition {cid!r} has no page {name!r} (its pages: "
                              f"{', '.join(r.name for r in store.competition_files(cid, 'page')) or 'none'})")
    return {"name": name, "markdown": text}


@router.get("/api/competitions/{cid}/files", tags=["competition"], responses=_ERRORS,
            summary="What participants may download: the starting kit and each phase's public inputs")
def api_files(cid: str, request: Request) -> list[dict[str, Any]]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    used_by = phases_of_files(comp)
    return [{"kind": r.kind, "name": r.name, "size": r.size, "sha256": r.sha256, "phases": used_by.get(r.name, []),
             "url": f"/api/competitions/{cid}/files/{r.name}"} for r in downloads(store, cid)]


@router.get("/api/competitions/{cid}/files/{name}", tags=["competition"],
            responses={**_ERRORS, 403: {"description": "the rules are not accepted yet"}},
            summary="Download the starting kit or a phase's public inputs (a zip)")
def api_file(cid: str, name: str, request: Request, who: Principal | None = Depends(principal)) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    check_download(store, comp, who)
    return file_response(store, comp, name)


@router.get("/api/competitions/{cid}/rules", tags=["competition"], responses=_ERRORS,
            summary="The rules (Markdown), whether they must be accepted, and whether you did")
def api_rules(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    return {"markdown": page_markdown(store, cid, phases.RULES_PAGE), "required": phases.rules_required(comp),
            "accepted_at": accepted_at(store, cid, who)}


@router.post("/api/competitions/{cid}/rules/accept", tags=["competition"], responses=_ERRORS,
             summary="Accept the competition's rules (needed before downloading or submitting when it asks)")
def api_accept_rules(cid: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    user = access.require_user(who)
    assert user.user_id is not None
    if page_markdown(store, cid, phases.RULES_PAGE) is None:
        raise access.WebError(404, "not_found", f"competition {cid!r} has no rules page to accept")
    phases.accept_rules(store, comp, user.user_id)
    return {"competition_id": cid, "accepted": True}


@router.get("/api/competitions/{cid}/quota", tags=["teams"], responses=_ERRORS,
            summary="Your team's remaining submissions in a phase (default: the open one)")
def api_quota(cid: str, request: Request, phase: str | None = None, team: str | None = None,
              who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    name = access.phase_name(comp, phase)
    if who is not None and team and access.seat(store, who, cid).can_view_all:
        from referee.platform.controller.participation import require_team
        return phases.quota(store, comp, require_team(store, cid, team).name, name).to_dict()
    place = team_seat(store, who, cid)
    assert place.team is not None
    return phases.quota(store, comp, place.team, name).to_dict()


@router.get("/api/competitions/{cid}/picks", tags=["teams"], responses=_ERRORS,
            summary="Final picks of a phase (default: the open one): your team's, or every team's for organisers")
def api_picks(cid: str, request: Request, phase: str | None = None,
              who: Principal | None = Depends(principal)) -> dict[str, Any]:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    name = access.phase_name(comp, phase)
    if who is None:
        raise access.WebError(401, "unauthorized", "sign in first")
    place = access.seat(store, who, cid)
    if not place.can_view_all and not place.team:
        raise access.WebError(403, "forbidden", place.elsewhere)
    rows = store.picks(cid, name, None if place.can_view_all else place.team)
    rule = comp.phase(name).final_selection
    return {"phase": name, "rule": rule.rule, "max": rule.max, "open": phases.picks_open(store, comp, name),
            "picks": [{"submission_id": p.submission_id, "team": p.team, "picked_at": p.picked_at,
                       "picked_by": p.picked_by} for p in rows]}


def _pick(store: Store, who: Principal | None, sid: int, on: bool) -> dict[str, Any]:
    sub, place = own_submission(store, who, sid)
    comp = store.get_competition(sub.competition_id)
    assert place.team is not None
    by = place.label
    if on:
        phases.pick(store, comp, sid, place.team, by=by)
    else:
        phases.unpick(store, comp, sid, place.team, by=by)
    return {"id": sid, "phase": sub.phase, "picked": on,
            "picks": [p.submission_id for p in store.picks(comp.id, sub.phase, place.team)]}


_PICK_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 403: {"description": "the phase does not let teams pick (best_public), or the submission failed"},
    409: {"description": "picks are final (the phase ended or its private leaderboard is published), or the "
                         "team already picked as many as it may"}}


@router.post("/api/submissions/{sid}/pick", tags=["teams"], responses=_PICK_ERRORS,
             summary="Pick one of your team's submissions for its final (private) entry")
def api_pick(sid: int, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    return _pick(store_of(request), who, sid, True)


@router.delete("/api/submissions/{sid}/pick", tags=["teams"], responses=_PICK_ERRORS,
               summary="Withdraw a pick")
def api_unpick(sid: int, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    return _pick(store_of(request), who, sid, False)


# -- pages -------------------------------------------------------------------------------------------------
PageName = Literal["overview", "data", "rules", "evaluation"]


def _content_page(request: Request, cid: str, name: PageName, *, status: int = 200,
                  error: str | None = None) -> HTMLResponse:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    who, _ = viewer(request)
    place = access.seat(store, who, cid)
    info = access.public_competition(comp, store)
    pages = {r.name for r in store.competition_files(cid, "page")}
    return render(request, f"{name}.html.j2", status=status, title=f"{name.capitalize()} — {comp.title}",
                  comp=comp, who=place, page=name, body=page_html(store, cid, name) if name in pages else "",
                  error=error, info=info, phases=info["phases"], files=downloads(store, cid) if name == "data" else [],
                  used_by=phases_of_files(comp), rules_required=phases.rules_required(comp),
                  accepted=accepted_at(store, cid, who), has_rules=phases.RULES_PAGE in pages,
                  evaluation=evaluation(comp) if name == "evaluation" else [],
                  now=dt.datetime.now(dt.timezone.utc).isoformat())


@router.get("/c/{cid}/overview", response_class=HTMLResponse, include_in_schema=False)
def overview_page(request: Request, cid: str) -> HTMLResponse:
    return _content_page(request, cid, "overview")


@router.get("/c/{cid}/data", response_class=HTMLResponse, include_in_schema=False)
def data_page(request: Request, cid: str) -> HTMLResponse:
    return _content_page(request, cid, "data")


@router.get("/c/{cid}/rules", response_class=HTMLResponse, include_in_schema=False)
def rules_page(request: Request, cid: str) -> HTMLResponse:
    return _content_page(request, cid, "rules")


@router.get("/c/{cid}/evaluation", response_class=HTMLResponse, include_in_schema=False)
def evaluation_page(request: Request, cid: str) -> HTMLResponse:
    return _content_page(request, cid, "evaluation")


@router.post("/c/{cid}/rules/accept", include_in_schema=False)
def accept_form(request: Request, cid: str, csrf: str = Form("")) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    who = access.require_user(require_csrf(request, csrf))
    assert who.user_id is not None
    phases.accept_rules(store, comp, who.user_id)
    return RedirectResponse(f"/c/{cid}/data", status_code=303)


@router.get("/c/{cid}/files/{name}", include_in_schema=False)
def download_file(request: Request, cid: str, name: str) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    who, _ = viewer(request)
    if who is None and phases.rules_required(comp):
        return login_redirect(request)
    check_download(store, comp, who)
    return file_response(store, comp, name)


def _pick_form(request: Request, sid: int, csrf: str, on: bool) -> Response:
    who = require_csrf(request, csrf)
    store = store_of(request)
    _pick(store, who, sid, on)
    sub = store.get_submission(sid)
    return RedirectResponse(f"/c/{sub.competition_id}/submissions", status_code=303)


@router.post("/submissions/{sid}/pick", include_in_schema=False)
def pick_form(request: Request, sid: int, csrf: str = Form("")) -> Response:
    return _pick_form(request, sid, csrf, True)


@router.post("/submissions/{sid}/unpick", include_in_schema=False)
def unpick_form(request: Request, sid: int, csrf: str = Form("")) -> Response:
    return _pick_form(request, sid, csrf, False)
