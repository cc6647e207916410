"""Built-in submission kinds (prediction files). Container kinds register in their own module."""

from __future__ import annotations

from pathlib import Path

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import SubmissionKindInfo


def _ingest(source, comp, store, filename=None):
    from referee.submissions.submit import ingest_prediction_file
    return ingest_prediction_file(source, comp, store, filename=filename)


@hookimpl
def referee_submission_kinds():
    return [SubmissionKindInfo(name="predictions", detect=lambda p: Path(p).is_file(), ingest=_ingest,
                               description="a prediction file (CSV, TSV, JSONL or text)")]
