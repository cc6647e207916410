"""Built-in submission kinds: prediction files and trusted script directories.

Container kinds (image, tarball, Dockerfile directory) register in ``builtin.containers``.
"""

from __future__ import annotations

from pathlib import Path

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import SubmissionKindInfo


def _ingest(source, comp, store, filename=None):
    from referee.submissions.submit import ingest_prediction_file
    return ingest_prediction_file(source, comp, store, filename=filename)


def _is_script(source) -> bool:
    from referee.submissions.script import is_script_dir
    return is_script_dir(source)


def _ingest_script(source, comp, store, filename=None):
    from referee.submissions.script import ingest_script
    return ingest_script(source, comp, store, filename=filename)


def _script_job(sub, comp, store):
    from referee.submissions.script import script_job
    return script_job(sub, comp, store)


@hookimpl
def referee_submission_kinds():
    return [
        SubmissionKindInfo(name="predictions", detect=lambda p: Path(p).is_file(), ingest=_ingest,
                           description="a prediction file (CSV, TSV, JSONL or text)"),
        SubmissionKindInfo(name="script", detect=_is_script, ingest=_ingest_script, to_job=_script_job,
                           description="a directory with predict.py, run as a local process (trusted code)"),
    ]
