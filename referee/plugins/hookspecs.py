"""Every hook referee calls, in one module. Plugins implement them with ``@hookimpl``.

A plugin is any module or object registered under the entry point group ``referee``::

    # pyproject.toml of a plugin package
    [project.entry-points.referee]
    my_metric = "my_package.referee_plugin"

    # my_package/referee_plugin.py
    import numpy as np
    from referee.plugins import hookimpl, ScorerInfo

    @hookimpl
    def referee_scorers():
        return [ScorerInfo(
            name="mae", version="1.0", higher_is_better=False, accepts=("probability",),
            statistics=lambda p, r, params: np.stack([np.abs(p - r.astype(float)), np.ones(len(p))], 1),
            aggregate=lambda s, params: s[..., 0] / s[..., 1],
        )]
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("referee")
hookimpl = pluggy.HookimplMarker("referee")


@hookspec
def referee_scorers() -> list:
    """Return a list of ``ScorerInfo`` records.

    Example::

        @hookimpl
        def referee_scorers():
            return [ScorerInfo(name="accuracy", version="1", higher_is_better=True, accepts=("label",),
                               statistics=..., aggregate=lambda s, p: s[..., 0] / s[..., 1])]
    """
    return []

@hookspec
def referee_backends() -> list:
    """Return a list of ``BackendInfo`` records (factories by name: local, docker, ray, aws-batch, ...).

    Example::

        @hookimpl
        def referee_backends():
            return [BackendInfo(name="my-cluster", factory=lambda options, workspace: MyBackend(**options))]
    """
    return []

@hookspec
def referee_cost_trackers() -> list:
    """Return a list of ``CostTrackerInfo`` records.

    Example::

        @hookimpl
        def referee_cost_trackers():
            return [CostTrackerInfo(name="gpu-hours", factory=lambda competition, store: GpuHours())]
    """
    return []

@hookspec
def referee_submission_kinds() -> list:
    """Return a list of ``SubmissionKindInfo`` records (validators/packagers for new submission kinds).

    Example::

        @hookimpl
        def referee_submission_kinds():
            return [SubmissionKindInfo(name="onnx", detect=lambda p: str(p).endswith(".onnx"), ingest=...)]
    """
    return []

@hookspec
def referee_job_started(job: Any, competition: Any, store: Any) -> None:
    """Called when a backend job starts running (``job`` is a ``JobRecord``; ``store`` the workspace).

    Example::

        @hookimpl
        def referee_job_started(job, competition, store):
            print("started", job.job_id, job.backend)
    """


@hookspec
def referee_job_finished(job: Any, result: Any, competition: Any, store: Any) -> None:
    """Called when a backend job reaches a final state (``result`` is a ``JobStatus``).

    Example::

        @hookimpl
        def referee_job_finished(job, result, competition, store):
            print(job.job_id, result.state, result.duration_s)
    """


@hookspec(firstresult=True)
def referee_dispatch_check(competition: Any, job: Any, store: Any, backend: str) -> str | None:
    """Return a reason to hold ``job`` back (for example a budget), or None to allow it.
    ``backend`` is the name of the backend the job would run on. A plain string pauses all
    dispatching; ``Hold(reason, team=...)`` holds back only that team's submissions.

    Example::

        @hookimpl
        def referee_dispatch_check(competition, job, store, backend):
            return "maintenance window" if is_maintenance() else None
    """


@hookspec
def referee_leaderboard_enrich(store: Any, competition: Any, leaderboard: Any) -> None:
    """Add columns to a built leaderboard: fill ``entry.extra[col]`` and append ``col`` to
    ``leaderboard.columns_extra`` (cost, tiers, behavioural failure rates, ...).

    Example::

        @hookimpl
        def referee_leaderboard_enrich(store, competition, leaderboard):
            leaderboard.columns_extra.append("n_subs")
            for e in leaderboard.entries:
                e.extra["n_subs"] = e.n_submissions
    """


@hookspec
def referee_prepare_competition(competition: Any) -> None:
    """Called when a competition is loaded, before validation: derive data the spec describes
    (for example, export a CheckList suite's cases as inputs and references).

    Example::

        @hookimpl
        def referee_prepare_competition(competition):
            if competition.checklist:
                build_suite_files(competition)
    """
