"""The backend seam: one small interface over one job spec.

A backend runs a job (an image or a command over read-only inputs, writing one output directory) and
reports its state. The controller only ever talks to this interface; it knows nothing backend-specific.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable

from referee.platform.core.jobs import FailureReason, JobSpec, JobState, JobStatus


class Backend(abc.ABC):
    """submit / poll / cancel / logs over ``JobSpec``. Implementations must be safe to call from one thread."""

    name: str = "abstract"

    @abc.abstractmethod
    def submit(self, job: JobSpec) -> str:
        """Start the job; return an opaque handle (string) that survives a scheduler restart."""

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

    def notify(self, wake: Callable[[], None]) -> None:
        """Optional: call ``wake()`` (from any thread; it must be cheap) whenever a job may have reached
        a final state, so the caller polls at once instead of after its poll interval. A backend that
        cannot tell ignores this (the default): polling on an interval is always correct."""


def lost_handle(handle: str, backend: str) -> JobStatus:
    return JobStatus(state=JobState.FAILED, reason=FailureReason.PLATFORM_ERROR,
                     message=f"{backend} backend does not know job {handle!r} (lost after a restart?)")
