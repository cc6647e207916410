"""Accounts: sign-up, personal API tokens, the account page.

A user signs up with a user name and a password (argon2id); the pages keep a session in the
HttpOnly cookie, scripts use personal tokens (``POST /api/tokens`` with the user name and password,
or the account page), which act as the user everywhere the API takes a token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from referee.platform.core.errors import RefereeError
from referee.platform.web import access
from referee.platform.web.api import _ERRORS, principal, store_of
from referee.platform.web.auth import (
    Principal,
    create_session,
    create_user,
    create_user_token,
    hash_token,
    list_tokens,
    revoke_token,
)
from referee.platform.web.pages import (
    check_same_origin,
    login_redirect,
    render,
    require_csrf,
    safe_next,
    set_login_cookie,
    viewer,
)

router = APIRouter()
MAX_LABEL = 100


class SignUp(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    email: str | None = Field(default=None, max_length=254)


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    label: str | None = Field(default=None, max_length=MAX_LABEL)


def _check_signup_open(request: Request) -> None:
    if not request.app.state.allow_signup:
        raise access.WebError(403, "forbidden", "sign-up is switched off on this server; ask the host for an account")


# -- API --------------------------------------------------------------------------------------------
@router.post("/api/users", status_code=201, tags=["accounts"], summary="Sign up (a user name and a password)",
             responses={403: {"description": "sign-up is switched off"},
                        409: {"description": "the user name is taken"},
                        400: {"description": "the name or password breaks a rule (the message says which)"}})
def api_signup(body: SignUp, request: Request) -> dict[str, Any]:
    _check_signup_open(request)
    user = create_user(store_of(request), body.username, body.password, body.email)
    return {"username": user.username, "created_at": user.created_at}


@router.post("/api/tokens", status_code=201, tags=["accounts"],
             summary="A new personal API token, for a user name and password (shown once)",
             responses={401: {"description": "wrong user name or password"},
                        429: {"description": "too many failed attempts for this name (see Retry-After)"}})
def api_create_token(body: Credentials, request: Request) -> dict[str, Any]:
    store = store_of(request)
    user = request.app.state.login_throttle.verify(store, body.username, body.password)
    if user is None:
        raise access.WebError(401, "unauthorized", "wrong user name or password")
    token = create_user_token(store, user.id, label=(body.label or "").strip() or None)
    return {"token": token, "id": hash_token(token)[:12], "username": user.username}


@router.get("/api/tokens", tags=["accounts"], summary="Your personal tokens (never their secrets)",
            responses=_ERRORS)
def api_list_tokens(request: Request, who: Principal | None = Depends(principal)) -> list[dict[str, Any]]:
    user = access.require_user(who)
    return list_tokens(store_of(request), user_id=user.user_id)


@router.delete("/api/tokens/{token_id}", tags=["accounts"], summary="Revoke one of your personal tokens",
               responses=_ERRORS)
def api_revoke_token(token_id: str, request: Request, who: Principal | None = Depends(principal)) -> dict[str, Any]:
    user = access.require_user(who)
    revoke_token(store_of(request), token_id, user_id=user.user_id)
    return {"id": token_id, "revoked": True}


# -- pages ------------------------------------------------------------------------------------------
@router.get("/signup", response_class=HTMLResponse, include_in_schema=False)
def signup_form(request: Request, next: str = "/") -> HTMLResponse:
    _check_signup_open(request)
    return render(request, "signup.html.j2", title="Sign up — referee", next=safe_next(next), error=None,
                  username="", email="")


@router.post("/signup", include_in_schema=False)
def signup(request: Request, username: str = Form(""), email: str = Form(""), password: str = Form(""),
           password2: str = Form(""), next: str = Form("/")) -> Response:
    check_same_origin(request)
    _check_signup_open(request)
    store = store_of(request)
    try:
        if password != password2:
            raise RefereeError("the two passwords differ; type the same one twice")
        user = create_user(store, username, password, email)
    except RefereeError as exc:
        status, _, _ = access.error_status(exc)
        return render(request, "signup.html.j2", status=status, title="Sign up — referee", next=safe_next(next),
                      error=str(exc), username=username, email=email)
    return set_login_cookie(request, create_session(store, user.id), safe_next(next))


def _account_page(request: Request, who: Principal, *, new_token: str | None = None,
                  status: int = 200) -> HTMLResponse:
    store = store_of(request)
    assert who.user_id is not None
    tokens = [t for t in list_tokens(store, user_id=who.user_id) if not t["revoked_at"]]
    teams = store.teams_of_user(who.user_id)
    return render(request, "account.html.j2", status=status, title="Your account — referee", user=who,
                  tokens=tokens, teams=teams, new_token=new_token)


@router.get("/account", response_class=HTMLResponse, include_in_schema=False)
def account_page(request: Request) -> Response:
    who, _ = viewer(request)
    if who is None:
        return login_redirect(request)
    return _account_page(request, access.require_user(who))


@router.post("/account/tokens", include_in_schema=False)
def account_new_token(request: Request, csrf: str = Form(""), label: str = Form("")) -> Response:
    who = access.require_user(require_csrf(request, csrf))
    assert who.user_id is not None
    token = create_user_token(store_of(request), who.user_id, label=label.strip()[:MAX_LABEL] or None)
    return _account_page(request, who, new_token=token, status=201)


@router.post("/account/tokens/{token_id}/revoke", include_in_schema=False)
def account_revoke_token(request: Request, token_id: str, csrf: str = Form("")) -> Response:
    who = access.require_user(require_csrf(request, csrf))
    revoke_token(store_of(request), token_id, user_id=who.user_id)
    return RedirectResponse("/account", status_code=303)
