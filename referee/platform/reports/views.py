"""Read-only views of submissions shared by the CLI and the web app."""

from __future__ import annotations

from typing import Any

from referee.platform.core.jobs import FailureReason, SubmissionStatus
from referee.platform.store import Store, SubmissionRow
from referee.scoring.engine import SCORER_ERROR_EVENT


def submission_row(s: SubmissionRow, waiting: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of a submission list; ``waiting``: a job of it stuck waiting for a machine (the backend's
    reason, since when), from ``Store.stuck_jobs``."""
    return {"id": s.id, "team": s.team, "kind": s.kind, "phase": s.phase, "status": s.status.value,
            "failure_reason": s.failure_reason, "created_at": s.created_at, "filename": s.filename,
            "description": s.description, "hidden_reason": s.hidden_reason, "baseline": bool(s.baseline),
            "waiting": waiting if s.status is SubmissionStatus.RUNNING else None}


def submission_table(store: Store, competition_id: str, team: str | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
    """A competition's (or one team's) submissions, oldest first; ``limit``: the newest N, newest first."""
    stuck = store.stuck_jobs(competition_id)
    if limit is not None:
        rows, _ = store.submissions_page(competition_id, team=team, limit=limit)
        return [submission_row(s, stuck.get(s.id)) for s in rows]
    return [submission_row(s, stuck.get(s.id)) for s in store.submissions(competition_id, team=team)]


def submission_detail(store: Store, sid: int) -> dict[str, Any]:
    s = store.get_submission(sid)
    scores = []
    # a re-run's old scores wait to be replaced
    for r in (store.scores(sid) if s.status is SubmissionStatus.SCORED else []):
        prov = r.provenance
        scores.append({"metric": r.metric, "split": r.split, "value": r.value, "ci_low": r.ci_low,
                       "ci_high": r.ci_high, "n_items": r.n_items, "signature": prov.get("signature"),
                       "provenance": prov, "details": r.details})
    costs = store.job_costs(sid)
    rows = store.jobs_of(sid)
    jobs = [{"id": j.id, "attempt": j.attempt, "backend": j.backend, "state": j.state.value,
             "failure_reason": j.failure_reason, "message": j.message, "exit_code": j.exit_code, "node": j.node,
             "instance_type": j.instance_type, "started_at": j.started_at, "finished_at": j.finished_at,
             "shard": j.shard, "waiting_reason": j.waiting_reason, "stuck_at": j.stuck_at,
             "cost": costs.get(j.id, {})} for j in rows]
    current = [j for j in rows if j.attempt > s.attempt_base]
    waiting = None
    if s.status is SubmissionStatus.RUNNING:
        stuck = [j for j in current if j.stuck_at and not j.state.final]
        if stuck:
            j = min(stuck, key=lambda x: x.stuck_at or "")
            waiting = {"reason": j.waiting_reason, "stuck_at": j.stuck_at, "waiting_since": j.started_at,
                       "shard": j.shard}
    shards = _shard_detail(current, costs)
    explanation = None
    if s.failure_reason:
        try:
            explanation = FailureReason(s.failure_reason).explanation
        except ValueError:
            explanation = None
    # what only the host sees: a failing scorer's traceback (teams are told the host knows)
    host_notes = [{"at": e["at"], "kind": e["kind"], "message": e["message"]}
                  for e in store.events(kind=SCORER_ERROR_EVENT, submission_id=sid)]
    return {"id": s.id, "competition_id": s.competition_id, "team": s.team, "phase": s.phase, "kind": s.kind,
            "sha256": s.sha256, "filename": s.filename, "size": s.size, "status": s.status.value,
            "failure_reason": s.failure_reason, "failure_explanation": explanation,
            "failure_message": s.failure_message, "log_tail": s.log_tail,
            "counts_toward_quota": bool(s.counts_toward_quota), "created_at": s.created_at,
            "updated_at": s.updated_at, "scores": scores, "jobs": jobs, "metadata": s.metadata,
            "host_notes": host_notes, "waiting": waiting, "shards": shards,
            "description": s.description, "hidden_reason": s.hidden_reason, "hidden_at": s.hidden_at,
            "baseline": bool(s.baseline)}


def _shard_detail(jobs: list[Any], costs: dict[int, dict[str, float]]) -> list[dict[str, Any]] | None:
    """Per shard of a sharded run: its latest try's state, how many tries it took, and what they cost."""
    if not any(j.shard is not None for j in jobs):
        return None
    out: dict[int, dict[str, Any]] = {}
    for j in jobs:  # oldest first: the last try of a shard wins
        k = int(j.shard or 0)
        d = out.setdefault(k, {"shard": k, "tries": 0, "cost": {}})
        d.update(tries=d["tries"] + 1, state=j.state.value, failure_reason=j.failure_reason, node=j.node,
                 waiting_reason=j.waiting_reason if j.stuck_at and not j.state.final else None)
        for unit, amount in costs.get(j.id, {}).items():
            d["cost"][unit] = round(d["cost"].get(unit, 0.0) + amount, 6)
    return [out[k] for k in sorted(out)]
