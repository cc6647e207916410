"""The FastAPI application: JSON API, pages, static files, error mapping and background scoring."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from referee.platform.core.errors import RefereeError
from referee.platform.store import Store
from referee.platform.web import access

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# /docs runs the vendored Swagger UI (static/swagger, from npm's swagger-ui-dist) with its inline
# start-up script; nothing may come from another origin
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")


def create_app(workspace: str | Path | Store, *, run_scheduler: bool = True, scheduler_interval: float = 2.0,
               poll_interval: float | None = None, max_upload_bytes: int | None = None,
               secure_cookies: bool = False, allow_signup: bool = True) -> FastAPI:
    """Build the app for a workspace. With ``run_scheduler`` a background loop scores pending
    submissions of every competition while the app runs (``referee serve``); ``max_upload_bytes``
    caps every upload below the competition's own limits; ``secure_cookies`` marks the sign-in
    cookie Secure even when the app sees plain http (behind a TLS-terminating proxy);
    ``allow_signup`` lets visitors create accounts (``referee serve --no-signup`` turns it off)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    from referee import __version__
    from referee.platform.controller.loop import ScoringLoop
    from referee.platform.web import (
        accounts,
        api,
        hosting,
        pages,
        participate,
        phases,
        teams,
    )
    from referee.platform.web.throttle import LoginThrottle

    store = workspace if isinstance(workspace, Store) else Store(workspace)
    loop = ScoringLoop(store, interval=scheduler_interval, poll_interval=poll_interval) if run_scheduler else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                loop.stop()

    app = FastAPI(title="referee", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Submissions, status and leaderboards of referee competitions. "
                              "Authenticate with `Authorization: Bearer <token>`: a personal token (your account "
                              "page, or `POST /api/tokens`), a team token or a host token (`referee token ...`).")
    app.state.store = store
    app.state.scoring_loop = loop
    app.state.max_upload_bytes = max_upload_bytes
    app.state.secure_cookies = secure_cookies
    app.state.allow_signup = allow_signup
    app.state.login_throttle = LoginThrottle()
    for module in (api, accounts, teams, hosting, phases, participate, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        """Swagger UI from the packaged assets: works without any network."""
        page = get_swagger_ui_html(openapi_url="/openapi.json", title="referee API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")
        page.headers["content-security-policy"] = DOCS_CSP
        return page

    @app.exception_handler(RefereeError)
    async def referee_error(request: Request, exc: RefereeError) -> Response:
        status, code, extra = access.error_status(exc)
        headers = access.error_headers(exc)
        if request.url.path.startswith("/api/"):
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            return JSONResponse({"error": code, "message": str(exc), **extra}, status_code=status, headers=headers)
        if status == 401 and request.method == "GET":
            return pages.login_redirect(request)
        page = pages.render_error(request, status, code, str(exc))
        page.headers.update(headers)
        return page

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """A parameter of the wrong type or value: 422 like every other error (not FastAPI's ``detail``)."""
        message = validation_message(exc)
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"error": "invalid_request", "message": message}, status_code=422)
        return pages.render_error(request, 422, "invalid_request", message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """Unknown routes and wrong methods: JSON under /api, an HTML page elsewhere."""
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        if request.url.path.startswith(("/api/", "/static/")) or request.method != "GET":
            return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code,
                                headers=getattr(exc, "headers", None))
        return pages.render_error(request, exc.status_code, code, "there is no such page" if exc.status_code == 404
                                  else str(exc.detail))

    app.add_middleware(SecurityHeaders)
    return app


def validation_message(exc: RequestValidationError) -> str:
    """``field: problem`` for each error, e.g. ``mode: Input should be 'best', 'latest' or 'all'``."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header", "cookie")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


class SecurityHeaders:
    """Pure ASGI middleware (leaves streaming request bodies alone): CSP and friends on our pages."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                            (b"x-frame-options", b"DENY")]
                if any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers) and \
                        not any(k == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
