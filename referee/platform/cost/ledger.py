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

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from referee.platform.cost.config import USD, CostConfig
from referee.platform.store import Store, utcnow


@dataclass(frozen=True)
class CostEntry:
    """One amount a tracker charges a job: USD, GPU-hours, instance-hours, ..."""

    amount: float
    unit: str
    details: dict[str, Any] = field(default_factory=dict)


PLATFORM = "platform"  # the account of attempts lost to the platform: the host pays, the team does not
PLATFORM_ERROR = "platform_error"  # FailureReason.PLATFORM_ERROR's value, as the jobs table stores it
# SQL: a cost row charged to its team (not to the platform account)
TEAM_CHARGED = f"COALESCE(json_extract(details_json, '$.account'), '') <> '{PLATFORM}'"


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

    def details(e: CostEntry) -> str:
        d = {**e.details, "account": account} if account else {k: v for k, v in e.details.items()
                                                                if k != "account"}
        return json.dumps(d, default=str)

    rows = [(job.competition_id, job.submission_id, job.id, job.team, tracker, float(e.amount), e.unit,
             details(e), utcnow()) for e in entries]
    if rows:
        with store.tx() as c:
            c.executemany("INSERT INTO costs(competition_id, submission_id, job_id, team, tracker, amount, unit, "
                          "details_json, at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(job_id, tracker, unit) DO "
                          "UPDATE SET amount=excluded.amount, details_json=excluded.details_json, at=excluded.at",
                          rows)
    return len(rows)


def spent(store: Store, competition_id: str, team: str | None = None) -> float:
    """USD recorded so far for a competition (everything, platform failures included), or charged to
    one of its teams (attempts lost to the platform left out)."""
    sql = "SELECT COALESCE(SUM(amount), 0) FROM costs WHERE competition_id=? AND unit=?"
    args: tuple = (competition_id, USD)
    if team is not None:
        sql += f" AND team=? AND {TEAM_CHARGED}"
        args += (team,)
    return float(store.query(sql, args)[0][0])


@dataclass(frozen=True)
class RunningJob:
    """A dispatched job that has not finished: what the budget counts as committed."""

    submission_id: int
    team: str
    backend: str
    spec: dict[str, Any]


def running_jobs(store: Store, competition_id: str) -> list[RunningJob]:
    rows = store.query("SELECT j.submission_id, j.backend, j.spec_json, s.team FROM jobs j JOIN submissions s "
                       "ON s.id = j.submission_id WHERE s.competition_id=? AND j.state IN ('queued','running')",
                       (competition_id,))
    return [RunningJob(r["submission_id"], r["team"], r["backend"], json.loads(r["spec_json"] or "{}"))
            for r in rows]


def submission_totals(store: Store, competition_id: str, unit: str = USD, *,
                      include_platform: bool = False) -> dict[int, float]:
    """What each submission cost its team (attempts lost to the platform left out unless asked for)."""
    where = "" if include_platform else f" AND {TEAM_CHARGED}"
    rows = store.query(f"SELECT submission_id, SUM(amount) AS total FROM costs WHERE competition_id=? AND unit=?"
                       f"{where} GROUP BY submission_id", (competition_id, unit))
    return {int(r["submission_id"]): float(r["total"]) for r in rows if r["submission_id"] is not None}


def has_costs(store: Store, competition_id: str) -> bool:
    return bool(store.query("SELECT 1 FROM costs WHERE competition_id=? LIMIT 1", (competition_id,)))


def report(store: Store, competition_id: str, cfg: CostConfig | None = None) -> dict[str, Any]:
    """Totals per competition, team, submission and instance type, every unit side by side.

    ``total`` and ``instance_types`` are the host's bill (everything); ``teams`` and ``submissions`` what
    was charged to teams; ``platform`` the attempts lost to the platform (paid by the host only)."""
    def grouped(key: str, where: str = "") -> dict[Any, dict[str, float]]:
        out: dict[Any, dict[str, float]] = {}
        for r in store.query(f"SELECT {key} AS k, unit, SUM(amount) AS total, COUNT(DISTINCT job_id) AS jobs "
                             f"FROM costs WHERE competition_id=?{where} GROUP BY {key}, unit ORDER BY {key}",
                             (competition_id,)):
            d = out.setdefault(r["k"], {"jobs": 0})
            d[r["unit"]] = round(float(r["total"]), 6)
            d["jobs"] = max(d["jobs"], int(r["jobs"]))
        return out

    total = grouped("competition_id").get(competition_id, {"jobs": 0})
    platform = grouped("competition_id", f" AND NOT ({TEAM_CHARGED})").get(competition_id, {"jobs": 0})
    teams = grouped("team", f" AND {TEAM_CHARGED}")
    subs = grouped("submission_id", f" AND {TEAM_CHARGED}")
    status = {s["id"]: (s["team"], s["status"]) for s in
              store.query("SELECT id, team, status FROM submissions WHERE competition_id=?", (competition_id,))}
    by_type: dict[str, dict[str, float]] = {}
    for r in store.query("SELECT json_extract(details_json, '$.instance_type') AS it, unit, SUM(amount) AS total, "
                         "COUNT(DISTINCT job_id) AS jobs FROM costs WHERE competition_id=? AND tracker='instance-time' "
                         "GROUP BY it, unit", (competition_id,)):
        d = by_type.setdefault(r["it"] or "(unpriced)", {"jobs": 0})
        d[r["unit"]] = round(float(r["total"]), 6)
        d["jobs"] = max(d["jobs"], int(r["jobs"]))
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
