"""The backend seam: one small interface over one job spec.

A backend runs a job (an image or a command over read-only inputs, writing one output directory) and
reports its state. The controller only ever talks to this interface; it knows nothing backend-specific.

Control-plane trouble (throttling, timeouts, an unreachable endpoint, expired credentials) is raised as
``BackendUnavailable`` by every method: the controller then backs off and never counts it against a
submission. Anything else a method raises is about that one job.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable

from referee.platform.core.jobs import FailureReason, JobSpec, JobState, JobStatus


class Backend(abc.ABC):
    """submit / poll / cancel / logs over ``JobSpec``. Implementations must be safe to call from one thread."""

    name: str = "abstract"
    # How often the controller polls by default: from ``poll_interval_s``, growing while nothing changes up
    # to ``max_poll_interval_s`` (a competition's ``backend.poll_interval`` / ``max_poll_interval`` win).
    poll_interval_s: float = 0.2
    max_poll_interval_s: float = 1.0

    @abc.abstractmethod
    def submit(self, job: JobSpec) -> str:
        """Start the job; return an opaque handle (string) that survives a scheduler restart."""

    def submit_shards(self, jobs: list[JobSpec]) -> list[str]:
        """Start the shards of one submission (one job each, in shard order); one handle per shard. A
        backend with a native fan-out (AWS Batch array jobs) starts them in one request."""
        return [self.submit(job) for job in jobs]

    @abc.abstractmethod
    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        """Current status of each handle. Unknown handles map to a PLATFORM_ERROR failure."""

    @abc.abstractmethod
    def cancel(self, handle: str) -> None:
        """Stop the job if it is running; idempotent."""

    @abc.abstractmethod
    def logs(self, handle: str, tail: int = 65536) -> str:
        """The last ``tail`` bytes of the job's combined stdout/stderr."""

    def collect(self, handle: str, job: JobSpec) -> Path:
        """Make the job's output available locally; return the local output directory."""
        return Path(job.output_dir)

    def cleanup(self, handle: str) -> None:
        """Release what the job left behind (containers, temp files). Called after collect."""

    def close(self) -> None:
        """Release connections and workers."""

    def unsatisfiable(self, job: JobSpec) -> str | None:
        """Why no machine this backend can ever get could run ``job`` (its resource request is larger than
        every node type), or None. Checked before dispatch, so such a job never waits forever."""
        return None

    def waiting_reason(self, handle: str) -> str | None:
        """The backend's own words for why a queued job has not started (capacity, a resource request no
        free node meets), or None when it gives none."""
        return None

    def locate(self, job: JobSpec) -> str | None:
        """The handle of a job already started for exactly this spec (a dispatch whose answer was lost:
        the scheduler died, or the request timed out after it arrived), or None."""
        return None

    def notify(self, wake: Callable[[], None]) -> None:
        """Optional: call ``wake()`` (from any thread; it must be cheap) whenever a job may have reached
        a final state, so the caller polls at once instead of after its poll interval. A backend that
        cannot tell ignores this (the default): polling on an interval is always correct."""


def lost_handle(handle: str, backend: str) -> JobStatus:
    return JobStatus(state=JobState.FAILED, reason=FailureReason.PLATFORM_ERROR,
                     message=f"{backend} backend does not know job {handle!r} (lost after a restart?)")
