"""Every hook referee calls, in one module. Plugins implement them with ``@hookimpl``.

A plugin is any module or object registered under the entry point group ``referee``::

    # pyproject.toml of a plugin package
    [project.entry-points.referee]
    my_metric = "my_package.referee_plugin"

Each hook's docstring carries an example that runs (``tests/test_hookspecs.py`` runs them with
doctest), and README.md's plugin guide lists every hook. One argument name means one type in every
hook: ``competition`` is a ``Competition``, ``store`` the workspace's ``Store``, ``job`` a
``JobRecord`` (a job the store knows), ``job_spec`` a ``JobSpec`` (a job about to be dispatched),
``leaderboard`` a ``Leaderboard``.
"""

from __future__ import annotations

import pluggy

from referee.platform.core.jobs import JobRecord, JobSpec, JobStatus
from referee.platform.core.leaderboard import Leaderboard, LeaderboardColumn
from referee.platform.core.spec import Competition, Derived
from referee.platform.store import ScoreRow, Store, SubmissionRow
from referee.plugins.records import (
    BackendInfo,
    ConfigSection,
    CostTrackerInfo,
    Hold,
    LeaderboardPlot,
    LeaderboardRenderer,
    ReportPanel,
    ScorerInfo,
    SubmissionKindInfo,
)

hookspec = pluggy.HookspecMarker("referee")
hookimpl = pluggy.HookimplMarker("referee")


# -- what a plugin provides, by name -----------------------------------------------------------------
@hookspec
def referee_scorers() -> list[ScorerInfo]:
    """Return ``ScorerInfo`` records: either per-item statistics plus a pure aggregate of their sums,
    or ``score(predictions, references, params, weights)`` of weighted items (see the README's plugin
    guide). Scorers receive ``Predictions`` aligned to the references, and the references themselves.

    Example (the README's plugin, ``referee/plugins/example_scorers.py``):

    >>> import numpy as np
    >>> from referee.plugins import Predictions, example_scorers
    >>> from referee.plugins.manager import PluginManager
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[example_scorers])
    >>> brier = pm.scorer("brier")
    >>> preds = Predictions(type="probability", columns=["p"], values=np.array([[0.5], [1.0]]),
    ...                     raw={"p": ["0.5", "1.0"]})
    >>> stats = brier.statistics(preds, ["1", "1"], {})
    >>> float(brier.aggregate(stats.sum(axis=0), {}))
    0.125
    """
    return []


@hookspec
def referee_backends() -> list[BackendInfo]:
    """Return ``BackendInfo`` records: backend factories by name (local, docker, ray, aws-batch, ...).

    Example:

    >>> from referee.plugins import hookimpl, BackendInfo
    >>> from referee.plugins.manager import PluginManager
    >>> from referee.plugins.testing import FakeBackend
    >>> class MyCluster:
    ...     @hookimpl
    ...     def referee_backends(self):
    ...         return [BackendInfo(name="my-cluster", runs_images=True,
    ...                             factory=lambda options, workspace: FakeBackend(**options))]
    >>> info = PluginManager(entrypoints=False, builtins=False, extra=[MyCluster()]).backend("my-cluster")
    >>> info.factory({}, None).name
    'fake'
    """
    return []


@hookspec
def referee_cost_trackers() -> list[CostTrackerInfo]:
    """Return ``CostTrackerInfo`` records: ``factory(competition, store)`` makes a tracker with
    ``job_started(job)`` and ``job_finished(job, result)`` methods returning cost entries.

    Example:

    >>> from referee.plugins import hookimpl, CostTrackerInfo
    >>> from referee.plugins.manager import PluginManager
    >>> class Hours:
    ...     name = "hours"
    ...     def job_started(self, job): return []
    ...     def job_finished(self, job, result): return []
    >>> class HoursPlugin:
    ...     @hookimpl
    ...     def referee_cost_trackers(self):
    ...         return [CostTrackerInfo(name="hours", factory=lambda competition, store: Hours())]
    >>> sorted(PluginManager(entrypoints=False, builtins=False, extra=[HoursPlugin()]).cost_trackers())
    ['hours']
    """
    return []


@hookspec
def referee_submission_kinds() -> list[SubmissionKindInfo]:
    """Return ``SubmissionKindInfo`` records: how to detect, check and store a new kind of submission
    (and, with ``to_job``, how to run it on a backend).

    Example:

    >>> from referee.plugins import hookimpl, SubmissionKindInfo
    >>> from referee.plugins.manager import PluginManager
    >>> class Onnx:
    ...     @hookimpl
    ...     def referee_submission_kinds(self):
    ...         return [SubmissionKindInfo(name="onnx", detect=lambda p: str(p).endswith(".onnx"),
    ...                                    ingest=lambda source, comp, store, filename=None: {})]
    >>> kind = PluginManager(entrypoints=False, builtins=False, extra=[Onnx()]).submission_kinds()["onnx"]
    >>> kind.detect("model.onnx"), kind.detect("preds.csv")
    (True, False)
    """
    return []


