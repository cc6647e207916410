"""The controller's scoring step: validate a prediction file, then score it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from referee.platform.core.spec import Competition
from referee.scoring.engine import MetricResult, score_predictions
from referee.scoring.reference import load_reference
from referee.submissions.intake import validate_predictions


def score_file(comp: Competition, path: Path, *, submission_sha256: str | None = None,
               predictions_sha256: str | None = None, put_blob: Callable[[bytes], str] | None = None,
               source: str | None = None, intervals_enabled: bool = True) -> list[MetricResult]:
    """Validate a prediction file and score it (raises SubmissionRejected on invalid predictions)."""
    ref = load_reference(comp)
    preds = validate_predictions(path, comp, ref, source=source)
    return score_predictions(comp, preds, ref, submission_sha256=submission_sha256,
                             predictions_sha256=predictions_sha256, put_blob=put_blob,
                             intervals_enabled=intervals_enabled)
