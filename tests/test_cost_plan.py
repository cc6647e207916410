"""`referee cost plan`: the deepfake case study's figures come out of the public price table within 15%.

Case study: 4,200 submissions at about 9 h each on p3.2xlarge -> 42,000 GPU-hours, about $125,000, at least
85 GPUs around the clock for three weeks (+50% for restarts); g4dn took a little over twice as long but cost
up to 83% less per hour -> about $50,000; the real bill was about $20,000 (25,000 G4 hours, 5,000 CPU hours,
800 P3 hours).
"""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from click.testing import CliRunner

from referee.platform.cli.main import cli
from referee.platform.core.jobs import JobRecord
from referee.platform.cost.catalog import default_catalog
from referee.platform.cost.config import CostConfig
from referee.platform.cost.planner import (
    PlanInputError,
    PlanRequest,
    load_pilot_file,
    plan,
)
from referee.platform.cost.trackers import InstanceTimeTracker

H = 3600.0
THREE_WEEKS = 21 * 86400.0
# Pilot runs of a few sample submissions: "about 9 hours" on p3, "a little over twice as long" on g4dn.
P3_PILOTS = [8.5 * H, 9.0 * H, 9.5 * H, 10.0 * H]
G4_PILOTS = [18.5 * H, 19.5 * H, 20.5 * H, 21.5 * H]


def within(value: float, target: float, tol: float = 0.15) -> bool:
    return abs(value - target) <= tol * target


def case_study(**kw) -> object:
    return plan(PlanRequest(submissions=4200, deadline_s=THREE_WEEKS,
                            pilots={"p3.2xlarge": P3_PILOTS, "g4dn.xlarge": G4_PILOTS}, **kw))


def test_case_study_figures_within_15_percent():
    p = case_study()
    opt = {o.instance_type: o for o in p.options}
    p3, g4 = opt["p3.2xlarge"], opt["g4dn.xlarge"]
    assert 2.0 < g4.runtime_s / p3.runtime_s < 2.4  # "a little over twice as long"
    assert 1 - g4.hourly / p3.hourly == pytest.approx(0.83, abs=0.01)  # "up to 83% less per hour"
    assert within(p3.gpu_hours, 42_000)
    assert within(p3.cost, 125_000)
    assert within(p3.instances_needed, 85)  # GPUs around the clock for three weeks
    assert p3.instances_with_margin == math.ceil(p3.instances_needed * 1.5)  # +50% for restarts
    assert within(p3.instances_with_margin, 85 * 1.5)
    assert within(g4.cost, 50_000)
    # the cheapest option that meets the deadline is the g4dn fleet
    assert p.recommended is g4 and g4.meets_deadline and g4.makespan_s <= THREE_WEEKS
    assert g4.instances_needed > p3.instances_needed  # slower, so more instances for the same deadline
    assert "g4dn.xlarge" in p.message and f"{g4.instances_with_margin} with a 50% restart margin" in p.message


def test_real_bill_from_the_price_table_via_the_tracker():
    """25,000 G4 hours + 5,000 CPU hours + 800 P3 hours priced by the instance-time tracker ~ $20,000."""
    tracker = InstanceTimeTracker(CostConfig())
    t0 = dt.datetime(2020, 3, 1, tzinfo=dt.timezone.utc)
    total = 0.0
    for k, (itype, hours) in enumerate([("g4dn.xlarge", 25_000), ("c5.4xlarge", 5_000), ("p3.2xlarge", 800)]):
        job = JobRecord(id=k, job_id=f"j{k}", submission_id=k, competition_id="dfdc", team="host", attempt=1,
                        backend="aws-batch", state="succeeded", failure_reason=None, cpu=None, memory=None,
                        gpus=0, instance_type=itype, node=None, created_at=t0, started_at=t0,
                        finished_at=t0 + dt.timedelta(hours=hours), spec={})
        usd = [e for e in tracker.job_finished(job, None) if e.unit == "USD"]
        total += usd[0].amount
    assert within(total, 20_000)


def test_fleet_cap_changes_the_choice_and_impossible_deadlines_say_so():
    capped = case_study(fleet=100)
    opt = {o.instance_type: o for o in capped.options}
    assert not opt["g4dn.xlarge"].meets_deadline and "needs" in opt["g4dn.xlarge"].note
    assert capped.recommended is opt["p3.2xlarge"]
    assert opt["p3.2xlarge"].makespan_s == math.ceil(4200 / 100) * opt["p3.2xlarge"].runtime_s
    tight = plan(PlanRequest(submissions=4200, deadline_s=15 * H, pilots={"g4dn.xlarge": G4_PILOTS}))
    assert tight.recommended is None and "no candidate" in tight.message
    assert "longer than the deadline" in tight.options[0].note


