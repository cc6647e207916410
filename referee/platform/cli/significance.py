"""``referee significance``: pairwise p-values and rank tiers of a competition's leaderboard."""

from __future__ import annotations

import math
from typing import Any

import click

from referee.scoring.bootstrap import BACKENDS
from referee.scoring.significance import CORRECTIONS, METHODS

# Above this many entries the table shows p_vs_leader/p_vs_prev only; --json has the full matrix.
MATRIX_MAX_ENTRIES = 12


@click.command()
@click.argument("competition_id")
@click.option("--phase", default=None, help="Phase (default: the open one).")
@click.option("--split", type=click.Choice(["public", "private"]), default="public", show_default=True)
@click.option("--mode", type=click.Choice(["best", "latest", "all"]), default="best", show_default=True,
              help="Which submissions the leaderboard shows.")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="Paired test (default: leaderboard.significance.method, else paired_bootstrap).")
@click.option("--resamples", type=click.IntRange(1), default=None, help="Resamples / randomization trials.")
@click.option("--seed", type=click.IntRange(0), default=None)
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None)
@click.option("--correction", type=click.Choice(CORRECTIONS), default=None)
@click.option("--backend", type=click.Choice(BACKENDS), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the full p-value matrix.")
@click.pass_context
def significance(ctx: click.Context, competition_id: str, phase: str | None, split: str, mode: str,
                 method: str | None, resamples: int | None, seed: int | None, alpha: float | None,
                 correction: str | None, backend: str | None, as_json: bool) -> None:
    """Pairwise p-values and rank tiers between leaderboard entries (primary metric)."""
    from referee.platform.cli.main import emit_json, open_store
    from referee.platform.leaderboard import build as lbm
    from referee.platform.leaderboard.significance import (
        compare_entries,
        significance_settings,
    )

    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    settings = significance_settings(comp, method=method, resamples=resamples, seed=seed, alpha=alpha,
                                     correction=correction, backend=backend)
    lb = lbm.build(store, comp, phase=phase, split=split, mode=mode, enrich=False)
    result = compare_entries(store, comp.for_phase(lb.phase), lb, settings)
    if as_json:
        emit_json({"competition_id": comp.id, "phase": lb.phase, "split": lb.split, "mode": lb.mode,
                   "direction": lb.direction, **result.to_dict(matrix=True), "notes": result.notes()})
        return
    print_significance(lb, result)


def _p(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.3f}"


def print_significance(lb: Any, result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from referee.platform.cli.main import console

    entries = result.entries
    show_matrix = 1 < len(entries) <= MATRIX_MAX_ENTRIES
    t = Table(title=f"{lb.title} — {lb.phase} / {lb.split}: paired tests on {result.metric} ({lb.direction})")
    heads = ["rank", "team", "sub", result.metric, "tier"]
    matrix = result.p_matrix() if show_matrix else None
    heads += [f"vs {pos + 1}" for pos in range(len(entries))] if matrix is not None else ["p_vs_leader", "p_vs_prev"]
    for h in heads:
        t.add_column(h, justify="left" if h == "team" else "right")
    for pos, e in enumerate(entries):
        score = e.metrics.get(result.metric)
        ci = e.intervals.get(result.metric)
        cell = "" if score is None else f"{score:.4f}"
        if ci and matrix is None:
            cell += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
        row = [str(e.rank), e.team, f"#{e.submission_id}", cell, str(result.tiers.tier[pos] if result.tiers else 1)]
        if matrix is not None:
            row += [_p(float(v)) for v in matrix[pos]]
        else:
            row += [_p(result.p_vs_leader[pos]), _p(result.p_vs_prev[pos])]
        t.add_row(*row)
    c = console()
    c.print(t)
    if len(entries) > MATRIX_MAX_ENTRIES:
        c.print(f"[dim]{len(entries)} entries: the full p-value matrix is in --json.[/dim]")
    for note in result.notes():
        c.print(f"[dim]{escape(note)}[/dim]")
