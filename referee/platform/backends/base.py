"""The backend seam: one small interface over one job spec.

A backend runs a job (an image or a command over read-only inputs, writing one output directory) and
reports its state. The scheduler only ever talks to this interface; it knows nothing backend-specific.
"""

from __future__ import annotations

import abc
import datetime as dt
import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class FailureReason(str, enum.Enum):
    """Why a job or submission failed. Only PLATFORM_ERROR is the platform's fault (retried, not charged)."""

    TIMED_OUT = "timed_out"
    OUT_OF_MEMORY = "out_of_memory"
    EXITED_NONZERO = "exited_nonzero"
    NO_OUTPUT = "no_output"
    INVALID_OUTPUT = "invalid_output"
    IMAGE_INVALID = "image_invalid"
    PLATFORM_ERROR = "platform_error"
    CANCELLED = "cancelled"

    @property
    def is_infrastructure(self) -> bool:
        return self is FailureReason.PLATFORM_ERROR

    @property
    def explanation(self) -> str:
        return _EXPLAIN[self]


_EXPLAIN = {
    FailureReason.TIMED_OUT: "the submission ran past the competition's time limit and was stopped",
    FailureReason.OUT_OF_MEMORY: "the submission used more memory than the limit and was killed",
    FailureReason.EXITED_NONZERO: "the submission's program exited with a non-zero status",
    FailureReason.NO_OUTPUT: "the submission finished without writing the prediction file",
    FailureReason.INVALID_OUTPUT: "the prediction file the submission wrote is invalid",
    FailureReason.IMAGE_INVALID: "the container image could not be loaded or started",
    FailureReason.PLATFORM_ERROR: "the platform failed (not the submission); it will be retried and is not "
                                  "charged to the team",
    FailureReason.CANCELLED: "the submission was cancelled",
}


@dataclass
class Resources:
    cpu: float = 1.0
    memory: int = 2 * 1024**3  # bytes
    gpus: int = 0
    instance_type: str | None = None

    @property
    def memory_mib(self) -> int:
        return max(1, self.memory // (1024 * 1024))


@dataclass
class JobSpec:
    """Everything a backend needs to run one attempt of one submission."""

    job_id: str  # unique per attempt, e.g. "dfdc-s42-a1"
    submission_id: int
    attempt: int
    competition_id: str
    output_dir: str  # local path (or URI the backend understands) where the output must land
    output_file: str  # file name the predictions must have inside output_dir
    image: str | None = None
    command: list[str] | None = None
    input_dir: str | None = None  # read-only inputs
    resources: Resources = field(default_factory=Resources)
    timeout_s: float = 3600.0
    env: dict[str, str] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)
    max_infra_retries: int = 3
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobSpec":
        d = dict(d)
        d["resources"] = Resources(**d.get("resources", {}))
        return cls(**d)


@dataclass
class JobStatus:
    state: JobState
    reason: FailureReason | None = None
    message: str = ""
    exit_code: int | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    node: str | None = None
    instance_type: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None


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


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def lost_handle(handle: str, backend: str) -> JobStatus:
    return JobStatus(state=JobState.FAILED, reason=FailureReason.PLATFORM_ERROR,
                     message=f"{backend} backend does not know job {handle!r} (lost after a restart?)")
