"""How AWS Batch's words map to referee's: a ``describe_jobs`` entry to a ``JobStatus`` (with the reason a
failure is the team's or the platform's), and the ``retryStrategy`` built from the same table of
infrastructure failures."""

from __future__ import annotations

import datetime as dt
import fnmatch
from typing import Any

from referee.platform.core.jobs import BackendAttempt, FailureReason, JobState, JobStatus, now_utc
from referee.platform.runtime.registry import classify_pull_error
from referee.platform.runtime.sandbox import (
    _INVALID_START,  # start failures that are the image's fault
)

CANCEL_REASON = "referee: cancelled"
TIMEOUT_REASON = "referee: timed out"
TAG_INSTANCE = "referee.instance_type"
TAG_STAGED = "referee.staged"  # s3 mode: exit status 97 is the stager's, not the submission's
STAGE_FAILED_EXIT = 97

# Infrastructure failures, as Batch reports them. The same table builds the retryStrategy (Batch allows
# five evaluateOnExit rules; the fifth exits on everything else) and referee's own failure mapping.
# One exception in the mapping: a ``Cannot*`` start error that names the image's own command or working
# directory (the sandbox's ``_INVALID_START``, e.g. ``CannotStartContainerError: ... exec: "x":
# executable file not found``) is the image's fault, IMAGE_INVALID as on the Docker backend. Batch's
# patterns only match prefixes, so its retryStrategy cannot tell the two apart and may retry such an
# attempt within ``batch_attempts``; referee never does.
INFRA_RULES: tuple[tuple[str, str], ...] = (
    ("onStatusReason", "Host EC2*"),  # spot reclaim, instance terminated or unhealthy
    ("onReason", "Cannot*"),  # CannotPullContainerError, CannotStartContainerError, CannotCreate...
    ("onReason", "DockerTimeoutError*"),
    ("onReason", "ResourceInitializationError*"),
)
_QUEUED = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"}
# How a job queue's jobStateTimeLimitActions words a job it cancelled or terminated (capacity time-outs).
TIME_LIMIT_ACTION = ("Canceled by JobStateTimeLimit", "Terminated by JobStateTimeLimit")
# The beginnings of the statusReason texts Batch itself writes when a job ends; any other text on a failed
# job is the reason an operator (or another tool) gave TerminateJob / CancelJob.
BATCH_OWN_REASONS = ("Essential container in task exited", "Task failed to start", "Host EC2",
                     "Job attempt duration exceeded", "Dependent Job failed", "Array Child Job failed",
                     "Container killed", "ResourceInitializationError", "CannotPullContainerError",
                     "CannotStartContainerError", "CannotCreateContainerError", "CannotInspectContainerError",
                     "DockerTimeoutError", "OutOfMemoryError", "Timeout waiting for network interface",
                     "Task stopped")
def retry_strategy(attempts: int) -> dict[str, Any]:
    """Batch retries infrastructure failures (up to ``attempts`` in all); a submission's failure exits."""
    rules = [{key: pattern, "action": "RETRY"} for key, pattern in INFRA_RULES]
    return {"attempts": max(1, min(10, attempts)), "evaluateOnExit": rules + [{"onExitCode": "*", "action": "EXIT"}]}


def _ms(v: Any) -> dt.datetime | None:
    if not v:
        return None
    return dt.datetime.fromtimestamp(int(v) / 1000, tz=dt.timezone.utc)


def _matches(value: str | None, pattern: str) -> bool:
    return value is not None and bool(value) and fnmatch.fnmatchcase(value, pattern)


def _attempt_failure(status_reason: str, reason_text: str) -> tuple[FailureReason, str]:
    """Why a try ended that Batch retried by itself (retryStrategy retries infrastructure only): the
    platform's, unless the container could not start because of the image."""
    for text in (reason_text, status_reason):
        if _matches(text, "CannotPullContainerError*") and classify_pull_error(text) is FailureReason.IMAGE_INVALID:
            return FailureReason.IMAGE_INVALID, f"AWS Batch: the image could not be pulled: {text}"
        if _matches(text, "Cannot*") and any(s in text for s in _INVALID_START):
            return FailureReason.IMAGE_INVALID, f"AWS Batch: the container could not start: {text}"
    return FailureReason.PLATFORM_ERROR, f"AWS Batch: {status_reason or reason_text or 'retried by Batch'}"