def test_spot_failures_packing_and_price_overrides():
    on_demand, spot = case_study(), case_study(pricing="spot")
    for a, b in zip(on_demand.options, spot.options):
        it = default_catalog().get(a.instance_type)
        assert b.cost == pytest.approx(a.cost * (1 - it.spot_discount))
    lossy = case_study(failure_rate=0.1)
    assert lossy.options[0].cost == pytest.approx(on_demand.options[0].cost * (1 + 0.1 / 1.8))
    # four 1-GPU jobs share a p3.8xlarge: a quarter of $12.24 per job-hour, a quarter of the instances
    packed = plan(PlanRequest(submissions=4200, deadline_s=THREE_WEEKS, gpus=1,
                              pilots={"p3.8xlarge": P3_PILOTS, "p3.2xlarge": P3_PILOTS}))
    by = {o.instance_type: o for o in packed.options}
    assert by["p3.8xlarge"].jobs_per_instance == 4
    assert by["p3.8xlarge"].cost == pytest.approx(by["p3.2xlarge"].cost)
    assert by["p3.8xlarge"].instances_needed == math.ceil(by["p3.2xlarge"].instances_needed / 4)
    pricier_g4 = CostConfig(prices={"g4dn.xlarge": {"on_demand": 2.0}}).catalog
    assert case_study().recommended.instance_type == "g4dn.xlarge"
    assert plan(PlanRequest(submissions=4200, deadline_s=THREE_WEEKS, pilots={"p3.2xlarge": P3_PILOTS,
                            "g4dn.xlarge": G4_PILOTS}), pricier_g4).recommended.instance_type == "p3.2xlarge"


def test_pilot_files_and_bad_input(tmp_path):
    y = tmp_path / "pilots.yaml"
    y.write_text("pilots:\n  p3.2xlarge: [9h, 8.5h]\n  g4dn.xlarge: 19h\n")
    assert load_pilot_file(y) == {"p3.2xlarge": [9 * H, 8.5 * H], "g4dn.xlarge": [19 * H]}
    c = tmp_path / "pilots.csv"
    c.write_text("instance_type,runtime\np3.2xlarge,9h\np3.2xlarge,32400\ng5.xlarge,12h\n")
    assert load_pilot_file(c) == {"p3.2xlarge": [9 * H, 9 * H], "g5.xlarge": [12 * H]}
    c.write_text("instance_type,runtime\np3.2xlarge,9h\np3.2xlarge,nine hours\n")
    with pytest.raises(PlanInputError, match=r"pilots.csv, line 3: not a duration"):
        load_pilot_file(c)
    c.write_text("type,seconds\np3.2xlarge,9\n")
    with pytest.raises(PlanInputError, match="line 1: the header must name instance_type and runtime"):
        load_pilot_file(c)
    y.write_text("p3.2xlarge: [9h\n")
    with pytest.raises(PlanInputError, match="YAML syntax error"):
        load_pilot_file(y)
    with pytest.raises(PlanInputError, match="unknown instance type 'p3.huge'"):
        plan(PlanRequest(submissions=10, deadline_s=H, pilots={"p3.huge": [H]}))
    with pytest.raises(PlanInputError, match="restart margin"):
        plan(PlanRequest(submissions=10, deadline_s=H, pilots={"c5.large": [60]}, restart_margin=-1))


def test_cli_plan_json_and_table(tmp_path):
    runner = CliRunner()
    args = ["-w", str(tmp_path / "ws"), "cost", "plan", "-n", "4200", "--deadline", "21d",
            "--pilot", "p3.2xlarge=8.5h,9h,9.5h,10h", "--pilot", "g4dn.xlarge=18.5h,19.5h,20.5h,21.5h"]
    out = runner.invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["recommended"] == "g4dn.xlarge"
    assert within([o for o in data["options"] if o["instance_type"] == "p3.2xlarge"][0]["cost"], 125_000)
    table = runner.invoke(cli, args, env={"COLUMNS": "120"})
    assert table.exit_code == 0 and "recommended: g4dn.xlarge" in table.output
    bad = runner.invoke(cli, [*args[:8], "--pilot", "p3.2xlarge"])
    assert bad.exit_code != 0 and "TYPE=RUNTIME" in str(bad.exception or bad.output)
