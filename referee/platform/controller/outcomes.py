"""What the controller keeps about its work: the attempts it watches, the outcome of one attempt, and the
summary of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from referee.platform.core.jobs import FailureReason, JobSpec, SubmissionStatus
from referee.platform.store import NewScore

LOG_TAIL_BYTES = 8192  # the end of a job's log kept with its submission


def unusable_output(path: Path) -> str | None:
    """Why a succeeded job's prediction file cannot be scored (said after its name), or None."""
    if path.is_symlink():
        return "is a symlink (not followed)"
    if not path.is_file():
        return "was not written"
    return None


@dataclass
class RunSummary:
    scored: int = 0
    failed: int = 0
    retried: int = 0
    paused_reason: str | None = None
    held_teams: dict[str, str] = field(default_factory=dict)  # team -> why its submissions wait
    failures: dict[str, int] = field(default_factory=dict)
    outages: int = 0  # times the backend's control plane stopped answering (and came back, or not)

    def to_dict(self) -> dict[str, Any]:
        return {"scored": self.scored, "failed": self.failed, "retried": self.retried,
                "paused_reason": self.paused_reason, "held_teams": self.held_teams, "failures": self.failures,
                "outages": self.outages}


@dataclass(frozen=True)
class Outcome:
    """What happened to one attempt, as the submission's next state."""

    status: SubmissionStatus  # PENDING (a retry), SCORED or FAILED
    reason: FailureReason | None = None
    message: str = ""
    charge: bool = True  # counts toward the team's quota (failures only)
    log_tail: str | None = None
    scores: tuple[NewScore, ...] = ()
    attempts: tuple[int, ...] = ()  # every attempt of a sharded run (their costs go with the outcome)


@dataclass
class WatchedJob:
    """A dispatched attempt this controller watches."""

    sid: int
    team: str
    job_row: int
    spec: JobSpec
    since: float = field(default_factory=time.monotonic)  # when it was dispatched (monotonic clock)
    seen: tuple[str, str] | None = None  # the last (state, message) a poll reported
    stuck: bool = False  # found waiting for a machine longer than stuck_after
    reason: str = ""  # the waiting reason recorded for it
    capacity_cancel: str | None = None  # cancelled for waiting too long: the failure message

    @property
    def shard(self) -> int | None:
        return self.spec.shard
