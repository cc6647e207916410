"""referee: a plugin-based batch evaluation platform for ML competitions and leaderboards."""

__version__ = "0.1.0"