@hookspec
def referee_config_sections() -> list[ConfigSection]:
    """Return ``ConfigSection`` records: the top-level sections of the competition YAML this plugin
    owns, each with a pydantic model. The loader validates them (errors name ``section.field``);
    code reads one typed with ``referee.plugins.manager.config_section(competition, name, Model)``.

    Example:

    >>> from pydantic import BaseModel, ConfigDict
    >>> from referee.platform.core.spec import Competition
    >>> from referee.plugins import hookimpl, ConfigSection
    >>> from referee.plugins.manager import PluginManager, config_section, reset_runtime
    >>> class Slack(BaseModel):
    ...     model_config = ConfigDict(extra="forbid")
    ...     channel: str = "#general"
    >>> class SlackPlugin:
    ...     @hookimpl
    ...     def referee_config_sections(self):
    ...         return [ConfigSection(name="slack", model=Slack, description="where to post results")]
    >>> runtime = reset_runtime(PluginManager(entrypoints=False, builtins=False, extra=[SlackPlugin()]))
    >>> comp = Competition.model_validate({"id": "c", "title": "C", "data": {"reference": "r.csv"},
    ...                                    "metrics": [{"scorer": "accuracy"}], "slack": {"channel": "#ml"}})
    >>> config_section(comp, "slack", Slack).channel
    '#ml'
    >>> _ = reset_runtime()
    """
    return []


@hookspec
def referee_leaderboard_renderers() -> list[LeaderboardRenderer]:
    """Return ``LeaderboardRenderer`` records: output formats for ``referee leaderboard --format NAME``
    and the export API, next to the built-in table, json, csv, md and html.

    Example:

    >>> from referee.platform.core.leaderboard import Entry, Leaderboard
    >>> from referee.platform.leaderboard.render import render_leaderboard
    >>> from referee.plugins import hookimpl, LeaderboardRenderer
    >>> from referee.plugins.manager import PluginManager, reset_runtime
    >>> class Teams:
    ...     @hookimpl
    ...     def referee_leaderboard_renderers(self):
    ...         return [LeaderboardRenderer(name="teams", extension="txt",
    ...                                     render=lambda lb: " > ".join(e.team for e in lb.entries))]
    >>> _ = reset_runtime(PluginManager(entrypoints=False, builtins=False, extra=[Teams()]))
    >>> lb = Leaderboard("c", "C", "main", "public", "best", "acc", "maximize", ["acc"],
    ...                  entries=[Entry(1, "t1", 4, "2026-01-01", {"acc": 0.9}),
    ...                           Entry(2, "t2", 7, "2026-01-02", {"acc": 0.8})])
    >>> render_leaderboard(lb, "teams")
    't1 > t2'
    >>> _ = reset_runtime()
    """
    return []


# -- loading a competition ---------------------------------------------------------------------------
@hookspec
def referee_derive_competition(competition: Competition) -> Derived | None:
    """Derive data from a competition's spec when it loads (for example, build a CheckList suite and
    export its cases as inputs and references). Return a ``Derived`` record, or None: the store keeps
    it beside the spec (which stays as written) and the effective values come from it
    (``competition.effective_data``, ``effective_split``, ``metric_params(metric)``). It is called
    for the competition and again for each phase with its own data, split or metrics, with that
    phase's view (``competition.phase_name`` names the phase; None for the competition itself).

    Example:

    >>> from referee.platform.core.spec import Competition, Derived
    >>> from referee.plugins import hookimpl
    >>> from referee.plugins.manager import PluginManager
    >>> class Seeded:
    ...     @hookimpl
    ...     def referee_derive_competition(self, competition):
    ...         return Derived(metric_params={m.key: {"seed": 7} for m in competition.metrics})
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[Seeded()])
    >>> comp = Competition.model_validate({"id": "c", "title": "C", "data": {"reference": "r.csv"},
    ...                                    "metrics": [{"scorer": "accuracy"}]})
    >>> (derived,) = pm.hook.referee_derive_competition(competition=comp)
    >>> comp.with_derived(derived).metric_params("accuracy"), comp.metrics[0].params
    ({'seed': 7}, {})
    """


