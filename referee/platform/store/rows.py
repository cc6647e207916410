"""Typed rows the store returns."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from referee.platform.core.jobs import (
    FailureReason,
    JobState,
    JobStatus,
    SubmissionStatus,
)


def parse_time(v: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(v) if v else None


@dataclass
class SubmissionRow:
    id: int
    competition_id: str
    team: str
    phase: str
    kind: str
    sha256: str
    filename: str | None
    size: int | None
    status: SubmissionStatus
    failure_reason: str | None
    failure_message: str | None
    log_tail: str | None
    counts_toward_quota: int
    attempts: int
    attempt_base: int
    claimed_by: str | None
    created_at: str
    updated_at: str
    metadata_json: str
    description: str | None = None
    hidden_reason: str | None = None  # set when the host took it off the leaderboards
    hidden_at: str | None = None
    hidden_by: str | None = None
    baseline: int = 0  # a host's reference entry: shown for comparison, never ranked as a team

    def __post_init__(self) -> None:
        self.status = SubmissionStatus(self.status)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(json.loads(self.metadata_json or "{}"))


@dataclass
class JobRow:
    id: int
    submission_id: int
    attempt: int
    backend: str
    handle: str | None
    state: JobState
    failure_reason: str | None
    message: str | None
    exit_code: int | None
    node: str | None
    instance_type: str | None
    gpus: int
    cpu: float | None
    memory: int | None
    spec_json: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    shard: int | None = None  # of a sharded submission
    waiting_reason: str | None = None  # the backend's own reason, while the job waits too long for a machine
    stuck_at: str | None = None  # when it was found waiting longer than stuck_after

    def __post_init__(self) -> None:
        self.state = JobState(self.state)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(json.loads(self.spec_json or "{}"))

    def status(self) -> JobStatus:
        """The job's state as a ``JobStatus`` (a final one for a finished job)."""
        reason = FailureReason(self.failure_reason) if self.failure_reason else None
        return JobStatus(self.state, reason, self.message or "", exit_code=self.exit_code,
                         started_at=parse_time(self.started_at), finished_at=parse_time(self.finished_at),
                         node=self.node, instance_type=self.instance_type)


@dataclass
class ScoreRow:
    id: int
    submission_id: int
    metric: str
    split: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_items: int | None
    stats_sha256: str | None
    details_json: str
    provenance_json: str
    created_at: str

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(json.loads(self.provenance_json or "{}"))

    @property
    def details(self) -> dict[str, Any]:
        return dict(json.loads(self.details_json or "{}"))


@dataclass(frozen=True)
class NewScore:
    """A score to write (``Store.settle`` writes a submission's scores with its final status)."""

    metric: str
    split: str
    value: float | None
    n_items: int | None
    stats_sha256: str | None
    details: dict[str, Any]
    provenance: dict[str, Any]
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class LeaderboardScore:
    """One score of a scored submission, as the leaderboard reads them."""

    submission_id: int
    team: str
    created_at: str
    metric: str
    split: str
    value: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class CompetitionRow:
    id: str
    source_path: str | None
    loaded_at: str


@dataclass(frozen=True)
class TokenRow:
    token_sha256: str
    role: str
    competition_id: str | None
    team: str | None
    label: str | None
    created_at: str
    revoked_at: str | None
    user_id: int | None = None
    expires_at: str | None = None


@dataclass(frozen=True)
class UserRow:
    id: int
    username: str
    email: str | None
    password_hash: str
    created_at: str
    disabled_at: str | None


@dataclass(frozen=True)
class TeamRow:
    id: int
    competition_id: str
    name: str
    invite_code: str | None
    created_by: int | None
    created_at: str
    disqualified_reason: str | None
    disqualified_at: str | None


@dataclass(frozen=True)
class MemberRow:
    team_id: int
    user_id: int
    username: str
    role: str  # captain | member
    joined_at: str


@dataclass(frozen=True)
class RegistrationRow:
    competition_id: str
    user_id: int
    username: str
    status: str  # pending | approved | denied
    created_at: str
    decided_at: str | None
    decided_by: str | None


@dataclass(frozen=True)
class OrganiserRow:
    competition_id: str
    user_id: int
    username: str
    role: str  # owner | admin | viewer
    added_at: str
    added_by: str | None


@dataclass(frozen=True)
class CompetitionFileRow:
    competition_id: str
    kind: str  # page | starting_kit | input | reference
    name: str
    sha256: str
    size: int
    loaded_at: str


@dataclass(frozen=True)
class RunningJob:
    """A dispatched job that has not finished: what the budget counts as committed."""

    submission_id: int
    team: str
    backend: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class CostRow:
    competition_id: str
    submission_id: int | None
    job_id: int | None
    team: str | None
    tracker: str
    amount: float
    unit: str
    details: dict[str, Any]


@dataclass(frozen=True)
class PhaseVisibilityRow:
    """The host's switch of one leaderboard (a phase's split): who sees it, since when, set by whom."""

    competition_id: str
    phase: str
    split: str
    visibility: str  # hidden | host | public
    set_at: str
    set_by: str | None


@dataclass(frozen=True)
class PickRow:
    """A submission a team picked for its final (private) entry of a phase."""

    submission_id: int
    competition_id: str
    phase: str
    team: str
    picked_at: str
    picked_by: str | None


@dataclass(frozen=True)
class RulesAcceptanceRow:
    competition_id: str
    user_id: int
    rules_sha256: str | None
    accepted_at: str
