"""Backends: local processes, Docker engine, Ray, AWS Batch, and an in-memory fake for tests."""

from referee.platform.backends.base import (
    Backend,
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
)

__all__ = ["Backend", "FailureReason", "JobSpec", "JobState", "JobStatus", "Resources"]
