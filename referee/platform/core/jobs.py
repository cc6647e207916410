"""Job types: what a backend is asked to run (``JobSpec``), what it reports (``JobStatus``), and the
record job hooks receive (``JobRecord``)."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import asdict, dataclass, field
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


class SubmissionStatus(str, enum.Enum):
    """Where a submission stands. Only the controller moves a submission out of RUNNING."""

    PENDING = "pending"
    RUNNING = "running"
    SCORED = "scored"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = (SubmissionStatus.SCORED, SubmissionStatus.FAILED, SubmissionStatus.CANCELLED)


class FailureReason(str, enum.Enum):
    """Why a job or submission failed. PLATFORM_ERROR is the platform's fault (retried, not charged);
    SCORER_ERROR is the host's scorer failing (not retried, not charged, the host sees the traceback)."""

    TIMED_OUT = "timed_out"
    OUT_OF_MEMORY = "out_of_memory"
    EXITED_NONZERO = "exited_nonzero"
    NO_OUTPUT = "no_output"
    INVALID_OUTPUT = "invalid_output"
    IMAGE_INVALID = "image_invalid"
    BUILD_FAILED = "build_failed"
    PLATFORM_ERROR = "platform_error"
    SCORER_ERROR = "scorer_error"
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
    FailureReason.BUILD_FAILED: "the Dockerfile was refused by the build policy or did not build; it counts "
                                "toward the team's limits",
    FailureReason.PLATFORM_ERROR: "the platform failed (not the submission); it will be retried and is not "
                                  "charged to the team",
    FailureReason.SCORER_ERROR: "scoring failed because of a problem on the host's side, not the submission; "
                                "the host has been told, and the submission is not charged to the team",
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
    shard: int | None = None  # this job's shard of a sharded submission (0-based), None when not sharded
    shards: int = 1  # how many shards the submission has

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobSpec":
        d = dict(d)
        d["resources"] = Resources(**d.get("resources", {}))
        return cls(**d)


@dataclass
class BackendAttempt:
    """An earlier try of a job that the backend made on its own (AWS Batch's retryStrategy): it ran on an
    instance and was lost (a spot reclaim, a host that went away). Priced like any attempt, and charged to
    the platform when ``reason`` is the platform's."""

    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    reason: FailureReason | None = None
    message: str = ""
    node: str | None = None
    instance_type: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None


@dataclass
class JobStatus:
    """A job's state as the backend reports it. A QUEUED status's ``message`` is the backend's own reason
    for waiting when it gives one (AWS Batch's ``statusReason`` of a RUNNABLE job). ``backend_attempts``
    are earlier tries the backend made itself; the status's own times are its last try's."""

    state: JobState
    reason: FailureReason | None = None
    message: str = ""
    exit_code: int | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    node: str | None = None
    instance_type: str | None = None
    backend_attempts: list[BackendAttempt] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class JobRecord:
    id: int
    job_id: str
    submission_id: int
    competition_id: str
    team: str
    attempt: int
    backend: str
    state: str
    failure_reason: str | None
    cpu: float | None
    memory: int | None
    gpus: int
    instance_type: str | None
    node: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    spec: dict[str, Any]

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None
