"""Plugin system: hookspecs, typed records, and the plugin manager."""

from referee.platform.core.predictions import Predictions, References
from referee.plugins.hookspecs import hookimpl, hookspec
from referee.plugins.records import (
    BackendInfo,
    ConfigSection,
    CostTrackerInfo,
    Derived,
    Hold,
    LeaderboardColumn,
    LeaderboardPlot,
    LeaderboardRenderer,
    PluginReport,
    ReportPanel,
    ScorerInfo,
    SubmissionKindInfo,
)

__all__ = [
    "hookimpl", "hookspec", "ScorerInfo", "BackendInfo", "CostTrackerInfo", "SubmissionKindInfo", "Hold",
    "ConfigSection", "Derived", "LeaderboardColumn", "LeaderboardPlot", "LeaderboardRenderer", "ReportPanel",
    "PluginReport", "Predictions", "References",
]
