"""Built-in cost plugin: the ``cost:`` section, the instance-time and GPU-hours trackers, cost rows per
finished job, the budget check before dispatch, and the leaderboard's cost and Pareto columns and plot.

Rows of an attempt that failed with ``platform_error`` go to the platform account (the host pays; the
team's spend, budget and cost column leave them out): see ``referee.platform.cost.ledger``.

Trackers from every plugin (``referee_cost_trackers``) run here, so a third-party tracker's entries land
in the same ``costs`` table; ``cost.trackers`` in the competition spec picks which ones run.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from referee.platform.core.errors import RefereeError
from referee.platform.core.jobs import JobRecord, JobSpec, JobState, JobStatus
from referee.platform.core.leaderboard import Leaderboard, LeaderboardColumn
from referee.platform.core.spec import Competition
from referee.platform.cost.budget import check_dispatch
from referee.platform.cost.config import CostConfig, cost_config, cost_problems
from referee.platform.cost.ledger import record
from referee.platform.cost.pareto import cost_columns, cost_plot
from referee.platform.cost.trackers import GpuHoursTracker, InstanceTimeTracker
from referee.platform.store import Store
from referee.plugins.hookspecs import hookimpl
from referee.plugins.manager import get_plugin_manager, get_runtime
from referee.plugins.records import (
    ConfigSection,
    CostTrackerInfo,
    Hold,
    LeaderboardPlot,
)


def _instance_time(competition: Competition, store: Store) -> Any:
    return InstanceTimeTracker.for_competition(competition, store)


def _gpu_hours(competition: Competition, store: Store) -> Any:
    return GpuHoursTracker.for_competition(competition, store)


@hookimpl
def referee_cost_trackers() -> list[CostTrackerInfo]:
    return [
        CostTrackerInfo(name="instance-time", factory=_instance_time,
                        description="hours x hourly price of the job's instance share (on-demand or spot), USD"),
        CostTrackerInfo(name="gpu-hours", factory=_gpu_hours, description="hours x GPUs reserved"),
    ]


def _active_trackers(competition: Competition, store: Store) -> list[Any]:
    """The trackers ``cost.trackers`` picks (default: every installed one), made once per runtime."""
    pm = get_plugin_manager()
    key = (competition.id, str(store.root), json.dumps(competition.section_data("cost"), sort_keys=True, default=str),
           competition.resources.instance_type)

    def make() -> list[Any]:
        wanted = cost_config(competition).trackers
        infos = pm.cost_trackers()
        names = list(infos) if wanted is None else [n for n in wanted if n in infos]
        missing = [] if wanted is None else [n for n in wanted if n not in infos]
        if missing:
            store.event("cost_tracker_missing", f"cost.trackers names {missing}; installed: {sorted(infos)}",
                        competition_id=competition.id)
        return [infos[n].factory(competition, store) for n in names]

    return get_runtime().cache("cost.trackers").get_or_compute(key, make)


def _each_tracker(job: JobRecord, competition: Competition, store: Store, call: str, *args: Any) -> None:
    try:
        trackers = _active_trackers(competition, store)
    except RefereeError as exc:  # an invalid cost section: tell the host, never stop the run
        store.event("cost_error", str(exc), competition_id=competition.id, job_id=job.id)
        return
    result = args[0] if args else None
    for tracker in trackers:
        name = getattr(tracker, "name", type(tracker).__name__)
        try:
            entries = getattr(tracker, call)(job, *args)
            if call == "job_finished" and entries:  # an attempt lost to the platform: the host's account
                record(store, job, name, entries, result)
            if call == "job_finished":
                _price_backend_attempts(store, job, tracker, name, result)
        except Exception as exc:  # one broken tracker must not stop scoring or the other trackers
            store.event("cost_tracker_error", f"{name}.{call}: {type(exc).__name__}: {exc}",
                        competition_id=competition.id, job_id=job.id, traceback=traceback.format_exc())


def _price_backend_attempts(store: Store, job: JobRecord, tracker: Any, name: str, result: Any) -> None:
    """Earlier tries the backend made on its own (AWS Batch retrying after a spot reclaim) held an instance
    too: each is priced like an attempt, as rows of their own (``<tracker>@try<n>``), in the platform's
    account when the platform lost it."""
    for n, tried in enumerate(getattr(result, "backend_attempts", None) or (), start=1):
        status = JobStatus(JobState.FAILED, tried.reason, tried.message, started_at=tried.started_at,
                           finished_at=tried.finished_at, node=tried.node, instance_type=tried.instance_type)
        entries = tracker.job_finished(job, status)
        if entries:
            record(store, job, f"{name}@try{n}", entries, status)


@hookimpl
def referee_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="cost", model=CostConfig, check=cost_problems,
                          description="pricing (instance type, on-demand or spot), budgets, trackers")]


@hookimpl
def referee_job_started(job: JobRecord, competition: Competition, store: Store) -> None:
    _each_tracker(job, competition, store, "job_started")


@hookimpl
def referee_job_finished(job: JobRecord, result: JobStatus, competition: Competition, store: Store) -> None:
    _each_tracker(job, competition, store, "job_finished", result)


@hookimpl
def referee_dispatch_check(competition: Competition, job_spec: JobSpec, store: Store,
                           backend: str) -> str | Hold | None:
    try:
        return check_dispatch(store, competition, job_spec, backend=backend)
    except RefereeError as exc:  # invalid cost section: pausing is safer than spending blind
        return f"cost settings are invalid, so the budget cannot be checked: {exc}"


@hookimpl
def referee_leaderboard_columns(store: Store, competition: Competition,
                                leaderboard: Leaderboard) -> list[LeaderboardColumn]:
    return cost_columns(store, competition, leaderboard)


@hookimpl
def referee_leaderboard_plots(store: Store, competition: Competition,
                              leaderboard: Leaderboard) -> list[LeaderboardPlot]:
    svg = cost_plot(leaderboard)
    if not svg:
        return []
    side = "lower" if leaderboard.direction == "minimize" else "upper"
    return [LeaderboardPlot(key="cost", title="Score against cost", svg=svg,
                            caption=f"Score against cost: better and cheaper entries lie to the {side} left; "
                                    "outlined points (joined by the dashed line) are the Pareto front.")]
