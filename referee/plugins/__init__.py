"""Plugin system: hookspecs, typed records, and the plugin manager."""

from referee.platform.core.predictions import Predictions, References
from referee.plugins.hookspecs import hookimpl, hookspec
from referee.plugins.records import (
    BackendInfo,
    CostTrackerInfo,
    Hold,
    PluginReport,
    ScorerInfo,
    SubmissionKindInfo,
)

__all__ = [
    "hookimpl", "hookspec", "ScorerInfo", "BackendInfo", "CostTrackerInfo", "SubmissionKindInfo", "Hold",
    "PluginReport", "Predictions", "References",
]
