"""Host tools on one submission: ``referee hide``, ``unhide``, ``baseline`` and ``download``."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from referee.platform.cli.main import open_store
from referee.platform.core.errors import NotFound


@click.command()
@click.argument("submission_id", type=int)
@click.option("--reason", required=True, help="Shown to the team and below the leaderboard.")
@click.pass_context
def hide(ctx: click.Context, submission_id: int, reason: str) -> None:
    """Take a submission off every leaderboard (its team's next best counts); scores are kept."""
    sub = open_store(ctx).set_hidden(submission_id, " ".join(reason.split()), "host (cli)")
    click.echo(f"#{sub.id} ({sub.team}) hidden: {sub.hidden_reason}")


@click.command()
@click.argument("submission_id", type=int)
@click.pass_context
def unhide(ctx: click.Context, submission_id: int) -> None:
    """Put a hidden submission back on the leaderboards."""
    sub = open_store(ctx).set_hidden(submission_id, None, "host (cli)")
    click.echo(f"#{sub.id} ({sub.team}) is back on the leaderboards")


@click.command()
@click.argument("submission_id", type=int)
@click.option("--off", is_flag=True, help="Make it an ordinary team entry again.")
@click.pass_context
def baseline(ctx: click.Context, submission_id: int, off: bool) -> None:
    """Flag a submission as a baseline: shown for comparison, ranked as no team, in no quota."""
    sub = open_store(ctx).set_baseline(submission_id, not off, "host (cli)")
    click.echo(f"#{sub.id} ({sub.team}) is {'a baseline' if sub.baseline else 'a team entry'}")


@click.command()
@click.argument("submission_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write it (default: ID-FILENAME here).")
@click.pass_context
def download(ctx: click.Context, submission_id: int, output: str | None) -> None:
    """Copy a submission's stored file (prediction file, archive, image tarball) out of the workspace."""
    store = open_store(ctx)
    sub = store.get_submission(submission_id)
    src = store.blob_path(sub.sha256)
    if not src.is_file():
        raise NotFound(f"submission #{sub.id} has no stored file (it names the container image {sub.filename!r}; "
                       "export it with `docker save`)")
    dest = Path(output or f"{sub.id}-{Path(sub.filename or 'submission').name}")
    shutil.copyfile(src, dest)
    click.echo(f"wrote {dest} ({sub.size if sub.size is not None else dest.stat().st_size} bytes)")
