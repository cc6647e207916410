"""Budgets: before a job is dispatched, spent + committed + projected must stay within the budget.

``dispatch_decision`` is a pure function over those numbers (competition-wide and for the job's team):
None to go ahead, a reason string to pause all dispatching (the competition's budget), or a team-scoped
``Hold`` (only the team's budget). The dispatch hook (reading the store, ``check_dispatch``) and the fleet
simulation (reading its own clock) both call it, with the job priced by the same ``job_rate`` rule, so a
simulated budget pauses or holds a team exactly where a real run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from referee.platform.cost.config import CostConfig, Rate, cost_config
from referee.platform.cost.ledger import running_jobs, spent
from referee.platform.cost.trackers import SECONDS_PER_HOUR

EPSILON = 1e-9


@dataclass(frozen=True)
class Outlay:
    """Money already spent, committed to running jobs, and projected for the next job."""

    spent: float
    committed: float
    running: int
    projected: float

    @property
    def total(self) -> float:
        return self.spent + self.committed + self.projected


def projected_hours(cfg: CostConfig, timeout_s: float | None) -> float:
    """Hours a not-yet-finished job is budgeted for: the pilot estimate if given, else its timeout."""
    seconds = cfg.estimated_runtime if cfg.estimated_runtime is not None else (timeout_s or 0.0)
    return seconds / SECONDS_PER_HOUR


def projected_cost(cfg: CostConfig, rate: Rate, timeout_s: float | None) -> float:
    return projected_hours(cfg, timeout_s) * rate.per_hour


def _line(scope: str, limit: float, o: Outlay, what: str) -> str:
    return (f"{scope} budget of ${limit:,.2f} would be exceeded: spent ${o.spent:,.2f} + committed "
            f"${o.committed:,.2f} ({o.running} running job{'s' if o.running != 1 else ''}) + {what} "
            f"${o.projected:,.2f} = ${o.total:,.2f}")


def budget_reason(cfg: CostConfig, competition_id: str, outlay: Outlay, *, team: str | None = None,
                  team_outlay: Outlay | None = None, what: str = "the next job") -> str | None:
    """A message saying which budget the next job would exceed, or None when it fits."""
    problems = []
    if cfg.budget is not None and outlay.total > cfg.budget + EPSILON:
        problems.append(_line(f"competition {competition_id!r}", cfg.budget, outlay, what))
    if cfg.team_budget is not None and team_outlay is not None and team_outlay.total > cfg.team_budget + EPSILON:
        problems.append(_line(f"team {team!r}", cfg.team_budget, team_outlay, what))
    if not problems:
        return None
    if len(problems) == 1 and team is not None and problems[0].startswith(f"team {team!r}"):
        return (problems[0] + f". Team {team!r}'s submissions are held; other teams keep running: raise "
                "cost.team_budget in the competition spec and load it again, or cancel the team's pending "
                f"submissions (`referee cost report {competition_id}` shows what was spent).")
    return ("; ".join(problems) + ". Dispatch paused, nothing more was started: raise cost.budget / "
            "cost.team_budget in the competition spec and load it again, or cancel pending submissions "
            f"(`referee cost report {competition_id}` shows what was spent).")


def dispatch_decision(cfg: CostConfig, competition_id: str, outlay: Outlay, *, team: str,
                      team_outlay: Outlay | None, what: str = "the next job") -> Any:
    """The budget rule for one job: None to go ahead, a reason string to pause everything (the
    competition's budget would be exceeded), or ``Hold(reason, team)`` when only the team's would be."""
    reason = budget_reason(cfg, competition_id, outlay, what=what)
    if reason:
        return reason  # the competition's budget: nothing more may start
    reason = budget_reason(cfg, competition_id, outlay, team=team, team_outlay=team_outlay, what=what)
    if reason:
        from referee.plugins.records import Hold
        return Hold(reason, team=team)  # only this team's budget: the others keep running
    return None


def job_rate(cfg: CostConfig, backend: str | None, *, instance_type: str | None, cpu: float | None,
             memory: int | None, gpus: int | None) -> Rate:
    """The rate a job about to be dispatched is projected at (share included: ``cost.share``)."""
    return cfg.rate(backend, requested=instance_type, cpu=cpu, memory=memory, gpus=gpus or 0)


def job_label(cfg: CostConfig, rate: Rate, submission: Any, timeout_s: float | None) -> str:
    """How a budget message names the job it stopped."""
    where = rate.instance_type or "unpriced"
    return f"submission #{submission} ({where}, {rate.pricing}, up to {projected_hours(cfg, timeout_s):g} h)"


def _spec_rate(cfg: CostConfig, backend: str, resources: dict[str, Any]) -> Rate:
    return job_rate(cfg, backend, instance_type=resources.get("instance_type"), cpu=resources.get("cpu"),
                    memory=resources.get("memory"), gpus=resources.get("gpus"))


def check_dispatch(store: Any, competition: Any, job: Any, backend: str | None = None) -> Any:
    """The dispatch check for one ``JobSpec`` on ``backend``: None to go ahead, the reason to pause
    everything (competition budget), or a team-scoped ``Hold`` (only the team's budget is exceeded)."""
    cfg = cost_config(competition)
    if cfg.budget is None and cfg.team_budget is None:
        return None
    backend = backend or competition.backend.name
    res = job.resources
    rate = job_rate(cfg, backend, instance_type=res.instance_type, cpu=res.cpu, memory=res.memory, gpus=res.gpus)
    projected = projected_cost(cfg, rate, job.timeout_s)
    team = store.get_submission(job.submission_id).team
    committed = team_committed = 0.0
    running = team_running = 0
    for r in running_jobs(store, competition.id):
        amount = projected_cost(cfg, _spec_rate(cfg, r.backend, r.spec.get("resources", {})), r.spec.get("timeout_s"))
        committed += amount
        running += 1
        if r.team == team:
            team_committed += amount
            team_running += 1
    outlay = Outlay(spent(store, competition.id), committed, running, projected)
    team_outlay = None
    if cfg.team_budget is not None:
        team_outlay = Outlay(spent(store, competition.id, team), team_committed, team_running, projected)
    return dispatch_decision(cfg, competition.id, outlay, team=team, team_outlay=team_outlay,
                             what=job_label(cfg, rate, job.submission_id, job.timeout_s))
