"""Scheduling policy: what runs next, and what a failure means. Pure logic, no I/O.

The scheduler and the fleet simulation both drive this one class, so a simulated plan exercises
the exact decisions a real run makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar

from referee.platform.core.jobs import FailureReason

T = TypeVar("T")


@dataclass(frozen=True)
class FailureDecision:
    retry: bool  # dispatch another attempt
    charge: bool  # counts toward the team's quota
    reason: FailureReason  # what the team is shown when not retried
    message: str = ""


@dataclass(frozen=True)
class Candidate:
    """A pending piece of work as the policy sees it."""

    key: int  # submission id
    team: str
    created_at: str


class SchedulingPolicy:
    """Bounded in-flight dispatch, round-robin across teams, infra-only retries."""

    def __init__(self, max_in_flight: int = 4, max_infra_retries: int = 3, per_team_in_flight: int | None = None):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.max_infra_retries = max_infra_retries
        self.per_team_in_flight = per_team_in_flight

    def claim_window(self, free: int) -> int:
        """How many of the oldest pending submissions to look at when filling ``free`` slots."""
        return max(256, free * 8)

    def free_slots(self, in_flight: int) -> int:
        return max(0, self.max_in_flight - in_flight)

    def order(self, pending: Iterable[Candidate], running_by_team: dict[str, int] | None = None,
              limit: int | None = None) -> list[Candidate]:
        """Oldest first within a team, teams interleaved so one team's burst cannot starve the rest.
        Stops after ``limit`` candidates."""
        running_by_team = dict(running_by_team or {})
        queues: dict[str, list[Candidate]] = {}
        for c in sorted(pending, key=lambda c: (c.created_at, c.key)):
            queues.setdefault(c.team, []).append(c)
        out: list[Candidate] = []
        teams = sorted(queues, key=lambda t: (running_by_team.get(t, 0), queues[t][0].created_at))
        depth = 0
        while queues and (limit is None or len(out) < limit):
            for t in list(teams):
                if limit is not None and len(out) >= limit:
                    break
                q = queues.get(t)
                if not q:
                    continue
                if self.per_team_in_flight is not None and \
                        running_by_team.get(t, 0) + depth >= self.per_team_in_flight:
                    del queues[t]
                    continue
                out.append(q.pop(0))
                if not q:
                    del queues[t]
            teams = [t for t in teams if t in queues]
            depth += 1
        return out

    def pick(self, pending: Sequence[Candidate], in_flight: int,
             running_by_team: dict[str, int] | None = None) -> list[Candidate]:
        free = self.free_slots(in_flight)
        return self.order(pending, running_by_team, limit=free) if free else []

    def on_failure(self, reason: FailureReason, attempt: int, message: str = "") -> FailureDecision:
        """Infrastructure failures are retried up to the limit and never charged; the rest are final."""
        if reason.is_infrastructure:
            if attempt <= self.max_infra_retries:
                return FailureDecision(retry=True, charge=False, reason=reason, message=message)
            return FailureDecision(retry=False, charge=False, reason=reason,
                                   message=f"gave up after {attempt} attempts: {message}")
        return FailureDecision(retry=False, charge=reason is not FailureReason.CANCELLED, reason=reason,
                               message=message or reason.explanation)
