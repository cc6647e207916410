"""Backends: local processes, Docker engine, Ray, AWS Batch, and an in-memory fake for tests."""

from referee.platform.core.backend import Backend
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
)

__all__ = ["Backend", "FailureReason", "JobSpec", "JobState", "JobStatus", "Resources"]
