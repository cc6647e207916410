"""Built-in cost plugin: the instance-time and GPU-hours trackers, cost rows per finished job, the
budget check before dispatch, and the leaderboard's cost and Pareto columns.

Rows of an attempt that failed with ``platform_error`` go to the platform account (the host pays; the
team's spend, budget and cost column leave them out): see ``referee.platform.cost.ledger``.

Trackers from every plugin (``referee_cost_trackers``) run here, so a third-party tracker's entries land
in the same ``costs`` table; ``cost.trackers`` in the competition spec picks which ones run.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import CostTrackerInfo

log = logging.getLogger(__name__)


def _instance_time(competition: Any, store: Any) -> Any:
    from referee.platform.cost.trackers import InstanceTimeTracker
    return InstanceTimeTracker.for_competition(competition, store)


def _gpu_hours(competition: Any, store: Any) -> Any:
    from referee.platform.cost.trackers import GpuHoursTracker
    return GpuHoursTracker.for_competition(competition, store)


@hookimpl
def referee_cost_trackers():
    return [
        CostTrackerInfo(name="instance-time", factory=_instance_time,
                        description="hours x hourly price of the job's instance share (on-demand or spot), USD"),
        CostTrackerInfo(name="gpu-hours", factory=_gpu_hours, description="hours x GPUs reserved"),
    ]


_trackers: dict[tuple, list[Any]] = {}


def _active_trackers(competition: Any, store: Any) -> list[Any]:
    from referee.platform.cost.config import cost_config
    from referee.plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    key = (id(pm), competition.id, str(getattr(store, "root", "")), repr(competition.cost),
           competition.resources.instance_type)
    if key not in _trackers:
        wanted = cost_config(competition).trackers
        infos = pm.cost_trackers()
        names = list(infos) if wanted is None else [n for n in wanted if n in infos]
        missing = [] if wanted is None else [n for n in wanted if n not in infos]
        if missing:
            store.event("cost_tracker_missing", f"cost.trackers names {missing}; installed: {sorted(infos)}",
                        competition_id=competition.id)
        if len(_trackers) > 256:
            _trackers.clear()
        _trackers[key] = [infos[n].factory(competition, store) for n in names]
    return _trackers[key]


def _each_tracker(job: Any, competition: Any, store: Any, call: str, *args: Any) -> None:
    from referee.platform.core.errors import RefereeError
    from referee.platform.cost.ledger import record

    try:
        trackers = _active_trackers(competition, store)
    except RefereeError as exc:  # an invalid cost section: tell the host, never stop the run
        store.event("cost_error", str(exc), competition_id=competition.id, job_id=job.id)
        return
    for tracker in trackers:
        name = getattr(tracker, "name", type(tracker).__name__)
        try:
            entries = getattr(tracker, call)(job, *args)
            if call == "job_finished" and entries:  # an attempt lost to the platform: the host's account
                record(store, job, name, entries, args[0] if args else None)
        except Exception as exc:  # one broken tracker must not stop scoring or the other trackers
            store.event("cost_tracker_error", f"{name}.{call}: {type(exc).__name__}: {exc}",
                        competition_id=competition.id, job_id=job.id, traceback=traceback.format_exc())


@hookimpl
def referee_job_started(job, competition, store):
    _each_tracker(job, competition, store, "job_started")


@hookimpl
def referee_job_finished(job, result, competition, store):
    _each_tracker(job, competition, store, "job_finished", result)


@hookimpl
def referee_dispatch_check(competition, job, store, backend):
    from referee.platform.core.errors import RefereeError
    from referee.platform.cost.budget import check_dispatch

    try:
        return check_dispatch(store, competition, job, backend=backend)
    except RefereeError as exc:  # invalid cost section: pausing is safer than spending blind
        return f"cost settings are invalid, so the budget cannot be checked: {exc}"


@hookimpl
def referee_leaderboard_enrich(store, competition, leaderboard):
    from referee.platform.cost.pareto import enrich_leaderboard
    enrich_leaderboard(store, competition, leaderboard)


@hookimpl
def referee_prepare_competition(competition):
    """Validate the ``cost:`` section when a competition is loaded (errors name ``cost.<field>``)."""
    from referee.platform.cost.config import cost_config
    cost_config(competition)
