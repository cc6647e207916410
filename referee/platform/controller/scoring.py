"""The controller's scoring step: validate a prediction file, then score it."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

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


class _OneBlasThread:
    """Counts the threads inside ``one_blas_thread()``; the first in limits BLAS, the last out restores."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.limits: Any = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.inside == 0:
                try:  # looks for BLAS libraries each time (a fraction of a millisecond): one loaded later counts too
                    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
                    self.limits = threadpool_limits(limits=1, user_api="blas")
                except Exception:  # noqa: BLE001 - no threadpoolctl, or a BLAS it cannot drive: run as is
                    self.limits = None
            self.inside += 1
        try:
            yield
        finally:
            with self.lock:
                self.inside -= 1
                if self.inside == 0 and self.limits is not None:
                    self.limits.restore_original_limits()
                    self.limits = None


one_blas_thread = _OneBlasThread()
"""Run numpy's matrix products (the bootstrap's) on one BLAS thread while the controller scores.

Scoring runs in the controller's worker pool beside the sandboxed containers: ``scoring_workers`` is
how many cores it may take. A multi-threaded BLAS takes more, and OpenBLAS's helper threads spin
between calls, which on a busy host burns more CPU than the scoring itself. BLAS has one setting per
process, so concurrent scorers share the limit and the last one out restores it."""
