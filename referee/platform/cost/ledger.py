"""Cost rows in the store's ``costs`` table: writing them per job, and totals per submission, team,
competition and instance type.

One row per (job, tracker, unit); writing it again (a resumed scheduler re-finishing a job) replaces it,
so a job is never counted twice.

Accounts: an attempt lost to the platform (its job failed with ``platform_error``: spot reclaim, node
loss, a failed submit or copy-out) is retried and never charged to the team. Its rows are still written
(the host pays for that time) but marked ``"account": "platform"`` in their details: competition totals
and the budget's competition spend include them; a team's spend, its budget, per-submission totals (the
leaderboard's cost column and the Pareto view) and the per-team report leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from referee.platform.cost.config import USD, CostConfig
from referee.platform.store import PLATFORM_ACCOUNT, CostRow, RunningJob, Store


@dataclass(frozen=True)
class CostEntry:
    """One amount a tracker charges a job: USD, GPU-hours, instance-hours, ..."""

    amount: float
    unit: str
    details: dict[str, Any] = field(default_factory=dict)


PLATFORM = PLATFORM_ACCOUNT  # the account of attempts lost to the platform: the host pays, the team does not
PLATFORM_ERROR = "platform_error"  # FailureReason.PLATFORM_ERROR's value, as the jobs table stores it


def account_of(job: Any, result: Any = None) -> str | None:
    """``"platform"`` when the job's attempt failed through the platform's fault, else None (the team)."""
    reason = getattr(result, "reason", None)
    value = getattr(reason, "value", reason)
    if value is None:
        value = getattr(job, "failure_reason", None)
    return PLATFORM if value == PLATFORM_ERROR else None


def record(store: Store, job: Any, tracker: str, entries: Iterable[CostEntry], result: Any = None) -> int:
    """Write a tracker's entries for one job (a ``JobRecord``); returns how many were written. An
    attempt lost to the platform is written to the platform account (see the module docstring)."""
    account = account_of(job, result)

    def details(e: CostEntry) -> dict[str, Any]:
        return {**e.details, "account": account} if account else {k: v for k, v in e.details.items()
                                                                   if k != "account"}

    rows = [CostRow(job.competition_id, job.submission_id, job.id, job.team, tracker, float(e.amount), e.unit,
                    details(e)) for e in entries]
    if rows:
        store.record_costs(rows)
    return len(rows)


def spent(store: Store, competition_id: str, team: str | None = None) -> float:
    """USD recorded so far for a competition (everything, platform failures included), or charged to
    one of its teams (attempts lost to the platform left out)."""
    return store.cost_spent(competition_id, USD, team)


def running_jobs(store: Store, competition_id: str) -> list[RunningJob]:
    return store.running_jobs(competition_id)


def submission_totals(store: Store, competition_id: str, unit: str = USD, *,
                      include_platform: bool = False) -> dict[int, float]:
    """What each submission cost its team (attempts lost to the platform left out unless asked for)."""
    return store.cost_per_submission(competition_id, unit, include_platform=include_platform)


def has_costs(store: Store, competition_id: str) -> bool:
    return store.has_costs(competition_id)


def report(store: Store, competition_id: str, cfg: CostConfig | None = None) -> dict[str, Any]:
    """Totals per competition, team, submission and instance type, every unit side by side.

    ``total`` and ``instance_types`` are the host's bill (everything); ``teams`` and ``submissions`` what
    was charged to teams; ``platform`` the attempts lost to the platform (paid by the host only)."""
    total = store.cost_groups(competition_id, "competition_id").get(competition_id, {"jobs": 0})
    platform = store.cost_groups(competition_id, "competition_id", account="platform").get(competition_id,
                                                                                         {"jobs": 0})
    teams = store.cost_groups(competition_id, "team", account="team")
    subs = store.cost_groups(competition_id, "submission_id", account="team")
    status = {s.id: (s.team, s.status.value) for s in store.submissions(competition_id)}
    by_type = {k or "(unpriced)": v for k, v in store.cost_groups(competition_id, "instance_type").items()}
    out: dict[str, Any] = {
        "competition": competition_id,
        "total": total,
        "platform": platform,
        "teams": [{"team": k, **v} for k, v in teams.items()],
        "submissions": [{"submission": k, "team": status.get(k, ("?", "?"))[0],
                         "status": status.get(k, ("?", "?"))[1], **v} for k, v in subs.items()],
        "instance_types": [{"instance_type": k, **v} for k, v in sorted(by_type.items())],
    }
    if cfg is not None:
        usd = total.get(USD, 0.0)
        out["budget"] = {"budget": cfg.budget, "team_budget": cfg.team_budget, "spent": round(usd, 6),
                         "remaining": None if cfg.budget is None else round(cfg.budget - usd, 6)}
    return out
