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


def create_app(workspace: str | Path | Store, *, run_scheduler: bool = True, scheduler_interval: float = 2.0,
               poll_interval: float = 0.2, max_upload_bytes: int | None = None,
               secure_cookies: bool = False) -> FastAPI:
    """Build the app for a workspace. With ``run_scheduler`` a background loop scores pending
    submissions of every competition while the app runs (``referee serve``); ``max_upload_bytes``
    caps every upload below the competition's own limits; ``secure_cookies`` marks the sign-in
    cookie Secure even when the app sees plain http (behind a TLS-terminating proxy)."""
    from referee import __version__
    from referee.platform.controller.loop import ScoringLoop
    from referee.platform.web import api, pages

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

    app = FastAPI(title="referee", version=__version__, lifespan=lifespan,
                  description="Submissions, status and leaderboards of referee competitions. "
                              "Authenticate with `Authorization: Bearer <token>` (`referee token create`).")
    app.state.store = store
    app.state.scoring_loop = loop
    app.state.max_upload_bytes = max_upload_bytes
    app.state.secure_cookies = secure_cookies
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(RefereeError)
    async def referee_error(request: Request, exc: RefereeError) -> Response:
        status, code, extra = access.error_status(exc)
        if request.url.path.startswith("/api/"):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"error": code, "message": str(exc), **extra}, status_code=status, headers=headers)
        if status == 401 and request.method == "GET":
            return pages.login_redirect(request)
        return pages.render_error(request, status, code, str(exc))

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
        if scope["type"] != "http" or scope["path"].startswith(("/docs", "/redoc")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                            (b"x-frame-options", b"DENY")]
                if any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
