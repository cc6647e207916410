"""The web service: a JSON API and server-rendered leaderboard pages (``referee serve``).

FastAPI, uvicorn and jinja2 are imported only by the modules of this package, never by the CLI's
start-up path; ``create_app`` is re-exported lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(workspace: Any, **kwargs: Any) -> Any:
    """Build the FastAPI application for a workspace (see ``referee.platform.web.app.create_app``)."""
    from referee.platform.web.app import create_app as _create_app
    return _create_app(workspace, **kwargs)
