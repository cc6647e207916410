"""Server-rendered pages: competitions, leaderboards (with SVG plots), submission pages, upload form.

Browsers sign in with a user name and password (a page session, ``rfs_...``) or by pasting a token
once (``/login``); either is kept in an HttpOnly, SameSite=Strict cookie (Secure over https, or always with ``referee serve --secure-cookies``). Every state-changing
form post must come from this site (its ``Origin``, else its ``Referer``, names the request's own
host: cross-site is 403, which also stops login CSRF), and every form but the login also carries a
per-token CSRF value; the upload form sends it before the file, so a bad one is refused before the
file is read. No JavaScript is used.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from referee.platform.controller import phases
from referee.platform.core.errors import RefereeError
from referee.platform.core.text import safe_text
from referee.platform.leaderboard import build as lbm
from referee.platform.leaderboard.plots import interval_plot
from referee.platform.leaderboard.render import cell_html, renderers
from referee.platform.reports.submission import submission_fragment_html
from referee.platform.reports.views import (
    submission_detail,
    submission_table,
)
from referee.platform.store import Store
from referee.platform.web import access
from referee.platform.web.api import export_response, poke, store_of
from referee.platform.web.auth import (
    Principal,
    authenticate,
    check_csrf,
    create_session,
    csrf_token,
    end_session,
)
from referee.platform.web.listing import scored_rows
from referee.platform.web.uploads import accept_upload, runs_images, upload_limit

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).parent / "templates"
REFRESH_SECONDS = 2


@lru_cache(maxsize=1)
def environment() -> Any:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=_visible)
    env.filters.update(num=fmt_number, when=fmt_time, size=fmt_size)
    env.globals.update(cell_html=cell_html)
    return env


def _visible(value: Any) -> Any:
    """Every ``{{ value }}`` a page prints: control characters of a (team-controlled) string shown as
    escapes before autoescaping; markup the templates built themselves is left alone."""
    from markupsafe import Markup
    if isinstance(value, str) and not isinstance(value, Markup):
        return safe_text(value, multiline=True)
    return value


def fmt_number(v: Any, digits: int = 5) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def fmt_time(s: str | None) -> str:
    if not s:
        return "—"
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        return s
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def viewer(request: Request) -> tuple[Principal | None, str | None]:
    """The signed-in principal (from the cookie) and its raw token; a stale cookie is anonymous.
    Looked up once per request (the route and the page template both ask)."""
    found: tuple[Principal | None, str | None] | None = getattr(request.state, "viewer", None)
    if found is None:
        token = request.cookies.get(access.COOKIE)
        who = authenticate(store_of(request), token, sessions=True) if token else None
        found = request.state.viewer = (who, token if who else None)
    return found


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    who, token = viewer(request)
    ctx.setdefault("title", "referee")
    ctx.setdefault("who", who)  # a competition's pages pass the viewer's seat there instead
    ctx.setdefault("account", who)
    html = environment().get_template(name).render(request_path=request.url.path,
                                                   csrf=csrf_token(token) if token else "", **ctx)
    return HTMLResponse(html, status_code=status)


def render_error(request: Request, status: int, code: str, message: str) -> HTMLResponse:
    return render(request, "error.html.j2", status=status, title=f"{status} — referee", status_code=status,
                  code=code, message=message)


def login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def safe_next(path: str | None) -> str:
    """Only same-site paths: never '//host' or 'https://...' (open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _host_port(netloc: str, scheme: str) -> str:
    """``host[:port]`` in lower case, without the scheme's default port."""
    netloc = netloc.strip().lower()
    host, sep, port = netloc.rpartition(":")
    if sep and "]" not in port and port == _DEFAULT_PORTS.get(scheme):
        return host
    return netloc


def check_same_origin(request: Request) -> None:
    """403 unless a state-changing form post comes from this site.

    A browser names the page a post comes from in ``Origin`` (else ``Referer``); it must be the
    host the request was sent to (``Host``, or ``X-Forwarded-Host`` behind a proxy: a cross-site
    form cannot set either). A client that sends neither header (curl, scripts) is no browser
    being driven by another site, so it passes; the CSRF values still guard the other forms.
    """
    origin = request.headers.get("origin")
    source = origin if origin is not None else request.headers.get("referer")
    if source is None:
        return
    parts = urlsplit(source.strip()) if source.strip().lower() != "null" else None
    if parts is None or parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise access.WebError(403, "forbidden", "this form was posted from another site (or a hidden origin); "
                                                "open the page on this site and submit it from there")
    scheme = parts.scheme
    ours = {_host_port(h, scheme) for h in [request.headers.get("host", "")]
            + request.headers.get("x-forwarded-host", "").split(",") if h.strip()}
    if _host_port(parts.netloc.rpartition("@")[2], scheme) not in ours:
        raise access.WebError(403, "forbidden", "this form was posted from another site; "
                                                "open the page on this site and submit it from there")


def secure_cookies(request: Request) -> bool:
    return bool(getattr(request.app.state, "secure_cookies", False)) or request.url.scheme == "https"


def require_csrf(request: Request, presented: str | None) -> Principal:
    check_same_origin(request)
    who, token = viewer(request)
    if who is None or token is None:
        raise access.WebError(401, "unauthorized", "sign in first")
    if not check_csrf(token, presented):
        raise access.WebError(403, "forbidden", "the form is stale or came from another site; reload and retry")
    return who


# -- pages -----------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    store = store_of(request)
    comps = [access.public_competition(store.get_competition(r.id), store) for r in store.list_competitions()]
    return render(request, "index.html.j2", competitions=comps)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html.j2", title="Sign in — referee", next=safe_next(next), error=None,
                  username="")


