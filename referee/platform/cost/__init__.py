"""Cost accounting for referee: instance prices, cost trackers, budgets, fleet planning and simulation.

* ``catalog``    — the public price table (``prices.json``) and per-competition overrides
* ``config``     — the competition's ``cost:`` section, validated; the hourly rate of a job
* ``trackers``   — built-in trackers: instance-time x price (on-demand or spot), GPU-hours
* ``ledger``     — cost rows in the store and totals per job, submission, team and competition
* ``budget``     — the check run before every dispatch (spent + committed + projected)
* ``planner``    — ``referee cost plan``: pilot runtimes -> cost, wall time and fleet size
* ``simulation`` — a discrete-event fleet simulation driving the real scheduling policy
* ``pareto``     — score versus cost, and the leaderboard's cost and Pareto columns
"""

from referee.platform.cost.budget import (
    Outlay,
    budget_reason,
    check_dispatch,
    dispatch_decision,
)
from referee.platform.cost.catalog import (
    Catalog,
    InstanceType,
    UnknownInstanceType,
    default_catalog,
)
from referee.platform.cost.config import (
    CostConfig,
    Rate,
    cost_config,
    parse_cost_section,
)
from referee.platform.cost.planner import Plan, PlanRequest, plan
from referee.platform.cost.simulation import (
    SimulationConfig,
    SimulationResult,
    simulate,
)

__all__ = [
    "Catalog", "InstanceType", "UnknownInstanceType", "default_catalog", "CostConfig", "Rate", "cost_config",
    "parse_cost_section", "Outlay", "budget_reason", "check_dispatch", "dispatch_decision", "Plan", "PlanRequest",
    "plan",
    "SimulationConfig", "SimulationResult", "simulate",
]