# -- running jobs --------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def referee_dispatch_check(competition: Competition, job_spec: JobSpec, store: Store,
                           backend: str) -> str | Hold | None:
    """Return a reason to hold ``job_spec`` back (for example a budget), or None to allow it.
    ``backend`` is the name of the backend the job would run on. A plain string pauses all
    dispatching; ``Hold(reason, team=...)`` holds back only that team's submissions.

    Example:

    >>> from referee.platform.core.jobs import JobSpec
    >>> from referee.plugins import hookimpl, Hold
    >>> from referee.plugins.manager import PluginManager
    >>> class Quota:
    ...     @hookimpl
    ...     def referee_dispatch_check(self, competition, job_spec, store, backend):
    ...         return Hold("GPU quota used up", team="t1") if backend == "aws-batch" else None
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[Quota()])
    >>> spec = JobSpec(job_id="c-s1-a1", submission_id=1, attempt=1, competition_id="c",
    ...                output_dir="/tmp/out", output_file="predictions.csv")
    >>> pm.hook.referee_dispatch_check(competition=None, job_spec=spec, store=None, backend="aws-batch")
    Hold(reason='GPU quota used up', team='t1')
    """


@hookspec
def referee_job_started(job: JobRecord, competition: Competition, store: Store) -> None:
    """Called when a backend job starts running (``job`` as the store recorded it).

    Example:

    >>> import datetime as dt
    >>> from referee.platform.core.jobs import JobRecord
    >>> from referee.plugins import hookimpl
    >>> from referee.plugins.manager import PluginManager
    >>> class Announce:
    ...     @hookimpl
    ...     def referee_job_started(self, job, competition, store):
    ...         print("started", job.job_id, "on", job.backend)
    >>> job = JobRecord(id=1, job_id="c-s1-a1", submission_id=1, competition_id="c", team="t", attempt=1,
    ...                 backend="docker", state="running", failure_reason=None, cpu=1.0, memory=None, gpus=0,
    ...                 instance_type=None, node=None, created_at=dt.datetime(2026, 1, 1), started_at=None,
    ...                 finished_at=None, spec={})
    >>> _ = PluginManager(entrypoints=False, builtins=False, extra=[Announce()]).hook.referee_job_started(
    ...     job=job, competition=None, store=None)
    started c-s1-a1 on docker
    """


@hookspec
def referee_job_finished(job: JobRecord, result: JobStatus, competition: Competition, store: Store) -> None:
    """Called when a backend job reaches a final state (``result`` is its final ``JobStatus``).

    Example:

    >>> import datetime as dt
    >>> from referee.platform.core.jobs import JobRecord, JobState, JobStatus
    >>> from referee.plugins import hookimpl
    >>> from referee.plugins.manager import PluginManager
    >>> class Announce:
    ...     @hookimpl
    ...     def referee_job_finished(self, job, result, competition, store):
    ...         print(job.job_id, result.state.value, result.duration_s)
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> job = JobRecord(id=1, job_id="c-s1-a1", submission_id=1, competition_id="c", team="t", attempt=1,
    ...                 backend="docker", state="succeeded", failure_reason=None, cpu=1.0, memory=None, gpus=0,
    ...                 instance_type=None, node=None, created_at=t, started_at=t, finished_at=t, spec={})
    >>> done = JobStatus(JobState.SUCCEEDED, started_at=t, finished_at=t + dt.timedelta(seconds=90))
    >>> _ = PluginManager(entrypoints=False, builtins=False, extra=[Announce()]).hook.referee_job_finished(
    ...     job=job, result=done, competition=None, store=None)
    c-s1-a1 succeeded 90.0
    """


# -- showing results -----------------------------------------------------------------------------------
@hookspec
def referee_leaderboard_columns(store: Store, competition: Competition,
                                leaderboard: Leaderboard) -> list[LeaderboardColumn]:
    """Return ``LeaderboardColumn`` records for a built leaderboard: values per entry (by submission
    id), a label, a kind that says how to show them (number, percent, rate, currency, tier, p-value,
    flag, text), whether the compact terminal table shows them, help text and notes. Every renderer
    (terminal, JSON, CSV, Markdown, HTML, the web page) shows them without knowing the column. A note
    that belongs to no column (say, why a column is missing) may be appended to ``leaderboard.notes``.
    ``competition`` is the view of the leaderboard's phase (``Competition.for_phase``): its metrics
    and reference data. The baselines (``leaderboard.baselines``) are unranked rows; a column may
    leave them without a value.

    Example:

    >>> from referee.platform.core.leaderboard import Entry, Leaderboard, LeaderboardColumn
    >>> from referee.plugins import hookimpl
    >>> from referee.plugins.manager import PluginManager
    >>> class Entries:
    ...     @hookimpl
    ...     def referee_leaderboard_columns(self, store, competition, leaderboard):
    ...         return [LeaderboardColumn(key="n_subs", label="entries", kind="number", help="submissions",
    ...                                   values={e.submission_id: e.n_submissions for e in leaderboard.entries})]
    >>> lb = Leaderboard("c", "C", "main", "public", "best", "acc", "maximize", ["acc"],
    ...                  entries=[Entry(1, "t1", 4, "2026-01-01T00:00:00", {"acc": 0.9}, n_submissions=3)])
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[Entries()])
    >>> for columns in pm.hook.referee_leaderboard_columns(store=None, competition=None, leaderboard=lb):
    ...     for column in columns:
    ...         lb.add_column(column)
    >>> lb.columns_extra, lb.entries[0].extra
    (['n_subs'], {'n_subs': 3})
    """
    return []


