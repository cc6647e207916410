"""``referee phase``: what each phase is, and who sees its leaderboards (publishing the private one)."""

from __future__ import annotations

import click

from referee.platform.cli.main import console, emit_json, open_store


@click.group()
def phase() -> None:
    """Phases: list them, publish a leaderboard, switch who sees one."""


@phase.command("list")
@click.argument("competition_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def phase_list(ctx: click.Context, competition_id: str, as_json: bool) -> None:
    """Every phase: window, metrics, limits, who sees its leaderboards, final selection rule."""
    from referee.platform.controller.phases import phase_info

    store = open_store(ctx)
    info = phase_info(store, store.get_competition(competition_id))
    if as_json:
        emit_json(info)
        return
    c = console()
    for p in info:
        state = "open" if p["open"] else "ended" if p["ended"] else "not open yet"
        boards = ", ".join(f"{s} {b['visibility']}" + (f" (set by {b['switched_by']})" if b["switched_by"] else
                                                         f" ({b['setting']})" if b["setting"] != b["visibility"]
                                                         else "")
                           for s, b in p["leaderboards"].items())
        rule = p["final_selection"]
        final = f"pick up to {rule['max']}" if rule["rule"] == "pick" else "best public"
        c.print(f"[bold]{p['name']}[/bold] {state} [{p['start'] or '-'} .. {p['end'] or '-'}]; "
                f"metrics {', '.join(m['key'] for m in p['metrics'])}; leaderboards: {boards}; final entry: {final}",
                markup=True, highlight=False)


def _switch(ctx: click.Context, competition_id: str, phase_name: str, split: str, visibility: str | None) -> None:
    from referee.platform.controller.phases import set_visibility

    store = open_store(ctx)
    state = set_visibility(store, store.get_competition(competition_id), phase_name, split, visibility,
                           by="host (cli)")
    how = "as the spec says" if visibility is None else "set by the host"
    click.echo(f"the {state.split} leaderboard of phase {state.phase!r} is {state.visibility} ({how})")


@phase.command("publish")
@click.argument("competition_id")
@click.argument("phase_name", metavar="PHASE")
@click.option("--split", type=click.Choice(["private", "public"]), default="private", show_default=True)
@click.pass_context
def phase_publish(ctx: click.Context, competition_id: str, phase_name: str, split: str) -> None:
    """Publish a phase's leaderboard: every team sees it and its rank (final picks close)."""
    _switch(ctx, competition_id, phase_name, split, "public")


@phase.command("visibility")
@click.argument("competition_id")
@click.argument("phase_name", metavar="PHASE")
@click.argument("split", type=click.Choice(["public", "private"]))
@click.argument("visibility", type=click.Choice(["hidden", "host", "public", "spec"]))
@click.pass_context
def phase_visibility(ctx: click.Context, competition_id: str, phase_name: str, split: str, visibility: str) -> None:
    """Who sees a leaderboard: hidden (organisers only, teams see none of its scores), host (organisers
    see it, teams their own scores), public, or spec (what the competition's spec says)."""
    _switch(ctx, competition_id, phase_name, split, None if visibility == "spec" else visibility)