@router.post("/login")
def login(request: Request, token: str = Form(""), username: str = Form(""), password: str = Form(""),
          next: str = Form("/")) -> Response:
    """Sign in with a user name and password (a new page session) or with a pasted token."""
    check_same_origin(request)  # login CSRF: another site must not sign a browser in as someone else
    store = store_of(request)
    token = token.strip()
    if not token and username.strip():
        user = request.app.state.login_throttle.verify(store, username, password)
        if user is None:
            return render(request, "login.html.j2", status=401, title="Sign in — referee", next=safe_next(next),
                          username=username, error="Wrong user name or password.")
        return set_login_cookie(request, create_session(store, user.id), safe_next(next))
    who = authenticate(store, token)
    if who is None:
        return render(request, "login.html.j2", status=401, title="Sign in — referee", next=safe_next(next),
                      username="", error="That token is unknown or has been revoked. Ask the host for a new one.")
    target = safe_next(next)
    if target == "/" and who.competition_id:
        target = f"/c/{who.competition_id}"
    return set_login_cookie(request, token, target)


def set_login_cookie(request: Request, token: str, target: str) -> Response:
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(access.COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies(request),
                    max_age=30 * 86400, path="/")
    return resp


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    require_csrf(request, csrf)
    end_session(store_of(request), request.cookies.get(access.COOKIE, ""))
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(access.COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies(request))
    return resp


