"""``referee cost``: plan a fleet, simulate it, report what a competition spent, show score vs cost."""

from __future__ import annotations

import math
from typing import Any, cast

import click

from referee.platform.cli.main import console, emit_json, open_store

DAY = 86400.0
HOUR = 3600.0


class Duration(click.ParamType):
    """A duration such as 9h, 90m, 21d or a number of seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from referee.platform.core.units import parse_duration
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if not (seconds > 0 and math.isfinite(seconds)):
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


class Size(click.ParamType):
    """A positive size such as 8GiB, 512m or a number of bytes."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        from referee.platform.core.units import parse_size
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size <= 0:
            self.fail(f"{value!r} is not a positive size", param, ctx)
        return size


class Number(click.ParamType):
    """A finite number within bounds: nan, inf and out-of-range values are a usage error naming the option
    (``click.FloatRange`` lets nan through, since nan compares false with every bound)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def _range(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(x for x in (lo, hi) if x)

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if (self.low is not None and (v < self.low or (self.low_open and v == self.low))) or \
                (self.high is not None and (v > self.high or (self.high_open and v == self.high))):
            self.fail(f"{value!r} is out of range: it must be {self._range()}", param, ctx)
        return v


DURATION = Duration()
SIZE = Size()
PRICING = click.Choice(["on_demand", "spot"])


def _money(v: float | None) -> str:
    return "" if v is None else f"${v:,.2f}" if v < 1000 else f"${v:,.0f}"


def _competition_cost(ctx: click.Context, competition_id: str | None) -> Any:
    from referee.platform.cost.config import CostConfig, cost_config
    if competition_id is None:
        return CostConfig()
    return cost_config(open_store(ctx).get_competition(competition_id))


@click.group()
def cost() -> None:
    """Cost: fleet planning, simulation, spend reports and score-versus-cost."""


# -- plan -------------------------------------------------------------------------------------------
@cost.command("plan")
@click.option("-n", "--submissions", type=click.IntRange(min=1), required=True, help="Submissions to run.")
@click.option("--deadline", type=DURATION, required=True, help="Wall time available, e.g. 21d or 504h.")
@click.option("--pilot", "pilot_opts", multiple=True, metavar="TYPE=RUNTIME[,RUNTIME...]",
              help="Pilot runtimes on one instance type, e.g. p3.2xlarge=9h,8.5h (repeatable).")
@click.option("--pilots", "pilot_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML ({type: [9h, 8.5h]}) or CSV (instance_type,runtime) of pilot runtimes.")
@click.option("--fleet", type=click.IntRange(min=1), default=None, help="Instances available (default: as needed).")
@click.option("--restart-margin", type=Number(0, 10), default=0.5, show_default=True,
              help="Extra instances for restarts (0.5 = +50%).")
@click.option("--pricing", type=PRICING, default=None, help="on_demand (default) or spot.")
@click.option("--failure-rate", type=Number(0, 1, high_open=True), default=0.0, show_default=True,
              help="Probability an attempt is lost to the infrastructure (spot reclaim, node loss).")
@click.option("--estimator", type=click.Choice(["mean", "median", "p90", "max"]), default="mean", show_default=True,
              help="How pilot runtimes become one runtime.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="GPUs per job (packs jobs per instance).")
@click.option("--cpu", type=Number(0, low_open=True), default=None, help="vCPUs per job (packs jobs per instance).")
@click.option("--memory", type=SIZE, default=None, help="Memory per job, e.g. 8GiB (packs jobs per instance).")
@click.option("--competition", "competition_id", default=None,
              help="Use this loaded competition's price overrides and pricing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def plan_cmd(ctx: click.Context, submissions: int, deadline: float, pilot_opts: tuple[str, ...],
             pilot_file: str | None, fleet: int | None, restart_margin: float, pricing: str | None,
             failure_rate: float, estimator: str, gpus: int | None, cpu: float | None, memory: int | None,
             competition_id: str | None, as_json: bool) -> None:
    """Project cost and wall time per instance type from pilot runtimes; recommend the cheapest in time."""
    from referee.platform.cost.planner import (
        PlanRequest,
        load_pilot_file,
        parse_pilot_option,
        plan,
    )

    cfg = _competition_cost(ctx, competition_id)
    pilots: dict[str, list[float]] = load_pilot_file(pilot_file) if pilot_file else {}
    for opt in pilot_opts:
        name, runs = parse_pilot_option(opt)
        pilots.setdefault(name, []).extend(runs)
    mem = memory
    req = PlanRequest(submissions=submissions, deadline_s=deadline, pilots=pilots, fleet=fleet,
                      restart_margin=restart_margin, pricing=cast(Any, pricing or cfg.pricing), failure_rate=failure_rate,
                      estimator=cast(Any, estimator), cpu=cpu, memory=mem, gpus=gpus)
    result = plan(req, cfg.catalog)
    if as_json:
        emit_json(result.to_dict())
        return
    from rich.table import Table
    t = Table(title=f"{submissions:,} submissions, deadline {deadline / DAY:.1f} days ({req.pricing})",
              caption="instances: needed for the deadline -> with the restart margin")
    for col in ("instance type", "h/run", "$/h", "GPU-h", "cost", "instances", "days", "in time"):
        t.add_column(col, justify="left" if col == "instance type" else "right")
    for o in result.options:
        t.add_row(o.instance_type, f"{o.runtime_s / HOUR:.2f}", f"{o.hourly:.3f}", f"{o.gpu_hours:,.0f}",
                  _money(o.cost), "-" if o.instances_needed is None else
                  f"{o.instances_needed} -> {o.instances_with_margin}",
                  "-" if o.makespan_s is None else f"{o.makespan_s / DAY:.1f}", "yes" if o.meets_deadline else "no")
    c = console()
    c.print(t)
    for o in result.options:
        if o.note:
            c.print(f"  {o.instance_type}: {o.note}")
    c.print(("[green]recommended:[/green] " if result.recommended else "[red]no option:[/red] ") + result.message)
    c.print("[dim]prices: public list prices, us-east-1 (`referee cost prices` shows the table and its source)[/dim]")


# -- simulate ---------------------------------------------------------------------------------------
@cost.command("simulate")
@click.option("-n", "--submissions", type=click.IntRange(min=1), default=4200, show_default=True)
@click.option("--runtime", type=DURATION, default="9h", show_default=True, help="Mean runtime per submission.")
@click.option("--runtime-cv", type=Number(0), default=0.1, show_default=True,
              help="Spread of runtimes (coefficient of variation).")
@click.option("--instance-type", default="p3.2xlarge", show_default=True)
@click.option("--fleet", type=click.IntRange(min=1), default=None,
              help="Instances (default: planned for --deadline with --restart-margin).")
@click.option("--deadline", type=DURATION, default="21d", show_default=True)
@click.option("--restart-margin", type=Number(0, 10), default=0.5, show_default=True)
@click.option("--jobs-per-instance", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--teams", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--pricing", type=PRICING, default=None)
@click.option("--failure-rate", type=Number(0, 1, high_open=True), default=0.05, show_default=True,
              help="Probability an attempt is lost (spot reclaim, node loss); it is retried.")
@click.option("--restart-delay", type=DURATION, default="5m", show_default=True,
              help="How long a slot that lost its job takes to come back.")
@click.option("--max-infra-retries", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--timeout", type=DURATION, default=None, help="Job timeout (longer runs fail, charged).")
@click.option("--budget", type=Number(0), default=None, help="Competition budget in USD.")
@click.option("--team-budget", type=Number(0), default=None, help="Per-team budget in USD.")
@click.option("--share", type=click.Choice(["whole", "reserved"]), default=None,
              help="What a job pays (cost.share): its whole instance (default), or the share it reserves.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="GPUs per job (prices a reserved share).")
@click.option("--cpu", type=Number(0, low_open=True), default=None, help="vCPUs per job (prices a reserved share).")
@click.option("--memory", type=SIZE, default=None, help="Memory per job, e.g. 8GiB (prices a reserved share).")
@click.option("--competition", "competition_id", default=None,
              help="Use this loaded competition's prices, pricing, share and budgets.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def simulate_cmd(ctx: click.Context, submissions: int, runtime: float, runtime_cv: float, instance_type: str,
                 fleet: int | None, deadline: float, restart_margin: float, jobs_per_instance: int, teams: int,
                 pricing: str | None, failure_rate: float, restart_delay: float, max_infra_retries: int,
                 timeout: float | None, budget: float | None, team_budget: float | None, share: str | None,
                 gpus: int | None, cpu: float | None, memory: int | None, competition_id: str | None, seed: int,
                 as_json: bool) -> None:
    """Simulate the run on a fleet (real scheduling policy, budget check and pricing; simulated clock)."""
    from referee.platform.cost.planner import PlanRequest, plan
    from referee.platform.cost.simulation import SimulationConfig, simulate

    cfg = _competition_cost(ctx, competition_id)
    updates = {k: v for k, v in (("pricing", pricing), ("budget", budget), ("team_budget", team_budget),
                                 ("share", share)) if v is not None}
    cfg = cfg.model_copy(update=updates) if updates else cfg
    it = cfg.catalog.get(instance_type)  # an unknown type is an error naming the known ones
    mem = memory
    if cfg.share == "reserved" and cpu is None and mem is None and gpus is None and jobs_per_instance > 1:
        cpu = it.vcpu / jobs_per_instance  # a job reserves its slot: 1 / jobs_per_instance of the instance
    planned = ""
    if fleet is None:
        p = plan(PlanRequest(submissions=submissions, deadline_s=deadline, pilots={instance_type: [runtime]},
                             restart_margin=restart_margin, pricing=cfg.pricing), cfg.catalog)
        option = p.options[0]
        if option.instances_with_margin is None:
            raise click.UsageError(f"one {runtime / HOUR:g} h submission does not fit in the deadline; give --fleet")
        fleet = math.ceil(option.instances_with_margin / jobs_per_instance)
        planned = f" (planned for {deadline / DAY:g} days with a {restart_margin:.0%} restart margin)"
    r = simulate(SimulationConfig(submissions=submissions, runtime_s=runtime, fleet=fleet, instance_type=instance_type,
                                  jobs_per_instance=jobs_per_instance, runtime_cv=runtime_cv, teams=teams,
                                  failure_rate=failure_rate, restart_delay_s=restart_delay,
                                  max_infra_retries=max_infra_retries, timeout_s=timeout, cost=cfg, seed=seed,
                                  cpu=cpu, memory=mem, gpus=gpus or 0))
    if as_json:
        emit_json(r.to_dict())
        return
    c = console()
    c.print(f"[bold]{submissions:,} submissions[/bold] x {runtime / HOUR:g} h on {fleet} x {instance_type}"
            f"{planned}, {cfg.pricing}, failure rate {failure_rate:g}")
    c.print(f"  makespan     {r.makespan_s / HOUR:,.1f} h ({r.makespan_s / DAY:.1f} days)")
    c.print(f"  cost         {_money(r.cost)} charged (each job pays {r.share:.0%} of its instance, "
            f"cost.share: {cfg.share}); {_money(r.provisioned_cost)} if the fleet stays on throughout")
    c.print(f"  utilisation  {r.utilisation:.1%} of {fleet * jobs_per_instance} slots; peak in flight "
            f"{r.peak_in_flight}")
    c.print(f"  outcomes     {r.completed:,} completed, {r.retries:,} retried (not charged), {r.gave_up} gave up, "
            f"{r.timed_out} timed out; {r.lost_hours:,.0f} h lost to failures")
    if r.held_teams:
        why = next(iter(r.held_teams.values()))
        c.print(f"  [yellow]held[/yellow] {len(r.held_teams):,} team(s) over cost.team_budget (a hold never "
                f"stops other teams). First: {why}")
    if r.pending and r.paused_reason:
        c.print(f"  [yellow]paused[/yellow] with {r.pending:,} pending: {r.paused_reason}")
    elif r.pending:
        c.print(f"  {r.pending:,} submissions of held teams left pending")
    c.print(f"[dim]{r.events:,} events, {r.dispatch_rounds:,} dispatch rounds in {r.wall_s:.2f} s[/dim]")


# -- report -----------------------------------------------------------------------------------------
@cost.command("report")
@click.argument("competition_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def report_cmd(ctx: click.Context, competition_id: str, as_json: bool) -> None:
    """Totals per competition, team, submission and instance type (USD, GPU-hours, instance-hours)."""
    from referee.platform.cost.config import cost_config
    from referee.platform.cost.ledger import report

    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    data = report(store, comp.id, cost_config(comp))
    if as_json:
        emit_json(data)
        return
    from rich.table import Table
    c = console()
    tot, b = data["total"], data["budget"]
    c.print(f"[bold]{comp.title}[/bold] ({comp.id}): {_money(tot.get('USD', 0.0))}, "
            f"{tot.get('gpu-hours', 0.0):,.2f} GPU-hours, {tot.get('instance-hours', 0.0):,.2f} instance-hours, "
            f"{tot['jobs']} jobs")
    plat = data["platform"]
    if plat["jobs"]:
        c.print(f"of which {_money(plat.get('USD', 0.0))} ({plat['jobs']} job{'s' if plat['jobs'] != 1 else ''}) "
                "went to attempts lost to the platform: retried, paid by the host, not charged to teams")
    if b["budget"] is not None:
        c.print(f"budget {_money(b['budget'])}, remaining {_money(b['remaining'])}")
    for title, key, rows in (("per team", "team", data["teams"]),
                             ("per submission", "submission", data["submissions"]),
                             ("per instance type", "instance_type", data["instance_types"])):
        t = Table(title=title)
        extra = ["team", "status"] if key == "submission" else []
        units = ["USD", "instance-h"] if key == "instance_type" else ["USD", "GPU-h", "instance-h"]
        for col in (key, *extra, *units, "jobs"):
            t.add_column(col, justify="left" if col in (key, "team", "status") else "right")
        for r in rows:
            cells = {"USD": _money(r.get("USD", 0.0)), "GPU-h": f"{r.get('gpu-hours', 0.0):,.2f}",
                     "instance-h": f"{r.get('instance-hours', 0.0):,.2f}"}
            name = f"#{r[key]}" if key == "submission" else str(r[key])
            t.add_row(name, *[str(r[x]) for x in extra], *[cells[u] for u in units], str(r.get("jobs", "")))
        c.print(t)


# -- score versus cost ------------------------------------------------------------------------------
@cost.command("pareto")
@click.argument("competition_id")
@click.option("--phase", default=None)
@click.option("--split", type=click.Choice(["public", "private"]), default="public", show_default=True)
@click.option("--mode", type=click.Choice(["best", "latest", "all"]), default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pareto_cmd(ctx: click.Context, competition_id: str, phase: str | None, split: str, mode: str,
               as_json: bool) -> None:
    """Score versus cost, cheapest first, with the Pareto front marked."""
    from referee.platform.cost.ledger import submission_totals
    from referee.platform.cost.pareto import score_cost_view
    from referee.platform.leaderboard import build as lbm

    store = open_store(ctx)
    comp = store.get_competition(competition_id)
    lb = lbm.build(store, comp, phase=phase, split=split, mode=mode, enrich=False)
    view = score_cost_view(lb.entries, submission_totals(store, comp.id), lb.primary, lb.direction == "maximize")
    if as_json:
        emit_json({"primary": lb.primary, "direction": lb.direction,
                   "points": [r.__dict__ for r in view]})
        return
    from rich.table import Table
    t = Table("submission", "team", "cost", lb.primary, "front",
              title=f"{comp.title}: {lb.primary} ({lb.direction}) vs cost — {lb.split}, {lb.mode}")
    for r in view:
        t.add_row(f"#{r.submission_id}", r.team, _money(r.cost), "" if r.score is None else f"{r.score:.5f}",
                  "*" if r.on_front else "")
    console().print(t)


# -- prices -----------------------------------------------------------------------------------------
@cost.command("prices")
@click.option("--competition", "competition_id", default=None, help="Include this competition's overrides.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def prices_cmd(ctx: click.Context, competition_id: str | None, as_json: bool) -> None:
    """The instance price table (on-demand and typical spot, vCPU, memory, GPUs)."""
    cat = _competition_cost(ctx, competition_id).catalog
    rows = [it.to_dict() for it in sorted(cat, key=lambda it: (it.family, it.on_demand))]
    if as_json:
        emit_json({"source": cat.source, "as_of": cat.as_of, "instances": rows})
        return
    from rich.table import Table
    t = Table("instance type", "on-demand $/h", "spot $/h", "vCPU", "GiB", "GPUs", "GPU", caption=cat.source)
    for r in rows:
        t.add_row(r["name"], f"{r['on_demand']:.4f}", f"{r['spot']:.4f}", f"{r['vcpu']:g}", f"{r['memory_gib']:g}",
                  str(r["gpus"]), r["gpu_model"] or "")
    console().print(t)
    console().print(f"[dim]{cat.as_of}[/dim]")
