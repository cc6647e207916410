"""Built-in plugin ``builtin_checklist``: CheckList behavioural tests as scorers, data, columns and reports.

* ``referee_config_sections``: the ``checklist:`` section (``referee.scoring.checklist.schema``).
* ``referee_scorers``: ``checklist`` (failure rate over the suite or a scope of it, with the matrix and
  failing examples as details) and ``checklist_accuracy`` (accuracy on the optional held-out rows).
* ``referee_derive_competition``: builds/exports the suite of a competition with a ``checklist:``
  section and derives its data, split and metric parameters from the export (beside the spec).
* ``referee_leaderboard_columns``: behavioural columns (``fail:overall``, ``fail:<Capability>``, ...) read
  from the stored details of each entry's checklist score.
* ``referee_submission_panels``: the capability x test-type matrix, per-test failure rates and failing
  examples of a submission, per split.

The checklist library itself is imported only when a suite is built or a submission is scored.
"""

from __future__ import annotations

from typing import Any

from referee.platform.core.leaderboard import Leaderboard, LeaderboardColumn
from referee.platform.core.spec import Competition, Derived
from referee.platform.store import ScoreRow, Store, SubmissionRow
from referee.plugins.hookspecs import hookimpl
from referee.plugins.manager import optional_config_section
from referee.plugins.records import ConfigSection, ReportPanel, ScorerInfo
from referee.scoring.checklist import matrix as mx
from referee.scoring.checklist import scorer as cs
from referee.scoring.checklist.report import (
    checklist_html,
    checklist_markdown,
    checklist_sections,
)
from referee.scoring.checklist.schema import ChecklistSpec
from referee.scoring.metrics import _common

COLUMN_NOTE = "fail:* columns are CheckList failure rates (failed test cases / test cases; lower is better)."


@hookimpl
def referee_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="checklist", model=ChecklistSpec,
                          description="a CheckList behavioural test suite: declarative tests or a saved TestSuite")]


@hookimpl
def referee_scorers() -> list[ScorerInfo]:
    return [
        ScorerInfo(
            name=cs.NAME, version=_common.scorer_version(cs.REVISION), higher_is_better=False, accepts=cs.ACCEPTS,
            statistics=cs.statistics, aggregate=cs.aggregate, libraries=cs.LIBRARIES, signature=cs.signature,
            details=cs.details, validate_params=cs.validate_params,
            description="CheckList failure rate (MFT/INV/DIR tests; run_from_file), with the capability x "
                        "test-type matrix and failing examples",
        ),
        ScorerInfo(
            name=cs.ACCURACY_NAME, version=_common.scorer_version(cs.REVISION), higher_is_better=True,
            accepts=cs.ACCEPTS, statistics=cs.accuracy_statistics, aggregate=cs.accuracy_aggregate,
            libraries=("numpy",), signature=cs.accuracy_signature, validate_params=cs.validate_accuracy_params,
            description="accuracy on the held-out rows of a CheckList competition (checklist.heldout)",
        ),
    ]


@hookimpl
def referee_derive_competition(competition: Competition) -> Derived | None:
    if competition.section_data("checklist") is None:
        return None
    from referee.scoring.checklist.suite import derive
    return derive(competition)


@hookimpl
def referee_leaderboard_columns(store: Store, competition: Competition,
                                leaderboard: Leaderboard) -> list[LeaderboardColumn]:
    spec = optional_config_section(competition, "checklist", ChecklistSpec)
    if spec is None:
        return []
    metric = spec.leaderboard.metric or next((m.key for m in competition.metrics if m.scorer == cs.NAME), None)
    if metric is None or not leaderboard.entries:
        return []
    ids = [e.submission_id for e in leaderboard.entries]
    tests_of: dict[int, list[dict[str, Any]]] = {}
    for sid, r in store.score_rows(ids, metric, leaderboard.split).items():
        tests = r.details.get("checklist", {}).get("tests")
        if tests:
            tests_of[sid] = tests
    if not tests_of:
        return []
    columns = spec.leaderboard.columns or mx.default_columns(next(iter(tests_of.values())))
    return [LeaderboardColumn(key=mx.column_label(col), label=mx.column_label(col), kind="rate",
                              values={sid: mx.column_value(tests_of[sid], col) if sid in tests_of else None
                                      for sid in ids},
                              help=f"CheckList failure rate of {col} (failed test cases / test cases)",
                              notes=(COLUMN_NOTE,))
            for col in columns]


@hookimpl
def referee_submission_panels(store: Store, competition: Competition, submission: SubmissionRow,
                              scores: list[ScoreRow]) -> list[ReportPanel]:
    """The CheckList matrix, per-test failure rates and failing examples, one panel per split."""
    return [ReportPanel(key=f"checklist-{split}", title=f"CheckList — {split} split",
                        subtitle=f"metric {metric}", markdown=checklist_markdown(details),
                        html=checklist_html(details))
            for split, metric, details in checklist_sections(scores)]