@router.get("/c/{cid}", response_class=HTMLResponse)
def leaderboard_page(request: Request, cid: str, split: str = "public", mode: str = "best",
                     phase: str | None = None) -> HTMLResponse:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    who = access.seat(store, viewer(request)[0], cid)
    if split not in ("public", "private") or mode not in ("best", "latest", "all"):
        raise access.WebError(400, "bad_request", "split must be public or private; mode best, latest or all")
    states = {s: access.board(store, comp, phase, s) for s in ("public", "private")}
    access.check_board_visible(who, states[split])
    lb = lbm.build(store, comp, phase=states[split].phase, split=split, mode=mode)
    # organisers open every entry, a team its own (never a baseline)
    visible = {e.submission_id for e in lb.rows() if who.can_view_all or (
        who.team and not e.baseline and e.team.casefold() == who.team.casefold())}
    mine = next((e for e in lb.entries if who.team and e.team.casefold() == who.team.casefold()), None)
    return render(request, "leaderboard.html.j2", title=f"{comp.title} — referee", comp=comp, lb=lb, who=who,
                  columns=[lb.column(k) for k in lb.columns_extra], info=access.public_competition(comp, store),
                  splits=access.allowed_splits(who, states), visible=visible, interval_svg=interval_plot(lb),
                  tier_column=lb.column_of_kind("tier"), plots=lbm.plots(store, comp, lb),
                  export_formats=sorted(f for f in renderers() if f != "table"), state=states[split],
                  can_submit=bool(who.is_host or who.team), mine=mine, page="leaderboard")


@router.get("/c/{cid}/export")
def export_page(request: Request, cid: str, format: str = "csv", split: str = "private", mode: str = "best",
                phase: str | None = None) -> Response:
    """The host's download links (cookie-authenticated twin of ``GET /api/competitions/{cid}/export``)."""
    store = store_of(request)
    comp = access.get_competition(store, cid)
    access.require_organiser(access.seat(store, viewer(request)[0], cid), "viewer")
    if split not in ("public", "private") or mode not in ("best", "latest", "all"):
        raise access.WebError(400, "bad_request", "split: public or private; mode: best, latest or all")
    return export_response(store, cid, format, split=split, mode=mode, phase=access.phase_name(comp, phase))


@router.get("/c/{cid}/submit", response_class=HTMLResponse)
def submit_form(request: Request, cid: str) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    who, _ = viewer(request)
    if who is None:
        return login_redirect(request)
    return _submit_page(request, comp, who)


def _submit_page(request: Request, comp: Any, principal: Principal, *, status: int = 200,
                 error: str | None = None, error_code: str | None = None) -> HTMLResponse:
    store = store_of(request)
    who = access.seat(store, principal, comp.id)
    if not who.is_host and not who.team:
        raise access.WebError(403, "forbidden", who.elsewhere)
    recent = submission_table(store, comp.id, team=None if who.is_host else who.team, limit=10)
    quota = phases.quota(store, comp, who.team) if who.team and not who.is_host else None
    must_accept = bool(not who.is_host and principal.is_user and principal.user_id is not None
                       and phases.rules_required(comp)
                       and not phases.has_accepted_rules(store, comp, principal.user_id))
    return render(request, "submit.html.j2", status=status, title=f"Submit — {comp.title}", comp=comp, who=who,
                  info=access.public_competition(comp, store), recent=recent, quota=quota, page="submit",
                  must_accept=must_accept,
                  limit=upload_limit(comp, cap=request.app.state.max_upload_bytes),
                  image_limit=upload_limit(comp, "image.tar", request.app.state.max_upload_bytes),
                  takes_images=runs_images(comp),
                  error=error, error_code=error_code)


@router.post("/c/{cid}/submit")
async def submit_upload(request: Request, cid: str) -> Response:
    check_same_origin(request)
    store = store_of(request)
    # the database is read in the thread pool: the event loop never waits on SQLite
    comp = await run_in_threadpool(access.get_competition, store, cid)
    who, token = await run_in_threadpool(viewer, request)
    if who is None or token is None:
        raise access.WebError(401, "unauthorized", "sign in before uploading")

    def check(fields: dict[str, str]) -> None:
        """The fields before the file part: the form puts its CSRF value first, so a forged or
        stale post is refused before any of the file is read."""
        if not check_csrf(token, fields.get("csrf")):
            raise access.WebError(403, "forbidden", "the form is stale or came from another site (or sent its "
                                                    "'csrf' field after the file); reload and retry")

    try:
        sid = await accept_upload(request, store, comp, who, check_fields=check,
                                  cap=request.app.state.max_upload_bytes)
    except RefereeError as exc:
        status, code, _ = access.error_status(exc)
        if status in (401, 403, 404):
            raise
        message = str(exc)
        page = await run_in_threadpool(lambda: _submit_page(request, comp, who, status=status, error=message,
                                                           error_code=code))
        page.headers.update(access.error_headers(exc))
        return page
    poke(request, cid)
    return RedirectResponse(f"/submissions/{sid}", status_code=303)


