"""``referee serve`` (the web service) and ``referee token`` (team and host tokens)."""

from __future__ import annotations

import json
import socket
import sys

import click

from referee.platform.cli.main import open_store


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: pick a free one and print it).")
@click.option("--scheduler/--no-scheduler", default=True, show_default=True,
              help="Score pending submissions in the background while serving.")
@click.option("--interval", type=float, default=2.0, show_default=True,
              help="Seconds between looks for pending submissions.")
@click.option("--max-upload", default=None, metavar="SIZE",
              help="Cap every upload (e.g. 2GiB) below the competitions' own limits.")
@click.option("--secure-cookies", is_flag=True,
              help="Mark the sign-in cookie Secure even though the app sees plain http "
                   "(when a TLS-terminating proxy is in front).")
@click.option("--signup/--no-signup", default=True, show_default=True,
              help="Let visitors create accounts (competitions still decide who may register).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, scheduler: bool, interval: float, max_upload: str | None,
          secure_cookies: bool, signup: bool, log_level: str) -> None:
    """Serve the leaderboard pages and the submission API (OpenAPI at /docs)."""
    import uvicorn

    from referee.platform.core.units import parse_size
    from referee.platform.web.app import create_app

    try:
        cap = parse_size(max_upload) if max_upload else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-upload") from None
    app = create_app(open_store(ctx), run_scheduler=scheduler, scheduler_interval=interval, max_upload_bytes=cap,
                     secure_cookies=secure_cookies, allow_signup=signup)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    freeze_startup_heap()  # before saying where it serves: a client may connect at once
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    click.echo(f"referee: serving {ctx.find_root().obj['workspace']} on http://{shown}:{bound}/ "
               f"(API docs at /docs; background scoring {'on' if scheduler else 'off'})")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level=log_level, proxy_headers=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def freeze_startup_heap() -> None:
    """Load what every request needs (plugins, scorers, the scheduler, templates), then move every
    object alive now out of the garbage collector's sight (``gc.freeze``): they live as long as the
    server. A full collection pauses every request of the process, and its length grows with the
    objects it walks; measured under ``bench/bench_web.py``, this keeps those pauses short."""
    import gc

    from referee.platform.controller import reconcile  # noqa: F401 - the scheduler's imports
    from referee.platform.web.pages import environment
    from referee.plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    pm.scorers()
    environment()
    gc.collect()
    gc.freeze()


@click.group()
def token() -> None:
    """Create, list and revoke web tokens (only their sha256 is stored)."""


@token.command("create")
@click.argument("competition_id")
@click.option("--team", required=True, help="The (existing) team the token submits for.")
@click.option("--create-team", is_flag=True, help="Create the team first when it is new.")
@click.option("--label", default=None, help="A note for `referee token list`.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_create(ctx: click.Context, competition_id: str, team: str, create_team: bool, label: str | None,
                 as_json: bool) -> None:
    """Print a new token for TEAM in COMPETITION_ID (shown once; give it to the team)."""
    from referee.platform.web.auth import create_team_token, hash_token
    tok = create_team_token(open_store(ctx), competition_id, team, label=label, create_team=create_team)
    if as_json:
        click.echo(json.dumps({"token": tok, "id": hash_token(tok)[:12], "team": team,
                               "competition_id": competition_id}))
    else:
        click.echo(tok)


@token.command("host")
@click.option("--revoke-others", is_flag=True, help="Revoke every earlier host token.")
@click.option("--label", default=None)
@click.pass_context
def token_host(ctx: click.Context, revoke_others: bool, label: str | None) -> None:
    """Print a new host token (sees private leaderboards, re-runs, cancels, exports).

    Tokens are stored hashed, so an old one cannot be shown again: run this for a new one.
    """
    from referee.platform.web.auth import create_host_token
    click.echo(create_host_token(open_store(ctx), label=label, revoke_others=revoke_others))


@token.command("list")
@click.argument("competition_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx: click.Context, competition_id: str | None, as_json: bool) -> None:
    """List tokens (ids, roles, teams; never the secrets)."""
    from referee.platform.web.auth import list_tokens
    rows = list_tokens(open_store(ctx), competition_id)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = f"revoked {r['revoked_at'][:19]}" if r["revoked_at"] else "active"
        who = {"host": "host", "user": f"user #{r['user_id']}"}.get(r["role"], f"{r['competition_id']}/{r['team']}")
        click.echo(f"{r['id']}  {who:30} {state:28} {r['label'] or ''}")


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token by its id (from `referee token list`)."""
    from referee.platform.web.auth import revoke_token
    revoke_token(open_store(ctx), token_id)
    click.echo(f"revoked {token_id}")
