"""The ``referee`` command line."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from referee.platform.core.errors import RefereeError

DEFAULT_WORKSPACE = "referee-workspace"

# Subcommands that live with their area, imported only when used (keeps `referee --help` fast).
LAZY_COMMANDS: dict[str, str] = {
    "cost": "referee.platform.cli.cost:cost",
    "serve": "referee.platform.cli.web:serve",
    "token": "referee.platform.cli.web:token",
    "images": "referee.platform.cli.images:images",
    "report": "referee.platform.cli.report:report",
    "significance": "referee.platform.cli.significance:significance",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if self._importable(n))])

    def _importable(self, name: str) -> bool:
        module = LAZY_COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module.rsplit(".", 1)[0]) is not None and \
            importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError:
                return None
        return super().get_command(ctx, name)


def console(stderr: bool = False) -> Any:
    from rich.console import Console
    return Console(stderr=stderr, highlight=False)


def open_store(ctx: click.Context) -> Any:
    from referee.platform.store import Store
    return Store(ctx.obj["workspace"])


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-w", "--workspace", type=click.Path(file_okay=False), envvar="REFEREE_WORKSPACE",
              default=DEFAULT_WORKSPACE, show_default=True, help="Workspace directory (database and blobs).")
@click.version_option(package_name="referee")
@click.pass_context
def cli(ctx: click.Context, workspace: str) -> None:
    """referee: batch evaluation for machine-learning competitions and leaderboards."""
    ctx.ensure_object(dict)
    ctx.obj["workspace"] = workspace
    ctx.obj["workspace_is_default"] = ctx.get_parameter_source("workspace") == click.core.ParameterSource.DEFAULT


# -- competitions ---------------------------------------------------------------------------------
@cli.group()
def competition() -> None:
    """Load and inspect competitions."""


@competition.command("load")
@click.argument("spec", type=click.Path(exists=False))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def competition_load(ctx: click.Context, spec: str, as_json: bool) -> None:
    """Validate a competition YAML file and load it into the workspace."""
    from referee.platform.controller.competitions import load_into_store
    comp = load_into_store(open_store(ctx), spec)
    if as_json:
        emit_json({"id": comp.id, "title": comp.title, "source": str(comp.source_path)})
    else:
        click.echo(f"loaded competition {comp.id!r} ({comp.title}) from {comp.source_path}")


@competition.command("show")
@click.argument("competition_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def competition_show(ctx: click.Context, competition_id: str, as_json: bool) -> None:
    """Show a loaded competition."""
    comp = open_store(ctx).get_competition(competition_id)
    if as_json:
        emit_json(json.loads(comp.to_json()))
        return
    c = console()
    c.print(f"[bold]{comp.title}[/bold] ({comp.id})")
    if comp.description:
        c.print(comp.description.strip())
    c.print(f"predictions: {comp.prediction.format}, {comp.prediction.type} columns {comp.prediction.columns}")
    c.print("metrics: " + ", ".join(f"{m.key}{' (primary)' if m.primary else ''}" for m in comp.metrics))
    c.print("phases: " + ", ".join(f"{p.name} [{p.start or '-'} .. {p.end or '-'}]" for p in comp.phases))
    c.print(f"backend: {comp.backend.name}; resources: cpu={comp.resources.cpu} "
            f"memory={comp.resources.memory // 2**20}MiB gpus={comp.resources.gpus} "
            f"timeout={comp.resources.timeout:g}s")


@competition.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def competition_list(ctx: click.Context, as_json: bool) -> None:
    """List loaded competitions."""
    rows = [{"id": r.id, "source_path": r.source_path, "loaded_at": r.loaded_at}
            for r in open_store(ctx).list_competitions()]
    if as_json:
        emit_json(rows)
    else:
        for r in rows:
            click.echo(f"{r['id']}\t{r['source_path']}")


# -- submissions ----------------------------------------------------------------------------------
@cli.command()
@click.argument("competition_id")
@click.argument("source")
@click.option("--team", required=True, help="Team name.")
@click.option("--phase", default=None, help="Phase (default: the open one).")
@click.option("--kind", default=None, help="Submission kind (default: detected).")
@click.option("--allow-closed-phase", is_flag=True, help="Host only: accept a late entry to a closed phase.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, competition_id: str, source: str, team: str, phase: str | None,
           kind: str | None, allow_closed_phase: bool, as_json: bool) -> None:
    """Submit a prediction file (or a container) for a team."""
    from referee.submissions.submit import submit as do_submit
    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    sid = do_submit(store, comp, team, source, kind=kind, phase=phase, allow_closed_phase=allow_closed_phase)
    sub = store.get_submission(sid)
    if as_json:
        emit_json({"id": sid, "status": sub.status, "sha256": sub.sha256, "kind": sub.kind})
    else:
        click.echo(f"submission #{sid} accepted ({sub.kind}, sha256 {sub.sha256[:12]}); "
                   f"run `referee run {competition_id}` to score it")


@cli.command()
@click.argument("competition_id")
@click.option("--backend", default=None, help="Override the competition's backend.")
@click.option("--max-in-flight", type=int, default=None)
@click.option("--limit", type=int, default=None, help="Claim at most N submissions.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True)
@click.pass_context
def run(ctx: click.Context, competition_id: str, backend: str | None, max_in_flight: int | None,
        limit: int | None, as_json: bool, no_progress: bool) -> None:
    """Score every pending submission of a competition (resumable)."""
    from referee.platform.controller.reconcile import make_backend
    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    be = make_backend(comp, store, backend) if backend else None
    summary = run_with_progress(store, comp, be, max_in_flight=max_in_flight, limit=limit,
                                show=not (as_json or no_progress))
    if as_json:
        emit_json(summary.to_dict())
    else:
        msg = f"scored {summary.scored}, failed {summary.failed}, retried {summary.retried}"
        if summary.failures:
            msg += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) + ")"
        click.echo(msg)
    from rich.markup import escape
    for team, why in summary.held_teams.items():
        console(stderr=True).print(f"[yellow]held team {escape(team)}:[/yellow] {escape(why)}")
    if summary.paused_reason:
        console(stderr=True).print(f"[yellow]paused:[/yellow] {escape(summary.paused_reason)}")
    if summary.paused_reason or summary.held_teams:
        sys.exit(3)


def run_with_progress(store: Any, comp: Any, backend: Any = None, *, show: bool = True,
                      limit: int | None = None, **kw: Any) -> Any:
    from referee.platform.controller.reconcile import Controller
    pending = len(store.submissions(comp.id, status=("pending", "running")))
    if not show or pending == 0:
        return Controller(store, comp, backend, **kw).run(limit=limit)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    with Progress(TextColumn(f"[bold]{comp.id}[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(stderr=True), transient=False) as prog:
        task = prog.add_task("scoring", total=min(pending, limit) if limit else pending)

        def on_progress(event: str, sid: int) -> None:
            if event in ("scored", "failed"):
                prog.advance(task)

        return Controller(store, comp, backend, on_progress=on_progress, **kw).run(limit=limit)


@cli.command()
@click.argument("competition_id")
@click.option("--team", default=None)
@click.option("--submission", "submission_id", type=int, default=None, help="Show one submission in detail.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, competition_id: str, team: str | None, submission_id: int | None,
           as_json: bool) -> None:
    """Show submissions and their status, failure reason and log tail."""
    from referee.platform.reports.views import submission_detail, submission_table
    store = open_store(ctx)
    store.get_competition(competition_id)
    if submission_id is not None:
        d = submission_detail(store, submission_id)
        if d["competition_id"] != competition_id:
            raise RefereeError(f"submission #{submission_id} belongs to {d['competition_id']!r}")
        if as_json:
            emit_json(d)
            return
        c = console()
        c.print(f"[bold]#{d['id']}[/bold] team {d['team']} — {d['status']}")
        if d.get("failure_reason"):
            c.print(f"[red]{d['failure_reason']}[/red]: {d['failure_message']}")
        for s in d["scores"]:
            ci = f" [{s['ci_low']:.5f}, {s['ci_high']:.5f}]" if s.get("ci_low") is not None else ""
            c.print(f"  {s['split']:8} {s['metric']:12} {s['value']:.6f}{ci}  {s['signature']}")
        if d.get("log_tail"):
            c.print("[dim]log tail:[/dim]")
            c.print(d["log_tail"], markup=False)
        return
    rows = submission_table(store, competition_id, team=team)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table
    t = Table("id", "team", "kind", "phase", "status", "reason", "created")
    for r in rows:
        t.add_row(str(r["id"]), r["team"], r["kind"], r["phase"], r["status"], r["failure_reason"] or "",
                  r["created_at"][:19])
    console().print(t)


@cli.command()
@click.argument("submission_id", type=int)
@click.pass_context
def cancel(ctx: click.Context, submission_id: int) -> None:
    """Cancel a pending or running submission (no quota is charged)."""
    from referee.platform.controller.actions import cancel_submission
    click.echo(f"#{submission_id}: {cancel_submission(open_store(ctx), submission_id)}")


@cli.command()
@click.argument("submission_id", type=int)
@click.pass_context
def rerun(ctx: click.Context, submission_id: int) -> None:
    """Put a finished submission back in the queue (old scores replaced atomically on the next run)."""
    from referee.platform.controller.actions import rerun_submission
    rerun_submission(open_store(ctx), submission_id, by="cli")
    click.echo(f"#{submission_id}: pending")


@cli.command()
@click.argument("competition_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def verify(ctx: click.Context, competition_id: str, as_json: bool) -> None:
    """Re-score every scored submission from its stored predictions and compare (exit 1 on a difference)."""
    from referee.platform.controller.verify import verdicts_json, verify_competition
    store = open_store(ctx)
    verdicts = verify_competition(store, store.get_competition(competition_id))
    bad = [v for v in verdicts if v.status != "same"]
    if as_json:
        emit_json(verdicts_json(verdicts))
    else:
        c = console()
        for v in verdicts:
            colour = "green" if v.status == "same" else "red"
            c.print(f"#{v.submission_id} {v.team}: [{colour}]{v.status}[/{colour}]")
            for d in v.differences:
                c.print(f"    {d['split']} {d['metric']}: stored {d['stored']!r}, now {d['now']!r}")
            for n in v.notes:
                c.print(f"    [dim]{n}[/dim]")
        c.print(f"{len(verdicts) - len(bad)} of {len(verdicts)} scored submissions re-score identically")
    if bad:
        sys.exit(1)


@cli.command()
@click.argument("competition_id")
@click.option("--phase", default=None)
@click.option("--split", type=click.Choice(["public", "private"]), default="public", show_default=True)
@click.option("--mode", type=click.Choice(["best", "latest", "all"]), default="best", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "md", "html"]), default="table")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to a file.")
@click.pass_context
def leaderboard(ctx: click.Context, competition_id: str, phase: str | None, split: str, mode: str, fmt: str,
                output: str | None) -> None:
    """Show or export a leaderboard."""
    from referee.platform.leaderboard import build as lbm
    store = open_store(ctx)
    lb = lbm.build(store, store.get_competition(competition_id), phase=phase, split=split, mode=mode)
    if fmt == "table" and output is None:
        print_leaderboard(lb)
        return
    text = render_leaderboard(lb, "md" if fmt == "table" else fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def render_leaderboard(lb: Any, fmt: str) -> str:
    if fmt == "json":
        return lb.to_json() + "\n"
    if fmt == "csv":
        return lb.to_csv()
    if fmt == "html":
        from referee.platform.reports.submission import leaderboard_html
        return leaderboard_html(lb)
    return lb.to_markdown()


TERMINAL_HIDDEN = ("p_vs_leader", "p_vs_prev")  # in the exports, not the terminal table
MAX_TERMINAL_METRICS = 4
MAX_TERMINAL_EXTRAS = 3


def _short(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.2e}"
    return str(v)


def print_leaderboard(lb: Any) -> None:
    """A compact terminal table: the primary metric with its interval, the other metrics, tiers and
    extra columns; p-values, intervals of secondary metrics and times stay in the exports."""
    from rich.table import Table
    extras = [c for c in lb.columns_extra if c not in TERMINAL_HIDDEN]
    metrics = lb.metric_order[:MAX_TERMINAL_METRICS]
    hidden = len(lb.metric_order) - len(metrics) + max(0, len(extras) - MAX_TERMINAL_EXTRAS)
    extras = extras[:MAX_TERMINAL_EXTRAS]
    caption = f"primary: {lb.primary} ({lb.direction})"
    if hidden:
        caption += f"; {hidden} more column(s) with --format md|csv|json|html"
    t = Table(title=f"{lb.title} — {lb.phase} / {lb.split} ({lb.mode})", caption=caption,
              caption_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("team", overflow="fold")
    for m in metrics:
        t.add_column(m, justify="right")
    for c in extras:
        t.add_column(c, justify="right")
    t.add_column("sub", justify="right")
    for e in lb.entries:
        cells = [str(e.rank), e.team]
        for i, m in enumerate(metrics):
            v, ci = e.metrics.get(m), e.intervals.get(m)
            cell = _short(v)
            if i == 0 and ci and v is not None:
                cell += f" ±{(ci[1] - ci[0]) / 2:.2g}"
            cells.append(cell)
        cells += [_short(e.extra.get(c)) for c in extras]
        cells.append(f"#{e.submission_id}")
        t.add_row(*cells)
    c = console()
    c.print(t)
    for n in lb.notes:
        c.print(f"[dim]{n}[/dim]")


# -- plugins --------------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
def plugins_list(as_json: bool) -> None:
    """List plugins, their versions and what they provide."""
    from referee.plugins.manager import get_plugin_manager
    pm = get_plugin_manager()
    if as_json:
        emit_json([r.__dict__ for r in pm.reports])
        return
    from rich.table import Table
    t = Table("plugin", "version", "provides")
    for r in pm.reports:
        t.add_row(r.name, r.version, f"[red]{r.error}[/red]" if r.error else ", ".join(r.provides))
    console().print(t)


# -- demo -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--keep", is_flag=True, help="Keep an existing demo workspace instead of starting fresh.")
@click.option("--with-containers/--no-containers", default=None,
              help="Also run the container submissions (default: when a Docker engine answers).")
@click.option("--fleet", is_flag=True, help="Run the container samples on a local two-node Ray cluster through "
                                             "a local registry (needs root for the hidden-workspace node).")
@click.pass_context
def demo(ctx: click.Context, keep: bool, with_containers: bool | None, fleet: bool) -> None:
    """Build a fresh workspace, load the examples, submit the samples, run, print leaderboards."""
    from referee.platform.cli.demo import run_demo
    ws = ctx.obj["workspace"]
    if ctx.obj.get("workspace_is_default"):
        ws = "demo-workspace"
    run_demo(Path(ws), fresh=not keep, with_containers=with_containers, fleet=fleet)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="referee", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except RefereeError as exc:
        from rich.markup import escape
        console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
