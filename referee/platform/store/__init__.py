"""Persistence: the workspace's SQLite database and blobs. The only package that runs SQL."""

from referee.platform.store.database import utcnow
from referee.platform.store.rows import (
    CompetitionRow,
    CostRow,
    JobRow,
    LeaderboardScore,
    NewScore,
    RunningJob,
    ScoreRow,
    SubmissionRow,
    TokenRow,
)
from referee.platform.store.store import PLATFORM_ACCOUNT, Store

__all__ = ["Store", "utcnow", "SubmissionRow", "JobRow", "ScoreRow", "NewScore", "LeaderboardScore", "CompetitionRow",
           "TokenRow", "RunningJob", "CostRow", "PLATFORM_ACCOUNT"]
