"""Scoring engine: scorer hooks, per-item statistics, intervals and significance."""
