"""Built-in cost trackers: instance-time x price (on-demand or spot), and GPU-hours.

A tracker is what a ``CostTrackerInfo.factory(competition, store)`` returns: an object with a ``name``,
``job_started(job)`` and ``job_finished(job, result) -> list[CostEntry]``. The built-in cost plugin
writes the entries into the store, one row per (job, tracker, unit).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from referee.platform.cost.config import USD, CostConfig, Rate, cost_config
from referee.platform.cost.ledger import CostEntry

SECONDS_PER_HOUR = 3600.0


class CostTracker(Protocol):
    name: str

    def job_started(self, job: Any) -> None: ...

    def job_finished(self, job: Any, result: Any) -> Iterable[CostEntry]: ...


def job_hours(job: Any, result: Any = None) -> float:
    """Wall-clock hours a job held its machine, from the backend's own times.

    A final status without ``started_at`` means the job never started (cancelled or lost while queued, a
    submit that failed): zero hours, never the time from dispatch to finish, which is queue time. Only
    without any status (a resumed scheduler re-finishing a job) do the stored job times stand in."""
    seconds = None
    if result is not None:
        if getattr(result, "started_at", None) is None:
            return 0.0
        seconds = getattr(result, "duration_s", None)  # None: no finish time reported
    if seconds is None:
        seconds = job.duration_s  # the stored times (started_at is the backend's when it reported one)
    return (seconds or 0.0) / SECONDS_PER_HOUR


def job_rate(cfg: CostConfig, job: Any, result: Any = None) -> Rate:
    """The rate a finished ``JobRecord`` is priced at (also used for budget projections)."""
    return cfg.rate(job.backend, requested=job.instance_type, reported=getattr(result, "instance_type", None),
                    cpu=job.cpu, memory=job.memory, gpus=job.gpus or 0)


class InstanceTimeTracker:
    """USD = hours x the hourly price of the job's share of its instance; also records instance-hours."""

    name = "instance-time"

    def __init__(self, cfg: CostConfig):
        self.cfg = cfg

    @classmethod
    def for_competition(cls, competition: Any, store: Any = None) -> "InstanceTimeTracker":
        return cls(cost_config(competition))

    def job_started(self, job: Any) -> None:
        """Nothing to charge yet: the budget counts running jobs from the store."""

    def job_finished(self, job: Any, result: Any) -> list[CostEntry]:
        hours = job_hours(job, result)
        rate = job_rate(self.cfg, job, result)
        details = {**rate.to_dict(), "hours": hours, "attempt": job.attempt, "state": job.state}
        return [CostEntry(hours * rate.per_hour, USD, details),
                CostEntry(hours * rate.share, "instance-hours", {"instance_type": rate.instance_type,
                                                                 "share": rate.share})]


class GpuHoursTracker:
    """GPU-hours = hours x GPUs the job reserved."""

    name = "gpu-hours"

    @classmethod
    def for_competition(cls, competition: Any, store: Any = None) -> "GpuHoursTracker":
        return cls()

    def job_started(self, job: Any) -> None:
        """GPU-hours are known only when the job ends."""

    def job_finished(self, job: Any, result: Any) -> list[CostEntry]:
        gpus = job.gpus or 0
        return [CostEntry(job_hours(job, result) * gpus, "gpu-hours", {"gpus": gpus,
                                                                       "instance_type": job.instance_type})]