@hookspec
def referee_leaderboard_notes(store: Store, competition: Competition, leaderboard: Leaderboard) -> list[str]:
    """Return sentences to show under a built leaderboard (after its columns): for example what the
    organisers took off it and why, or the baselines it is compared with. ``competition`` is the view
    of the leaderboard's phase.

    Example:

    >>> from referee.platform.core.leaderboard import Leaderboard
    >>> from referee.plugins import hookimpl
    >>> from referee.plugins.manager import PluginManager
    >>> class Closing:
    ...     @hookimpl
    ...     def referee_leaderboard_notes(self, store, competition, leaderboard):
    ...         return [f"{len(leaderboard.entries)} teams took part."]
    >>> lb = Leaderboard("c", "C", "main", "public", "best", "acc", "maximize", ["acc"], entries=[])
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[Closing()])
    >>> pm.hook.referee_leaderboard_notes(store=None, competition=None, leaderboard=lb)
    [['0 teams took part.']]
    """
    return []


@hookspec
def referee_leaderboard_plots(store: Store, competition: Competition,
                              leaderboard: Leaderboard) -> list[LeaderboardPlot]:
    """Return ``LeaderboardPlot`` records (SVG figures) for the web leaderboard page. Called after
    ``referee_leaderboard_columns``, so a plugin can plot the values of its own columns.

    Example:

    >>> from referee.platform.core.leaderboard import Leaderboard
    >>> from referee.plugins import hookimpl, LeaderboardPlot
    >>> from referee.plugins.manager import PluginManager
    >>> class Count:
    ...     @hookimpl
    ...     def referee_leaderboard_plots(self, store, competition, leaderboard):
    ...         n = len(leaderboard.entries)
    ...         return [LeaderboardPlot(key="count", title="Entries", caption="how many entries",
    ...                                 svg=f'<svg xmlns="http://www.w3.org/2000/svg"><text>{n}</text></svg>')]
    >>> lb = Leaderboard("c", "C", "main", "public", "best", "acc", "maximize", ["acc"], entries=[])
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[Count()])
    >>> [p.svg for plots in pm.hook.referee_leaderboard_plots(store=None, competition=None, leaderboard=lb)
    ...  for p in plots]
    ['<svg xmlns="http://www.w3.org/2000/svg"><text>0</text></svg>']
    """
    return []


@hookspec
def referee_submission_panels(store: Store, competition: Competition, submission: SubmissionRow,
                              scores: list[ScoreRow]) -> list[ReportPanel]:
    """Return ``ReportPanel`` records for a submission's report (``referee report``, the web page):
    a title and the same content as Markdown and as HTML. ``scores`` holds the score rows the
    viewer may see (for a team, the splits its phase's leaderboards show it: the public split until
    the private one is published). ``competition`` is the view of the submission's phase.

    Example:

    >>> from referee.platform.core.markup import escape_html
    >>> from referee.plugins import hookimpl, ReportPanel
    >>> from referee.plugins.manager import PluginManager
    >>> class Splits:
    ...     @hookimpl
    ...     def referee_submission_panels(self, store, competition, submission, scores):
    ...         text = ", ".join(sorted({s.split for s in scores})) or "none"
    ...         return [ReportPanel(key="splits", title="Splits", markdown=text,
    ...                             html=f"<p>{escape_html(text)}</p>")]
    >>> pm = PluginManager(entrypoints=False, builtins=False, extra=[Splits()])
    >>> [p.html for panels in pm.hook.referee_submission_panels(store=None, competition=None,
    ...                                                         submission=None, scores=[]) for p in panels]
    ['<p>none</p>']
    """
    return []
