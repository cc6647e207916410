"""The controller: turns submissions into jobs, applies their outcomes, and runs host actions."""
