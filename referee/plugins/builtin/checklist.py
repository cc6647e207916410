"""Built-in plugin ``builtin_checklist``: CheckList behavioural tests as scorers, data and leaderboard columns.

* ``referee_scorers``: ``checklist`` (failure rate over the suite or a scope of it, with the matrix and
  failing examples as details) and ``checklist_accuracy`` (accuracy on the optional held-out rows).
* ``referee_prepare_competition``: builds/exports the suite of a competition with a ``checklist:``
  section and points its data, split and metric parameters at the export.
* ``referee_leaderboard_enrich``: behavioural columns (``fail:overall``, ``fail:<Capability>``, ...) read
  from the stored details of each entry's checklist score.

The checklist library itself is imported only when a suite is built or a submission is scored.
"""

from __future__ import annotations

from typing import Any

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import ScorerInfo
from referee.scoring.checklist import matrix as mx
from referee.scoring.checklist import scorer as cs
from referee.scoring.metrics import _common


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
def referee_prepare_competition(competition: Any) -> None:
    if competition.checklist is None:
        return
    from referee.scoring.checklist.suite import prepare_competition
    prepare_competition(competition)


@hookimpl
def referee_leaderboard_enrich(store: Any, competition: Any, leaderboard: Any) -> None:
    if competition.checklist is None:
        return
    settings = (competition.checklist or {}).get("leaderboard") or {}
    metric = settings.get("metric") or next((m.key for m in competition.metrics if m.scorer == cs.NAME), None)
    if metric is None or not leaderboard.entries:
        return
    ids = [e.submission_id for e in leaderboard.entries]
    tests_of: dict[int, list[dict[str, Any]]] = {}
    for sid, r in store.score_rows(ids, metric, leaderboard.split).items():
        tests = r.details.get("checklist", {}).get("tests")
        if tests:
            tests_of[sid] = tests
    if not tests_of:
        return
    columns = settings.get("columns") or mx.default_columns(next(iter(tests_of.values())))
    for col in columns:
        label = mx.column_label(col)
        if label not in leaderboard.columns_extra:
            leaderboard.columns_extra.append(label)
        for e in leaderboard.entries:
            tests = tests_of.get(e.submission_id)
            e.extra[label] = mx.column_value(tests, col) if tests else None
    note = "fail:* columns are CheckList failure rates (failed test cases / test cases; lower is better)."
    if note not in leaderboard.notes:
        leaderboard.notes.append(note)