def batch_status(desc: dict[str, Any], now: float | None = None) -> JobStatus:
    """Map one describe_jobs entry to referee's JobStatus (and a failure's reason).

    A queued job carries Batch's ``statusReason`` (why a RUNNABLE job is not placed). Tries Batch made on
    its own before the last one become ``backend_attempts``; the status's times are the last try's.
    A job someone stopped outside referee (``aws batch terminate-job``, a queue's ``jobStateTimeLimitActions``
    capacity time-out) is a platform failure, never the team's."""
    state = desc.get("status", "")
    attempts = list(desc.get("attempts") or [])
    last = attempts[-1] if attempts else {}
    container = {**(last.get("container") or {}), **(desc.get("container") or {})}
    started = _ms(last.get("startedAt")) or _ms(desc.get("startedAt"))
    stopped = _ms(last.get("stoppedAt")) or _ms(desc.get("stoppedAt"))
    node = container.get("containerInstanceArn")
    tags = desc.get("tags") or {}
    common: dict[str, Any] = dict(started_at=started, node=node, instance_type=tags.get(TAG_INSTANCE) or None)
    if state in _QUEUED:
        return JobStatus(JobState.QUEUED, message=f"{state}: {desc['statusReason']}" if desc.get("statusReason")
                         else "", started_at=None, node=node, instance_type=common["instance_type"])
    if state == "RUNNING":
        return JobStatus(JobState.RUNNING, **common)
    common["backend_attempts"] = earlier = []
    for tried in attempts[:-1]:
        reason, message = _attempt_failure(tried.get("statusReason") or "",
                                           (tried.get("container") or {}).get("reason") or "")
        earlier.append(BackendAttempt(_ms(tried.get("startedAt")), _ms(tried.get("stoppedAt")), reason, message,
                                      node=(tried.get("container") or {}).get("containerInstanceArn"),
                                      instance_type=common["instance_type"]))
    if state == "SUCCEEDED":
        return JobStatus(JobState.SUCCEEDED, exit_code=0, finished_at=stopped, **common)
    status_reason = desc.get("statusReason") or ""
    reason_text = container.get("reason") or ""
    exit_code = container.get("exitCode")
    done: dict[str, Any] = dict(exit_code=exit_code, finished_at=stopped or now_utc(), **common)
    if status_reason.startswith(CANCEL_REASON):
        return JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, status_reason, **done)
    if status_reason.startswith(TIMEOUT_REASON) or "attempt duration exceeded" in status_reason.lower():
        return JobStatus(JobState.FAILED, FailureReason.TIMED_OUT, status_reason, **done)
    if status_reason.startswith(TIME_LIMIT_ACTION):
        return JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                         f"AWS Batch gave up waiting for capacity: {status_reason}", **done)
    for text in (reason_text, status_reason):
        if _matches(text, "CannotPullContainerError*") and \
                classify_pull_error(text) is FailureReason.IMAGE_INVALID:
            return JobStatus(JobState.FAILED, FailureReason.IMAGE_INVALID,
                             f"AWS Batch: the image could not be pulled: {text}", **done)
        if _matches(text, "Cannot*") and any(s in text for s in _INVALID_START):
            return JobStatus(JobState.FAILED, FailureReason.IMAGE_INVALID,
                             f"AWS Batch: the container could not start: {text}", **done)
    for key, pattern in INFRA_RULES:
        if _matches(status_reason if key == "onStatusReason" else reason_text, pattern):
            return JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                             f"AWS Batch: {status_reason or reason_text}", **done)
    if "OutOfMemoryError" in reason_text:
        return JobStatus(JobState.FAILED, FailureReason.OUT_OF_MEMORY, f"AWS Batch: {reason_text}", **done)
    limit = (desc.get("timeout") or {}).get("attemptDurationSeconds")
    if exit_code is None and limit and started and stopped and (stopped - started).total_seconds() >= limit - 1:
        return JobStatus(JobState.FAILED, FailureReason.TIMED_OUT, f"ran past attemptDurationSeconds={limit}",
                         **done)
    if status_reason and not any(status_reason.startswith(own) for own in BATCH_OWN_REASONS):
        # Batch writes its own words for a job's end; anything else is the reason someone gave TerminateJob
        return JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                         f"stopped outside referee (not the submission's doing): {status_reason}", **done)
    if exit_code == STAGE_FAILED_EXIT and tags.get(TAG_STAGED):
        return JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                         "AWS Batch: staging the inputs failed (see the job's log)", **done)
    if exit_code is None:  # a submission's failure unless Batch says otherwise (no free retries)
        why = status_reason or reason_text or "AWS Batch reported no exit code"
        return JobStatus(JobState.FAILED, FailureReason.EXITED_NONZERO, f"the job failed: {why}", **done)
    return JobStatus(JobState.FAILED, FailureReason.EXITED_NONZERO, f"exited with status {exit_code}", **done)
