"""The fleet simulation drives the real SchedulingPolicy and budget rule over a simulated clock: the
4,200 x 9 h case study finishes in seconds and agrees with the planner; failures are retried, not charged."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_cost_trackers import script_plugins  # noqa: F401  (fixture)

from referee.platform.cli.main import cli
from referee.platform.controller.policy import SchedulingPolicy
from referee.platform.cost.config import CostConfig
from referee.platform.cost.planner import PlanRequest, plan
from referee.platform.cost.simulation import SimulationConfig, simulate

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


# -- the same budget decision and the same pricing as a real run --------------------------------------
def test_team_budget_holds_only_that_team_like_the_scheduler(store, example, script_plugins):
    """The scenario of test_budget's team hold, run for real and simulated: same decision, same message."""
    import re

    from test_cost_trackers import (
        ClockedFake,
        fake_output,
        make_competition,
        submit_scripts,
    )

    from referee.platform.controller.reconcile import Controller
    from referee.platform.cost.config import cost_config

    root = example("deepfake")
    comp = make_competition(store, root, name="team-budget-sim", max_in_flight=1,
                            cost={"team_budget": 5.0, "local_backends": [], "estimated_runtime": "30m"},
                            resources={"gpus": 1, "instance_type": "p3.2xlarge"})
    plan_ = [("alpha", p) for p in ("alpha__good.csv", "bravo__mediocre.csv", "charlie__baseline.csv",
                                    "echo__first.csv")] + [("bravo", "echo__second.csv"), ("bravo", "alpha__good.csv")]
    texts = submit_scripts(store, comp, root, plan_)
    real = Controller(store, comp, ClockedFake(default_hours=0.5, output=fake_output(texts)), poll_interval=0.01).run()
    sim = simulate(SimulationConfig(submissions=len(plan_), runtime_s=0.5 * H, fleet=1, instance_type="p3.2xlarge",
                                    team_names=[t for t, _ in plan_], timeout_s=comp.resources.timeout,
                                    cost=cost_config(comp), gpus=1))
    assert real.paused_reason is None and sim.paused_reason is None  # a team's budget pauses nothing else
    assert set(sim.held_teams) == set(real.held_teams) == {"alpha"}
    assert sim.completed == real.scored == 5
    assert sim.pending == len(store.submissions(comp.id, status="pending")) == 1

    def same(text: str) -> str:  # submission numbers and competition ids differ, nothing else
        return re.sub(r"#\d+", "#N", text).replace(f"'{comp.id}'", "C").replace(comp.id, "C").replace(
            "'simulation'", "C").replace("simulation", "C")
    assert same(sim.held_teams["alpha"]) == same(real.held_teams["alpha"])


def test_competition_budget_still_pauses_everything():
    r = simulate(SimulationConfig(submissions=40, runtime_s=H, fleet=4, teams=4, timeout_s=H,
                                  cost=CostConfig(budget=3.06 * 10, team_budget=1000.0)))
    assert r.paused_reason.startswith("competition 'simulation' budget of $30.60") and not r.held_teams
    assert r.completed == 10 and r.pending == 30


def test_jobs_are_priced_with_the_budget_checks_rate_and_share():
    """cost.share decides a job's price, as in check_dispatch and the instance-time tracker: whole (the
    default) charges each job the whole p3.8xlarge even when four 1-GPU jobs share it; reserved a quarter."""
    from referee.platform.cost.budget import job_rate

    base = dict(submissions=40, runtime_s=H, fleet=2, jobs_per_instance=4, instance_type="p3.8xlarge", gpus=1)
    for share, fraction in (("whole", 1.0), ("reserved", 0.25)):
        cfg = CostConfig(share=share)
        r = simulate(SimulationConfig(**base, cost=cfg))
        real = job_rate(cfg, "aws-batch", instance_type="p3.8xlarge", cpu=None, memory=None, gpus=1)
        assert real.share == r.share == fraction
        assert r.busy_hours == pytest.approx(40.0)
        assert r.cost == pytest.approx(40 * real.per_hour) == pytest.approx(40 * 12.24 * fraction)
        # the budget projection of one job is the same amount the dispatch check would project
        budgeted = simulate(SimulationConfig(**base, cost=CostConfig(share=share, budget=real.per_hour * 8 - 1e-6),
                                             timeout_s=H))
        assert budgeted.completed == 7 and budgeted.cost == pytest.approx(7 * real.per_hour)


def test_simulation_counts_lost_attempts_against_the_host_not_the_team():
    # every team's budget fits two clean runs; attempts lost to the platform must not eat into it
    # (one slot, so no team ever has a job in flight when it is checked: only its spend counts)
    r = simulate(SimulationConfig(submissions=60, runtime_s=H, fleet=1, teams=6, timeout_s=H, failure_rate=0.3,
                                  max_infra_retries=10, cost=CostConfig(team_budget=2 * 3.06), seed=11))
    assert r.retries > 0 and r.lost_hours > 0
    assert r.cost == pytest.approx((12 + r.lost_hours) * 3.06)  # the host still pays for the lost time
    assert r.completed == 12 and len(r.held_teams) == 6 and r.paused_reason is None


@pytest.mark.parametrize("args, option", [
    (["plan", "-n", "10", "--deadline", "1d", "--pilot", "c5.large=1h", "--cpu", "nan"], "--cpu"),
    (["plan", "-n", "10", "--deadline", "1d", "--pilot", "c5.large=1h", "--cpu", "-2"], "--cpu"),
    (["plan", "-n", "10", "--deadline", "1d", "--pilot", "c5.large=1h", "--restart-margin", "inf"], "--restart-margin"),
    (["plan", "-n", "10", "--deadline", "1d", "--pilot", "c5.large=1h", "--failure-rate", "nan"], "--failure-rate"),
    (["plan", "-n", "10", "--deadline", "1d", "--pilot", "c5.large=1h", "--memory", "0"], "--memory"),
    (["simulate", "-n", "10", "--runtime-cv", "nan"], "--runtime-cv"),
    (["simulate", "-n", "10", "--budget", "nan"], "--budget"),
    (["simulate", "-n", "10", "--cpu", "inf"], "--cpu"),
])
def test_bad_numbers_are_usage_errors_naming_the_option(tmp_path, args, option):
    out = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "cost", *args])
    assert out.exit_code == 2, (out.exit_code, out.output, out.exception)  # click's usage error, no traceback
    assert option in out.output and "Traceback" not in out.output
    assert not isinstance(out.exception, ValueError)


def test_plan_request_refuses_bad_resources():
    from referee.platform.cost.planner import PlanInputError
    for kw in ({"cpu": float("nan")}, {"cpu": 0.0}, {"memory": -1}, {"deadline_s": float("inf")}):
        args = {"submissions": 10, "deadline_s": 86400.0, "pilots": {"c5.large": [H]}, **kw}
        with pytest.raises(PlanInputError):
            plan(PlanRequest(**args))
