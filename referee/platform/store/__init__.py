"""Persistence: the workspace's SQLite database and blobs. The only package that runs SQL."""

from referee.platform.store.database import utcnow
from referee.platform.store.rows import (
    CompetitionFileRow,
    CompetitionRow,
    CostRow,
    JobRow,
    LeaderboardScore,
    MemberRow,
    NewScore,
    OrganiserRow,
    PhaseVisibilityRow,
    PickRow,
    RegistrationRow,
    RulesAcceptanceRow,
    RunningJob,
    ScoreRow,
    SubmissionRow,
    TeamRow,
    TokenRow,
    UserRow,
)
from referee.platform.store.store import PLATFORM_ACCOUNT, Store

__all__ = ["Store", "utcnow", "SubmissionRow", "JobRow", "ScoreRow", "NewScore", "LeaderboardScore", "CompetitionRow",
           "TokenRow", "RunningJob", "CostRow", "PLATFORM_ACCOUNT", "UserRow", "TeamRow", "MemberRow",
           "RegistrationRow", "OrganiserRow", "CompetitionFileRow", "PhaseVisibilityRow", "PickRow",
           "RulesAcceptanceRow"]
