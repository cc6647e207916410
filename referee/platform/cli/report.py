"""``referee report``: a submission's report as Markdown or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from referee.platform.reports.submission import (
    SPLITS,
    render_html,
    render_markdown,
    report_data,
)


@click.command()
@click.argument("submission_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("--split", type=click.Choice(["public", "private", "all"]), default="all", show_default=True,
              help="Which split's scores and CheckList results to include.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to a file.")
@click.pass_context
def report(ctx: click.Context, submission_id: int, fmt: str, split: str, output: str | None) -> None:
    """Render a submission's report: scores with provenance and, for CheckList, the matrix."""
    from referee.platform.cli.main import open_store

    splits = SPLITS if split == "all" else (split,)
    d = report_data(open_store(ctx), submission_id, splits=splits)
    text = render_html(d) if fmt == "html" else render_markdown(d)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)
