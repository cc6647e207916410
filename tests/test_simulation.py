"""The fleet simulation drives the real SchedulingPolicy and budget rule over a simulated clock: the
4,200 x 9 h case study finishes in seconds and agrees with the planner; failures are retried, not charged."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from referee.platform.cli import cli
from referee.platform.cost.config import CostConfig
from referee.platform.cost.planner import PlanRequest, plan
from referee.platform.cost.simulation import SimulationConfig, simulate
from referee.platform.policy import SchedulingPolicy

H = 3600.0
THREE_WEEKS = 21 * 86400.0
N = 4200


@pytest.fixture(scope="module")
def planned():
    p = plan(PlanRequest(submissions=N, deadline_s=THREE_WEEKS, pilots={"p3.2xlarge": [9 * H]}))
    return p.options[0]


def test_case_study_matches_the_planner(planned):
    r = simulate(SimulationConfig(submissions=N, runtime_s=9 * H, fleet=planned.instances_needed, runtime_cv=0.1,
                                  teams=200, seed=1))
    assert r.wall_s < 60  # a sanity bound; bench/bench_simulation.py measures the speed
    assert r.completed == N and r.retries == 0 and r.pending == 0
    assert r.makespan_s == pytest.approx(planned.makespan_s, rel=0.05)
    assert r.makespan_s <= THREE_WEEKS * 1.05
    assert r.cost == pytest.approx(planned.cost, rel=0.02)
    assert r.busy_hours == pytest.approx(planned.instance_hours, rel=0.02)
    assert 0.95 < r.utilisation <= 1.0
    assert r.peak_in_flight == planned.instances_needed
    assert r.provisioned_cost >= r.cost


def test_failures_are_retried_not_charged_and_cost_what_the_planner_expects(planned):
    rate = 0.1
    lossy_plan = plan(PlanRequest(submissions=N, deadline_s=THREE_WEEKS, pilots={"p3.2xlarge": [9 * H]},
                                  failure_rate=rate)).options[0]
    r = simulate(SimulationConfig(submissions=N, runtime_s=9 * H, fleet=planned.instances_with_margin,
                                  runtime_cv=0.1, teams=200, failure_rate=rate, restart_delay_s=300, seed=2))
    expected_retries = N * rate / (1 - rate)
    assert abs(r.retries - expected_retries) < 0.2 * expected_retries
    assert r.charged_failures == 0 and r.timed_out == 0  # infrastructure failures never charge a team
    assert r.completed + r.gave_up == N and r.gave_up <= 5
    assert r.lost_hours > 0
    assert r.cost == pytest.approx(lossy_plan.cost, rel=0.05)
    assert r.makespan_s <= THREE_WEEKS  # the restart margin absorbed the failures


def test_the_real_policy_is_in_control():
    class Spy(SchedulingPolicy):
        picks = failures = 0

        def pick(self, *a, **kw):
            Spy.picks += 1
            return super().pick(*a, **kw)

        def on_failure(self, *a, **kw):
            Spy.failures += 1
            return super().on_failure(*a, **kw)

    policy = Spy(max_in_flight=12, max_infra_retries=0, per_team_in_flight=1)
    r = simulate(SimulationConfig(submissions=60, runtime_s=H, fleet=12, teams=3, failure_rate=0.2, seed=3),
                 policy=policy)
    assert r.peak_in_flight == 3  # per-team limit of the policy, not the 12 free slots
    assert Spy.picks == r.dispatch_rounds and Spy.failures == r.gave_up > 0
    assert r.retries == 0 and r.completed + r.gave_up == 60  # max_infra_retries=0: give up, still not charged
    assert r.charged_failures == 0


def test_timeouts_are_final_and_charged():
    r = simulate(SimulationConfig(submissions=500, runtime_s=9 * H, runtime_cv=0.3, fleet=50, timeout_s=11 * H,
                                  seed=4))
    assert r.timed_out > 0 and r.charged_failures == r.timed_out and r.retries == 0
    assert r.completed + r.timed_out == 500


def test_budget_pauses_the_simulation_with_the_dispatch_rule(planned):
    budget = 0.2 * planned.cost
    cfg = CostConfig(budget=budget)
    r = simulate(SimulationConfig(submissions=N, runtime_s=9 * H, fleet=planned.instances_needed, runtime_cv=0.1,
                                  timeout_s=12 * H, cost=cfg, seed=5))
    assert r.paused_reason.startswith("competition 'simulation' budget of $")
    assert r.pending > 0 and r.completed + r.timed_out + r.pending == N
    assert r.cost <= budget  # projections use the timeout, an upper bound, so spend stays within it
    assert r.cost > 0.8 * budget


def test_deterministic_and_cli(tmp_path):
    a = simulate(SimulationConfig(submissions=300, runtime_s=H, fleet=7, runtime_cv=0.2, failure_rate=0.1, seed=9))
    b = simulate(SimulationConfig(submissions=300, runtime_s=H, fleet=7, runtime_cv=0.2, failure_rate=0.1, seed=9))
    assert (a.makespan_s, a.cost, a.retries) == (b.makespan_s, b.cost, b.retries)
    out = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "cost", "simulate", "-n", "400", "--runtime", "2h",
                                   "--deadline", "2d", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    # the fleet is planned for the deadline with a 50% restart margin: 400 x 2 h in 48 h -> 17 slots -> 26
    assert data["fleet"] == 26 and data["completed"] + data["gave_up"] == 400
    assert data["makespan_s"] <= 2 * 86400
