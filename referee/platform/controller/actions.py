"""Host actions on submissions: cancel and re-run, as guarded store transitions.

A cancel only moves a pending or running submission to ``cancelled`` (a submission that already
finished keeps its status); the controller holding a running one sees that its claim is gone and
stops the job on its backend (level-triggered). When no live controller holds it, the job is
stopped here directly.
"""

from __future__ import annotations

from referee.platform.controller.reconcile import make_backend, owner_alive
from referee.platform.core.backend import Backend
from referee.platform.core.jobs import SubmissionStatus
from referee.platform.store import Store


def rerun_submission(store: Store, sid: int, *, by: str = "host") -> None:
    """Put a finished submission back in the queue (old scores stay until new ones replace them)."""
    store.request_rerun(sid, by=by)


def cancel_submission(store: Store, sid: int, backend: Backend | None = None, *, by: str = "host") -> str:
    """Cancel a pending or running submission; returns its status afterwards."""
    sub = store.get_submission(sid)
    before, cancelled = store.request_cancel(sid, by=by)
    if not cancelled:
        return before.value
    if before is SubmissionStatus.RUNNING:
        job = store.latest_job(sid)
        if job is not None and job.handle and not job.state.final and (
                backend is not None or not owner_alive(sub.claimed_by, sub.updated_at)):
            comp = store.get_competition(sub.competition_id)
            (backend or make_backend(comp, store, job.backend)).cancel(job.handle)
    return SubmissionStatus.CANCELLED.value
