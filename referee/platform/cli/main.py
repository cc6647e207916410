"""The ``referee`` command line."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from referee.platform.core.errors import RefereeError, SubmissionRejected
from referee.platform.core.text import safe_text

DEFAULT_WORKSPACE = "referee-workspace"

# Subcommands that live with their area, imported only when used (keeps `referee --help` fast).
LAZY_COMMANDS: dict[str, str] = {
    "cost": "referee.platform.cli.cost:cost",
    "serve": "referee.platform.cli.web:serve",
    "token": "referee.platform.cli.web:token",
    "images": "referee.platform.cli.images:images",
    "report": "referee.platform.cli.report:report",
    "significance": "referee.platform.cli.significance:significance",
    "score": "referee.platform.cli.score:score",
    "team": "referee.platform.cli.teams:team",
    "registration": "referee.platform.cli.teams:registration",
    "organiser": "referee.platform.cli.teams:organiser",
    "user": "referee.platform.cli.teams:user",
    "hide": "referee.platform.cli.hosting:hide",
    "unhide": "referee.platform.cli.hosting:unhide",
    "baseline": "referee.platform.cli.hosting:baseline",
    "download": "referee.platform.cli.hosting:download",
    "remote": "referee.platform.cli.remote:remote",
    "phase": "referee.platform.cli.phases:phase",
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


def show(value: Any, *, multiline: bool = False) -> str:
    """A team-controlled string for a rich console: control characters visible, markup inert."""
    from rich.markup import escape
    return escape(safe_text(value, multiline=multiline))


def open_store(ctx: click.Context) -> Any:
    from referee.platform.store import Store
    return Store(ctx.obj["workspace"])


def emit_json(obj: Any) -> None:
    """JSON on stdout; ``ensure_ascii`` escapes control characters, so team strings stay exact but inert."""
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=True))


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
@click.option("--rerun/--no-rerun", default=None,
              help="When the reference data or inputs changed: re-run the submissions scored against the old "
                   "data (default: ask when interactive, else only say so).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def competition_load(ctx: click.Context, spec: str, rerun: bool | None, as_json: bool) -> None:
    """Validate a competition (YAML file, directory or bundle) and load it into the workspace.

    The reference data and inputs are copied into the workspace by content hash: editing the
    source files later changes nothing until the competition is loaded again.
    """
    from referee.platform.controller.competitions import load
    store = open_store(ctx)
    result = load(store, spec)
    comp = result.competition
    rerun_ids: list[int] = []
    if result.stale:
        if rerun is None and not as_json and sys.stdin.isatty():
            rerun = click.confirm(f"the {' and '.join(result.changed)} data of {comp.id!r} changed; "
                                  f"re-run the {len(result.stale)} submission(s) scored against the old data?",
                                  default=False)
        if rerun:
            rerun_ids = store.request_rerun_many(comp.id, ids=result.stale, statuses=("scored",), by="reload")
    if as_json:
        emit_json({"id": comp.id, "title": comp.title, "source": str(comp.source_path), "changed": result.changed,
                   "stale": result.stale, "rerun": rerun_ids,
                   "files": [{"kind": k, "name": n, "sha256": sha, "size": size} for k, n, sha, size in result.files]})
        return
    click.echo(f"loaded competition {comp.id!r} ({comp.title}) from {comp.source_path}")
    if result.changed:
        click.echo(f"the {' and '.join(result.changed)} data changed since the last load")
    if rerun_ids:
        click.echo(f"{len(rerun_ids)} submission(s) pending again; `referee run {comp.id}` scores them")
    elif result.stale:
        click.echo(f"{len(result.stale)} scored submission(s) used the old data: `referee competition load "
                   f"{spec} --rerun` or `referee rerun --competition {comp.id}` re-runs them")


@competition.command("pack")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The bundle to write (default: ID.tar.gz here).")
@click.pass_context
def competition_pack(ctx: click.Context, directory: str, output: str | None) -> None:
    """Make a portable bundle of a competition directory: spec, data, pages/*.md, starting_kit/."""
    from referee.platform.controller.bundles import pack
    from referee.platform.core.spec import load_competition
    out = Path(output) if output else Path(f"{load_competition(Path(directory) / 'competition.yaml').id}.tar.gz")
    packed = pack(directory, out)
    click.echo(f"wrote {packed.path} ({packed.files} files, {packed.bytes} bytes; sha256 {packed.sha256[:12]}); "
               f"load it with `referee competition load {packed.path}`")


@competition.command("show")
@click.argument("competition_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def competition_show(ctx: click.Context, competition_id: str, as_json: bool) -> None:
    """Show a loaded competition."""
    comp = open_store(ctx).get_competition(competition_id)
    if as_json:  # the spec as the host wrote it (what plugins derived from it is kept apart)
        emit_json(comp.spec_dict())
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
            click.echo(f"{r['id']}\t{safe_text(r['source_path'])}")


# -- submissions ----------------------------------------------------------------------------------
@cli.command()
@click.argument("competition_id")
@click.argument("source")
@click.option("--team", default=None, help="An existing team (see `referee team create`).")
@click.option("--create-team", is_flag=True, help="Create --team first when it is new.")
@click.option("--baseline", "baseline_label", default=None, metavar="LABEL",
              help="File a baseline entry under LABEL instead (shown for comparison, ranked as no team).")
@click.option("--phase", default=None, help="Phase (default: the open one).")
@click.option("--kind", default=None, help="Submission kind (default: detected).")
@click.option("--description", default=None, help="What this submission is (method, what changed).")
@click.option("--allow-closed-phase", is_flag=True, help="Host only: accept a late entry to a closed phase.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, competition_id: str, source: str, team: str | None, create_team: bool,
           baseline_label: str | None, phase: str | None, kind: str | None, description: str | None,
           allow_closed_phase: bool, as_json: bool) -> None:
    """Submit a prediction file (or a container) for an existing team, or a baseline."""
    from referee.platform.controller.participation import host_create_team, require_team
    from referee.submissions.submit import submit as do_submit
    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    if (team is None) == (baseline_label is None):
        raise click.UsageError("pass either --team NAME or --baseline LABEL")
    if team is not None:
        if create_team and store.team(competition_id, team.strip()) is None:
            host_create_team(store, competition_id, team)
        team = require_team(store, competition_id, team).name
    sid = do_submit(store, comp, team or str(baseline_label).strip(), source, kind=kind, phase=phase,
                    allow_closed_phase=allow_closed_phase, description=description,
                    baseline=baseline_label is not None)
    sub = store.get_submission(sid)
    if as_json:
        emit_json({"id": sid, "status": sub.status, "sha256": sub.sha256, "kind": sub.kind})
    else:
        click.echo(f"submission #{sid} accepted ({safe_text(sub.kind)}, sha256 {sub.sha256[:12]}); "
                   f"run `referee run {competition_id}` to score it")


@cli.command()
@click.argument("competition_id")
@click.option("--backend", default=None, help="Override the competition's backend.")
@click.option("--max-in-flight", type=int, default=None)
@click.option("--limit", type=int, default=None, help="Claim at most N submissions.")
@click.option("--outage-limit", default=None, metavar="DURATION",
              help="Stop (exit status 4) when the backend does not answer for this long (default: the "
                   "competition's backend.outage_limit, 10m).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True)
@click.pass_context
def run(ctx: click.Context, competition_id: str, backend: str | None, max_in_flight: int | None,
        limit: int | None, outage_limit: str | None, as_json: bool, no_progress: bool) -> None:
    """Score every pending submission of a competition (resumable).

    Exit status 3: paused (a budget, a resource request no machine can run); 4: the backend's control
    plane stopped answering (every job stays claimed: run again to resume)."""
    from referee.platform.controller.reconcile import make_backend
    from referee.platform.core.units import parse_duration
    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    be = make_backend(comp, store, backend) if backend else None
    try:
        limit_s = parse_duration(outage_limit) if outage_limit is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--outage-limit") from None
    summary = run_with_progress(store, comp, be, max_in_flight=max_in_flight, limit=limit,
                                show=not (as_json or no_progress), outage_limit=limit_s)
    if as_json:
        emit_json(summary.to_dict())
    else:
        msg = f"scored {summary.scored}, failed {summary.failed}, retried {summary.retried}"
        if summary.failures:
            msg += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures.items())) + ")"
        click.echo(msg)
    for team, why in summary.held_teams.items():
        console(stderr=True).print(f"[yellow]held team {show(team)}:[/yellow] {show(why)}")
    if summary.paused_reason:
        console(stderr=True).print(f"[yellow]paused:[/yellow] {show(summary.paused_reason)}")
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
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show the newest N submissions.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the newest N first (with --limit).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, competition_id: str, team: str | None, submission_id: int | None,
           limit: int | None, offset: int, as_json: bool) -> None:
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
        c.print(f"[bold]#{d['id']}[/bold] team {show(d['team'])} — {d['status']}")
        if d.get("filename"):
            c.print(f"file: {show(d['filename'])}")
        if d.get("waiting"):
            w = d["waiting"]
            shard = f" (shard {w['shard'] + 1})" if w.get("shard") is not None else ""
            c.print(f"[yellow]waiting for a machine{shard}[/yellow] since {str(w['waiting_since'])[:19]}: "
                    f"{show(w['reason'])}")
        if d.get("failure_reason"):
            c.print(f"[red]{show(d['failure_reason'])}[/red]: {show(d['failure_message'], multiline=True)}")
        for sh in d.get("shards") or []:
            usd = sh["cost"].get("USD", 0.0) + sh["cost"].get("platform:USD", 0.0)
            c.print(f"  shard {sh['shard'] + 1}: {sh['state']}, {sh['tries']} tr{'y' if sh['tries'] == 1 else 'ies'}"
                    f"{', ' + show(sh['failure_reason']) if sh.get('failure_reason') else ''}"
                    f"{', waiting: ' + show(sh['waiting_reason']) if sh.get('waiting_reason') else ''}"
                    f"{f', ${usd:.4f}' if usd else ''}")
        for note in d.get("host_notes") or []:
            c.print(f"[dim]{show(note['kind'])} at {note['at'][:19]}:[/dim]")
            c.print(safe_text(note["message"], multiline=True), markup=False)
        for s in d["scores"]:
            ci = f" \\[{s['ci_low']:.5f}, {s['ci_high']:.5f}]" if s.get("ci_low") is not None else ""
            c.print(f"  {s['split']:8} {show(s['metric']):12} {s['value']:.6f}{ci}  {show(s['signature'])}")
        if d.get("log_tail"):
            c.print("[dim]log tail:[/dim]")
            c.print(safe_text(d["log_tail"], multiline=True), markup=False)
        return
    if limit is not None:
        from referee.platform.reports.views import submission_row
        page, total = store.submissions_page(competition_id, team=team, limit=limit, offset=offset)
        stuck = store.stuck_jobs(competition_id)
        rows = [submission_row(s, stuck.get(s.id)) for s in page]
        if not as_json:
            click.echo(f"newest {offset + 1}-{offset + len(rows)} of {total}", err=True)
    else:
        rows = submission_table(store, competition_id, team=team)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table
    t = Table("id", "team", "kind", "phase", "status", "reason", "file", "created")
    for r in rows:
        reason = r["failure_reason"] or ""
        if r.get("waiting"):
            reason = f"waiting for a machine: {r['waiting']['reason']}"
        t.add_row(str(r["id"]), show(r["team"]), show(r["kind"]), show(r["phase"]), r["status"],
                  show(reason), show(r.get("filename") or ""), r["created_at"][:19])
    console().print(t)


@cli.command()
@click.argument("submission_id", type=int)
@click.pass_context
def cancel(ctx: click.Context, submission_id: int) -> None:
    """Cancel a pending or running submission (no quota is charged); exits 1 when it already finished."""
    from referee.platform.controller.actions import cancel_submission
    status_after = cancel_submission(open_store(ctx), submission_id)
    if status_after != "cancelled":
        raise RefereeError(f"#{submission_id} is already {status_after}: nothing to cancel (a finished "
                           "submission keeps its status; `referee hide` takes it off the leaderboard)")
    click.echo(f"#{submission_id}: cancelled")


@cli.command()
@click.argument("submission_ids", type=int, nargs=-1)
@click.option("--competition", "competition_id", default=None, help="Re-run every finished submission that "
              "matches the filters below, in one transaction.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(["scored", "failed", "cancelled"]),
              help="With --competition: only these (repeatable; default: all three).")
@click.option("--team", default=None, help="With --competition: only this team.")
@click.option("--phase", default=None, help="With --competition: only this phase.")
@click.pass_context
def rerun(ctx: click.Context, submission_ids: tuple[int, ...], competition_id: str | None,
          statuses: tuple[str, ...], team: str | None, phase: str | None) -> None:
    """Put finished submissions back in the queue (old scores replaced atomically on the next run)."""
    from referee.platform.controller.actions import rerun_submission
    store = open_store(ctx)
    if competition_id is None:
        if not submission_ids:
            raise click.UsageError("give submission ids, or --competition COMP for a bulk re-run")
        for sid in submission_ids:
            rerun_submission(store, sid, by="cli")
            click.echo(f"#{sid}: pending")
        return
    comp = store.get_competition(competition_id)
    if phase is not None:
        comp.phase(phase)
    ids = store.request_rerun_many(competition_id, ids=submission_ids or None,
                                   statuses=statuses or ("scored", "failed", "cancelled"), team=team, phase=phase,
                                   by="cli")
    click.echo(f"{len(ids)} submission(s) of {competition_id} pending again; `referee run {competition_id}` "
               "scores them")


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
            c.print(f"#{v.submission_id} {show(v.team)}: [{colour}]{v.status}[/{colour}]")
            for d in v.differences:
                c.print(f"    {d['split']} {show(d['metric'])}: stored {d['stored']!r}, now {d['now']!r}")
            for n in v.notes:
                c.print(f"    [dim]{show(n)}[/dim]")
        c.print(f"{len(verdicts) - len(bad)} of {len(verdicts)} scored submissions re-score identically")
    if bad:
        sys.exit(1)


@cli.command()
@click.argument("competition_id")
@click.option("--phase", default=None)
@click.option("--split", type=click.Choice(["public", "private"]), default="public", show_default=True)
@click.option("--mode", type=click.Choice(["best", "latest", "all"]), default="best", show_default=True)
@click.option("--format", "fmt", default="table", show_default=True,
              help="table, json, csv, md, html, or a format a plugin adds.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to a file.")
@click.pass_context
def leaderboard(ctx: click.Context, competition_id: str, phase: str | None, split: str, mode: str, fmt: str,
                output: str | None) -> None:
    """Show or export a leaderboard."""
    from referee.platform.leaderboard import build as lbm
    from referee.platform.leaderboard.render import print_table, renderer
    render = renderer(fmt)  # an unknown format fails before any work
    store = open_store(ctx)
    lb = lbm.build(store, store.get_competition(competition_id), phase=phase, split=split, mode=mode)
    if fmt == "table" and output is None:
        print_table(lb, console())
        return
    text = render.render(lb)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def print_leaderboard(lb: Any) -> None:
    """The compact terminal table of a leaderboard, with its notes."""
    from referee.platform.leaderboard.render import print_table
    print_table(lb, console())


# -- plugins --------------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Inspect installed plugins, or start a new one."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
def plugins_list(as_json: bool) -> None:
    """List plugins, their versions and what they provide (REFEREE_DISABLE_PLUGINS=a,b leaves some out)."""
    from referee.plugins.manager import get_plugin_manager
    pm = get_plugin_manager()
    if as_json:
        emit_json([r.__dict__ for r in pm.reports])
        return
    from rich.table import Table
    t = Table("plugin", "version", "provides")
    for r in pm.reports:
        what = "[dim]disabled[/dim]" if r.disabled else f"[red]{show(r.error)}[/red]" if r.error else \
            show(", ".join(r.provides))
        t.add_row(show(r.name), show(r.version), what)
    console().print(t)


@plugins.command("new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              help="Where to create the package directory.")
def plugins_new(name: str, parent: Path) -> None:
    """Write a ready-to-install scorer plugin package NAME (pyproject, scorer, test, README)."""
    from referee.platform.cli.scaffold import write_plugin
    root = write_plugin(name, parent)
    click.echo(f"wrote {root}\nnext: pip install -e {root} && referee plugins list")


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


def error_json(exc: BaseException) -> dict[str, Any]:
    """An error as the ``--json`` commands report it: a stable ``error`` code, the message, and for a
    rejected submission why (``reason``) and where (``source``, ``line``, ``hint``). The same shape as
    the web API's errors."""
    if isinstance(exc, RefereeError):
        out: dict[str, Any] = {"error": exc.error, "message": str(exc)}
        if isinstance(exc, SubmissionRejected):
            out["reason"] = exc.code
            out.update({k: v for k, v in (("source", exc.source), ("line", exc.line), ("hint", exc.hint))
                        if v is not None})
        return out
    if isinstance(exc, click.exceptions.Abort):
        return {"error": "aborted", "message": "aborted"}
    if isinstance(exc, click.ClickException):
        return {"error": "usage_error", "message": exc.format_message()}
    return {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        cli.main(args=args, prog_name="referee", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if as_json:
            emit_json(error_json(exc))
        else:
            click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if as_json:
            emit_json(error_json(exc))
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except RefereeError as exc:
        if as_json:  # the JSON encoder escapes every control character: faithful, never raw on a terminal
            emit_json(error_json(exc))
        else:
            console(stderr=True).print(f"[red]error:[/red] {show(exc, multiline=True)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
