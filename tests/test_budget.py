"""Budgets: the scheduler pauses with a clear message before a job would exceed the competition's or a
team's budget (spent + committed + projected), and dispatches nothing beyond it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_cost_trackers import (  # noqa: F401
    ClockedFake,
    fake_output,
    make_competition,
    script_plugins,
    submit_scripts,
)

from referee.platform.controller.reconcile import Controller
from referee.platform.cost.budget import Outlay, budget_reason
from referee.platform.cost.config import CostConfig

P3 = 3.06
PREDICTIONS = ["alpha__good.csv", "bravo__mediocre.csv", "charlie__baseline.csv", "echo__first.csv",
               "echo__second.csv", "delta__overconfident.csv"]


def pending(store, comp) -> int:
    return len(store.submissions(comp.id, status="pending"))


def test_scheduler_pauses_before_exceeding_the_competition_budget(store, example, script_plugins):
    root = example("deepfake")
    cost = {"budget": 10.0, "local_backends": [], "instance_type": "p3.2xlarge"}
    comp = make_competition(store, root, name="budgeted", cost=cost, resources={"gpus": 1})
    texts = submit_scripts(store, comp, root, [(f"team{i}", p) for i, p in enumerate(PREDICTIONS)])

    # Each job runs 1 h on a p3.2xlarge ($3.06) and is projected at its 1 h timeout: three fit in $10.
    backend = ClockedFake(default_hours=1.0, output=fake_output(texts))
    summary = Controller(store, comp, backend, poll_interval=0.01).run()
    assert len(backend.submitted) == 3 and summary.scored == 3
    reason = summary.paused_reason
    assert reason is not None
    assert "competition 'budgeted' budget of $10.00 would be exceeded" in reason
    assert "spent $0.00 + committed $9.18 (3 running jobs)" in reason
    assert "(p3.2xlarge, on_demand, up to 1 h) $3.06 = $12.24" in reason
    assert "raise cost.budget" in reason
    assert pending(store, comp) == 3
    paused = store._query("SELECT message FROM events WHERE kind='paused' AND competition_id=?", (comp.id,))
    assert [e["message"] for e in paused] == [reason]

    # Resuming with $9.18 spent: the next job would take it to $12.24, so nothing is dispatched at all.
    backend2 = ClockedFake(default_hours=1.0, output=fake_output(texts))
    summary2 = Controller(store, comp, backend2, poll_interval=0.01).run()
    assert backend2.submitted == [] and summary2.scored == 0
    assert "spent $9.18 + committed $0.00 (0 running jobs)" in summary2.paused_reason
    assert pending(store, comp) == 3

    # Raising the budget lets the rest run; the spend is exactly what the jobs cost.
    comp.cost["budget"] = 100.0
    store.put_competition(comp)
    comp = store.get_competition(comp.id)
    summary3 = Controller(store, comp, ClockedFake(default_hours=1.0, output=fake_output(texts)),
                         poll_interval=0.01).run()
    assert summary3.paused_reason is None and summary3.scored == 3
    total = store._query("SELECT SUM(amount) FROM costs WHERE competition_id=? AND unit='USD'", (comp.id,))[0][0]
    assert total == pytest.approx(6 * P3)


def test_team_budget_holds_only_that_team(store, example, script_plugins):
    root = example("deepfake")
    # The pilot estimate (30 min) replaces the 1 h timeout in projections: a team may have 3 x $1.53 running.
    cost = {"team_budget": 5.0, "local_backends": [], "estimated_runtime": "30m"}
    comp = make_competition(store, root, name="team-budget", cost=cost,
                            resources={"gpus": 1, "instance_type": "p3.2xlarge"}, max_in_flight=1)
    plan = [("alpha", p) for p in PREDICTIONS[:4]] + [("bravo", PREDICTIONS[4]), ("bravo", PREDICTIONS[0])]
    texts = submit_scripts(store, comp, root, plan)
    backend = ClockedFake(default_hours=0.5, output=fake_output(texts))
    summary = Controller(store, comp, backend, poll_interval=0.01).run()
    # alpha: 3 jobs at $1.53 = $4.59 spent; a fourth would make $6.12 > $5
    teams = [store.get_submission(j.submission_id).team for j in backend.submitted]
    assert teams.count("alpha") == 3
    assert teams.count("bravo") == 2  # bravo is not held back by alpha's budget
    assert summary.paused_reason is None
    reason = summary.held_teams["alpha"]
    assert "team 'alpha' budget of $5.00 would be exceeded: spent $4.59" in reason and "up to 0.5 h" in reason
    assert "submissions are held; other teams keep running" in reason
    (held,) = store.submissions(comp.id, status="pending")
    assert held.team == "alpha"
    assert store._query("SELECT kind, message FROM events WHERE kind='held'")


def test_budget_reason_is_the_single_rule():
    cfg = CostConfig(budget=100.0, team_budget=10.0)
    assert budget_reason(cfg, "c", Outlay(50, 30, 2, 20)) is None  # exactly at the budget is allowed
    msg = budget_reason(cfg, "c", Outlay(50, 30, 2, 20.01))
    assert msg.startswith("competition 'c' budget of $100.00 would be exceeded: spent $50.00 + committed $30.00 "
                          "(2 running jobs) + the next job $20.01 = $100.01")
    both = budget_reason(cfg, "c", Outlay(90, 5, 1, 10), team="t", team_outlay=Outlay(4, 0, 0, 10))
    assert "competition 'c'" in both and "team 't' budget of $10.00" in both and "1 running job)" in both
    assert budget_reason(CostConfig(), "c", Outlay(1e9, 1e9, 9, 1e9)) is None  # no budget, no limit


def test_referee_run_exits_3_with_the_reason(store, example, script_plugins):
    from referee.platform.cli.main import cli
    root = example("deepfake")
    comp = make_competition(store, root, name="cli-budget", cost={"budget": 5.0, "local_backends": []},
                            resources={"gpus": 1, "instance_type": "p3.2xlarge"})
    submit_scripts(store, comp, root, [("alpha", PREDICTIONS[0]), ("bravo", PREDICTIONS[1])])
    result = CliRunner().invoke(cli, ["-w", str(store.root), "run", comp.id, "--no-progress"])
    assert result.exit_code == 3, result.output
    assert "paused:" in result.output and "budget of $5.00 would be exceeded" in result.output
    assert len(store._query("SELECT id FROM jobs")) == 1  # one dispatched, the second held back


def test_attempts_lost_to_the_platform_do_not_count_toward_the_team_budget(store, example, script_plugins):
    from referee.platform.cost.ledger import spent
    root = example("deepfake")
    cost = {"team_budget": 5.0, "local_backends": [], "estimated_runtime": "30m"}
    comp = make_competition(store, root, name="platform-losses", cost=cost,
                            resources={"gpus": 1, "instance_type": "p3.2xlarge"}, max_in_flight=1)
    texts = submit_scripts(store, comp, root, [("alpha", p) for p in PREDICTIONS[:3]])
    first = min(texts)
    # alpha's first submission loses two attempts to the platform ($1.53 each, paid by the host)
    backend = ClockedFake(default_hours=0.5, output=fake_output(texts),
                          script={first: ["platform_error", "platform_error", "ok"]})
    summary = Controller(store, comp, backend, poll_interval=0.01).run()
    # charged to alpha: three successful runs, $4.59 <= $5; counting the lost attempts would have held
    # alpha after its first submission ($4.59 + $1.53 > $5)
    assert summary.held_teams == {} and summary.scored == 3 and summary.retried == 2
    assert spent(store, comp.id, "alpha") == pytest.approx(3 * 0.5 * P3)
    assert spent(store, comp.id) == pytest.approx(5 * 0.5 * P3)  # the host paid for all five attempts
