"""Host commands for who takes part: ``referee team``, ``registration``, ``organiser`` and ``user``.

Teams are records of a competition: ``referee team create COMP NAME`` makes one, and every command
that takes ``--team`` refuses a name that is not a team yet (so a typo never starts a new team).
"""

from __future__ import annotations

import json
import sys

import click

from referee.platform.cli.main import open_store


# -- teams ------------------------------------------------------------------------------------------
@click.group()
def team() -> None:
    """Create, list, disqualify and reinstate teams."""


@team.command("create")
@click.argument("competition_id")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def team_create(ctx: click.Context, competition_id: str, names: tuple[str, ...]) -> None:
    """Create one or more teams (names are unique per competition, ignoring case)."""
    from referee.platform.controller.participation import host_create_team
    store = open_store(ctx)
    for name in names:
        row = host_create_team(store, competition_id, name)
        click.echo(f"created team {row.name!r} in {competition_id} (invitation code {row.invite_code})")


@team.command("list")
@click.argument("competition_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def team_list(ctx: click.Context, competition_id: str, as_json: bool) -> None:
    """List a competition's teams with their members."""
    store = open_store(ctx)
    store.get_competition(competition_id)
    rows = [{"name": t.name, "members": [m.username for m in store.members(t.id)], "invite_code": t.invite_code,
             "disqualified": t.disqualified_reason, "created_at": t.created_at} for t in store.teams(competition_id)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = f"  DISQUALIFIED: {r['disqualified']}" if r["disqualified"] else ""
        click.echo(f"{r['name']:24} {', '.join(r['members']) or '-'}{state}")


@team.command("disqualify")
@click.argument("competition_id")
@click.argument("name")
@click.option("--reason", required=True, help="Shown below the leaderboard.")
@click.pass_context
def team_disqualify(ctx: click.Context, competition_id: str, name: str, reason: str) -> None:
    """Take a team off every leaderboard (with the reason) and stop its submissions."""
    row = open_store(ctx).set_team_disqualified(competition_id, name, " ".join(reason.split()), "host (cli)")
    click.echo(f"disqualified team {row.name!r}: {row.disqualified_reason}")


@team.command("reinstate")
@click.argument("competition_id")
@click.argument("name")
@click.pass_context
def team_reinstate(ctx: click.Context, competition_id: str, name: str) -> None:
    """Undo a disqualification."""
    row = open_store(ctx).set_team_disqualified(competition_id, name, None, "host (cli)")
    click.echo(f"reinstated team {row.name!r}")


# -- registrations ----------------------------------------------------------------------------------
@click.group()
def registration() -> None:
    """List, approve and deny registrations (competitions with `participation.registration: approval`)."""


@registration.command("list")
@click.argument("competition_id")
@click.option("--status", type=click.Choice(["pending", "approved", "denied"]), default=None)
@click.pass_context
def registration_list(ctx: click.Context, competition_id: str, status: str | None) -> None:
    for r in open_store(ctx).registrations(competition_id, status):
        click.echo(f"{r.username:24} {r.status:9} {r.created_at[:19]}")


@registration.command("approve")
@click.argument("competition_id")
@click.argument("usernames", nargs=-1, required=True)
@click.pass_context
def registration_approve(ctx: click.Context, competition_id: str, usernames: tuple[str, ...]) -> None:
    _decide(ctx, competition_id, usernames, True)


@registration.command("deny")
@click.argument("competition_id")
@click.argument("usernames", nargs=-1, required=True)
@click.pass_context
def registration_deny(ctx: click.Context, competition_id: str, usernames: tuple[str, ...]) -> None:
    _decide(ctx, competition_id, usernames, False)


def _decide(ctx: click.Context, competition_id: str, usernames: tuple[str, ...], approve: bool) -> None:
    from referee.platform.controller.participation import decide_registration
    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    for name in usernames:
        reg = decide_registration(store, comp, name, approve, by="host (cli)")
        click.echo(f"{reg.username}: {reg.status}")


# -- organisers -------------------------------------------------------------------------------------
@click.group()
def organiser() -> None:
    """A competition's organisers: viewer (sees all), admin (also acts), owner (also manages organisers)."""


@organiser.command("add")
@click.argument("competition_id")
@click.argument("username")
@click.option("--role", type=click.Choice(["viewer", "admin", "owner"]), default="admin", show_default=True)
@click.pass_context
def organiser_add(ctx: click.Context, competition_id: str, username: str, role: str) -> None:
    """Make a signed-up user an organiser of a competition (or change their role)."""
    from referee.platform.controller.participation import set_organiser
    user = set_organiser(open_store(ctx), competition_id, username, role, by="host (cli)")
    click.echo(f"{user.username} is {role} of {competition_id}")


@organiser.command("remove")
@click.argument("competition_id")
@click.argument("username")
@click.pass_context
def organiser_remove(ctx: click.Context, competition_id: str, username: str) -> None:
    from referee.platform.controller.participation import remove_organiser
    remove_organiser(open_store(ctx), competition_id, username, by="host (cli)", superuser=True)
    click.echo(f"{username} no longer organises {competition_id}")


@organiser.command("list")
@click.argument("competition_id")
@click.pass_context
def organiser_list(ctx: click.Context, competition_id: str) -> None:
    for o in open_store(ctx).organisers(competition_id):
        click.echo(f"{o.username:24} {o.role}")


# -- users ------------------------------------------------------------------------------------------
@click.group()
def user() -> None:
    """Accounts (people usually sign up on the web pages)."""


@user.command("add")
@click.argument("username")
@click.option("--email", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def user_add(ctx: click.Context, username: str, email: str | None, password_stdin: bool) -> None:
    """Create an account (e.g. for an organiser); asks for the password."""
    from referee.platform.web.auth import create_user
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    row = create_user(open_store(ctx), username, password, email)
    click.echo(f"created user {row.username}")