PAGE_SIZE = 50


@router.get("/c/{cid}/submissions", response_class=HTMLResponse)
def submissions_page(request: Request, cid: str, page: int = 1) -> Response:
    store = store_of(request)
    comp = access.get_competition(store, cid)
    principal, _ = viewer(request)
    if principal is None:
        return login_redirect(request)
    who = access.seat(store, principal, cid)
    if not who.can_view_all and not who.team:
        raise access.WebError(403, "forbidden", who.elsewhere)
    page = max(1, page)
    subs, total = store.submissions_page(cid, team=None if who.can_view_all else who.team, limit=PAGE_SIZE,
                                         offset=(page - 1) * PAGE_SIZE)
    rows = scored_rows(store, comp, subs, who)
    team = who.team if who.team and not who.is_host else None
    quotas = [phases.quota(store, comp, team, p.name) for p in comp.phases
              if p.contains(dt.datetime.now(dt.timezone.utc))] if team else []
    return render(request, "submissions.html.j2", title=f"Submissions — {comp.title}", comp=comp, rows=rows,
                  who=who, page=page, pages=max(1, -(-total // PAGE_SIZE)), total=total, quotas=quotas,
                  picks_open={p.name: phases.picks_open(store, comp, p.name) for p in comp.phases},
                  selection={p.name: p.final_selection for p in comp.phases}, tab="submissions")


@router.get("/submissions/{sid}", response_class=HTMLResponse)
def submission_page(request: Request, sid: int) -> Response:
    store = store_of(request)
    principal, _ = viewer(request)
    if principal is None:
        return login_redirect(request)
    sub, who = access.visible_submission(store, principal, sid)
    splits = access.team_splits(store, who, sub)
    d = access.redact_detail(submission_detail(store, sid), who, splits)
    comp = store.get_competition(sub.competition_id)
    return render(request, "submission.html.j2", title=f"Submission #{sid} — referee", comp=comp, d=d, who=who,
                  refresh=REFRESH_SECONDS if d["status"] in ("pending", "running") else None,
                  report_html=_submission_report(store, sid, splits))


def _submission_report(store: Store, sid: int, splits: list[str]) -> str:
    """The plugins' report panels of a submission (e.g. the CheckList matrix) as HTML, from the
    scores of the splits the viewer sees."""
    try:
        return submission_fragment_html(store, sid, splits=splits)
    except Exception:  # a plugin's panel must never take the page down
        return ""


def require_submission_admin(request: Request, sid: int, csrf: str) -> access.Seat:
    """The CSRF check, then an organiser (admin or better) of the submission's competition."""
    principal = require_csrf(request, csrf)
    _, who = access.visible_submission(store_of(request), principal, sid)
    return access.require_organiser(who)


@router.post("/submissions/{sid}/rerun")
def rerun_form(request: Request, sid: int, csrf: str = Form("")) -> Response:
    place = require_submission_admin(request, sid, csrf)
    access.rerun_submission(store_of(request), sid, by="host (web)")
    poke(request, place.competition_id)
    return RedirectResponse(f"/submissions/{sid}", status_code=303)


@router.post("/submissions/{sid}/cancel")
def cancel_form(request: Request, sid: int, csrf: str = Form("")) -> Response:
    require_submission_admin(request, sid, csrf)
    access.cancel(store_of(request), sid)
    return RedirectResponse(f"/submissions/{sid}", status_code=303)
