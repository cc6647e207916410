"""Cost trackers: real Controller runs (fake backend on a fake clock, and the local backend) record cost rows
per job; totals per submission, team and competition; the leaderboard's cost and Pareto columns."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
import yaml

import referee.plugins.testing as testing_plugin
from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.errors import SpecError
from referee.platform.core.jobs import JobSpec, JobStatus
from referee.platform.cost.ledger import report, submission_totals
from referee.platform.cost.pareto import pareto_front
from referee.platform.leaderboard.render import render_leaderboard
from referee.plugins import hookimpl
from referee.plugins.manager import PluginManager, set_plugin_manager
from referee.plugins.records import CostTrackerInfo, SubmissionKindInfo
from referee.plugins.testing import FakeBackend
from referee.submissions.submit import submit

P3 = 3.06  # p3.2xlarge on-demand, USD per hour, from the shipped price table


# -- shared helpers (test_budget.py imports these) --------------------------------------------------------
class ScriptKind:
    """A submission kind for tests: a Python script run as the job's command."""

    @staticmethod
    def _ingest(source, comp, store, filename=None):
        sha, size = store.put_blob_file(Path(source))
        return {"sha256": sha, "size": size, "filename": filename or Path(source).name, "metadata": {}}

    @staticmethod
    def _to_job(sub, comp, store):
        return {"command": [sys.executable, str(store.blob_path(sub.sha256))]}

    @hookimpl
    def referee_submission_kinds(self):
        return [SubmissionKindInfo(name="script", detect=lambda p: str(p).endswith(".py"), ingest=self._ingest,
                                   to_job=self._to_job)]


class ClockedFake(FakeBackend):
    """The fake backend on a fake clock: each job reports having run ``hours[submission id]`` hours."""

    def __init__(self, hours: dict[int, float] | None = None, default_hours: float = 1.0, **kw):
        super().__init__(**kw)
        self.hours = hours or {}
        self.default_hours = default_hours

    def _finish(self, job: JobSpec) -> JobStatus:
        st = super()._finish(job)
        st.started_at = st.finished_at - dt.timedelta(hours=self.hours.get(job.submission_id, self.default_hours))
        return st


@pytest.fixture
def script_plugins():
    pm = PluginManager(entrypoints=False, extra=[testing_plugin, ScriptKind()])
    set_plugin_manager(pm)
    return pm


def make_competition(store, root: Path, *, name: str, backend: str = "fake", cost: dict | None = None,
                     resources: dict | None = None, max_in_flight: int = 4):
    """The deepfake example (generated under ``root``) as a competition of script submissions."""
    doc = yaml.safe_load((root / "competition.yaml").read_text())
    doc.update(id=name, backend={"name": backend, "max_in_flight": max_in_flight},
               resources={"cpu": 1, "memory": "512m", "timeout": "1h", **(resources or {})}, cost=cost or {})
    doc.pop("limits", None)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_into_store(store, path)


def submit_scripts(store, comp, root: Path, plan: list[tuple[str, str]]) -> dict[int, str]:
    """Submit one script per (team, prediction file); each copies that file to the job's output.
    Returns submission id -> prediction text (what the fake backend writes)."""
    out = {}
    for k, (team, pred) in enumerate(plan):
        src = root / "submissions" / pred
        script = root / f"job_{comp.id}_{k}.py"
        script.write_text(
            "import os, shutil, time\n"
            "time.sleep(0.3)\n"
            f"shutil.copy({str(src)!r}, os.path.join(os.environ['REFEREE_OUTPUT'], "
            "os.environ['REFEREE_OUTPUT_FILE']))\n")
        sid = submit(store, comp, team, script)
        out[sid] = src.read_text()
    return out


def fake_output(texts: dict[int, str]):
    return lambda job: texts[job.submission_id]


def cost_rows(store, comp_id: str) -> list[dict]:
    return [dict(r) for r in store._query("SELECT * FROM costs WHERE competition_id=? ORDER BY job_id, tracker, unit",
                                         (comp_id,))]


# -- fake backend, fake clock --------------------------------------------------------------------------
class CountingTracker:
    """A third-party tracker: sees every start and finish, charges a flat fee per finished job."""

    name = "flat-fee"

    def __init__(self):
        self.started: list[int] = []
        self.finished: list[int] = []

    def job_started(self, job):
        self.started.append(job.id)

    def job_finished(self, job, result):
        from referee.platform.cost.ledger import CostEntry
        self.finished.append(job.id)
        return [CostEntry(0.25, "fee", {"state": result.state.value})]


class BrokenTracker:
    name = "broken"

    def job_started(self, job):
        raise RuntimeError("tracker bug")

    def job_finished(self, job, result):
        raise RuntimeError("tracker bug")


def test_scheduler_run_records_costs_per_job_and_totals(store, example, tmp_path):
    root = example("deepfake")
    counting = CountingTracker()

    class ExtraTrackers:
        @hookimpl
        def referee_cost_trackers(self):
            return [CostTrackerInfo("flat-fee", factory=lambda comp, st: counting),
                    CostTrackerInfo("broken", factory=lambda comp, st: BrokenTracker())]

    set_plugin_manager(PluginManager(entrypoints=False, extra=[testing_plugin, ScriptKind(), ExtraTrackers()]))
    comp = make_competition(store, root, name="costs", resources={"gpus": 1, "instance_type": "p3.2xlarge"},
                            cost={"local_backends": []})  # price the fake backend like a cloud one
    texts = submit_scripts(store, comp, root, [("alpha", "alpha__good.csv"), ("alpha", "charlie__baseline.csv"),
                                               ("bravo", "bravo__mediocre.csv"), ("charlie", "charlie__baseline.csv"),
                                               ("delta", "delta__overconfident.csv")])
    a1, a2, b1, c1, d1 = sorted(texts)
    hours = {a1: 3.0, a2: 1.5, b1: 0.5, c1: 0.25, d1: 2.0}
    backend = ClockedFake(hours=hours, script={b1: ["platform_error", "ok"]}, output=fake_output(texts))
    summary = Controller(store, comp, backend, poll_interval=0.01).run()
    assert summary.scored == 5 and summary.retried == 1

    rows = cost_rows(store, comp.id)
    jobs = store._query("SELECT j.id, j.submission_id FROM jobs j JOIN submissions s ON s.id=j.submission_id "
                       "WHERE s.competition_id=?", (comp.id,))
    assert len(jobs) == 6  # bravo ran twice
    for j in jobs:
        mine = {(r["tracker"], r["unit"]): r for r in rows if r["job_id"] == j["id"]}
        h = hours[j["submission_id"]]
        assert mine[("instance-time", "USD")]["amount"] == pytest.approx(h * P3, rel=1e-6)
        assert mine[("instance-time", "instance-hours")]["amount"] == pytest.approx(h, rel=1e-6)
        assert mine[("gpu-hours", "gpu-hours")]["amount"] == pytest.approx(h, rel=1e-6)  # one GPU per job
        assert mine[("flat-fee", "fee")]["amount"] == 0.25
        assert ("broken", "fee") not in mine
    # the third-party tracker saw every start and finish; the broken one was reported, not fatal
    assert sorted(counting.started) == sorted(counting.finished) == sorted(j["id"] for j in jobs)
    errors = store._query("SELECT message FROM events WHERE kind='cost_tracker_error' AND competition_id=?",
                         (comp.id,))
    assert len(errors) == 12 and all("tracker bug" in e["message"] for e in errors)

    # bravo's first attempt was lost to the platform: the host pays for it, the team is not charged
    import json

    from referee.platform.cost.ledger import spent
    lost = [r for r in rows if r["submission_id"] == b1 and json.loads(r["details_json"]).get("account")]
    assert len(lost) == 4 and {json.loads(r["details_json"])["account"] for r in lost} == {"platform"}
    per_sub = submission_totals(store, comp.id)
    assert per_sub[b1] == pytest.approx(0.5 * P3)  # the leaderboard's cost: what the team was charged
    assert submission_totals(store, comp.id, include_platform=True)[b1] == pytest.approx(2 * 0.5 * P3)
    assert spent(store, comp.id, "bravo") == pytest.approx(0.5 * P3)  # what the team budget counts
    data = report(store, comp.id)
    teams = {t["team"]: t for t in data["teams"]}
    assert teams["alpha"]["USD"] == pytest.approx(4.5 * P3) and teams["alpha"]["jobs"] == 2
    assert teams["bravo"]["gpu-hours"] == pytest.approx(0.5) and teams["bravo"]["jobs"] == 1
    assert data["platform"] == {"jobs": 1, "USD": pytest.approx(0.5 * P3), "instance-hours": pytest.approx(0.5),
                                "gpu-hours": pytest.approx(0.5), "fee": 0.25}
    total_h = sum(hours.values()) + hours[b1]
    assert spent(store, comp.id) == pytest.approx(total_h * P3)  # the competition's spend includes it
    assert data["total"]["USD"] == pytest.approx(total_h * P3)
    assert data["total"]["jobs"] == 6
    assert data["instance_types"] == [{"instance_type": "p3.2xlarge", "USD": pytest.approx(total_h * P3),
                                       "instance-hours": pytest.approx(total_h), "jobs": 6}]

    # leaderboard: a cost column per entry and the score-vs-cost Pareto front
    from referee.platform.leaderboard import build as lbm
    lb = lbm.build(store, comp, mode="best")
    assert {"cost", "pareto"} <= set(lb.columns_extra)
    by_team = {e.team: e for e in lb.entries}
    assert by_team["alpha"].submission_id == a1 and by_team["alpha"].extra["cost"] == pytest.approx(3 * P3, abs=1e-3)
    assert by_team["bravo"].extra["cost"] == pytest.approx(0.5 * P3, abs=1e-3)  # the lost attempt is not in it
    pts = [(e.metrics["log_loss"], e.extra["cost"]) for e in lb.entries]
    dominated = [any(c2 <= c and s2 <= s and (c2, s2) != (c, s) for s2, c2 in pts) for s, c in pts]
    assert [e.extra["pareto"] == "yes" for e in lb.entries] == [not d for d in dominated]
    assert by_team["alpha"].extra["pareto"] == "yes"  # the best score is always on the front
    assert by_team["charlie"].extra["pareto"] == "yes"  # and so is the cheapest entry
    assert "| cost | pareto |" in render_leaderboard(lb, "md")

    # A resumed scheduler re-finishing a job replaces its rows instead of counting the job twice.
    from referee.platform.core.jobs import JobRecord
    from referee.plugins.manager import get_plugin_manager
    job_row = jobs[0]["id"]
    store._execute("DELETE FROM costs WHERE job_id=? AND tracker='instance-time'", (job_row,))
    record = store.job_record(job_row)
    for _ in range(2):
        get_plugin_manager().hook.referee_job_finished(job=record, result=None,
                                                       competition=store.get_competition(comp.id), store=store)
    again = [r for r in cost_rows(store, comp.id) if r["job_id"] == job_row and r["tracker"] == "instance-time"]
    assert len(again) == 2  # USD and instance-hours, once each
    assert report(store, comp.id)["total"]["USD"] == pytest.approx(total_h * P3)

    # the same totals and the score-vs-cost view from the command line
    from click.testing import CliRunner

    from referee.platform.cli.main import cli
    runner = CliRunner()
    out = runner.invoke(cli, ["-w", str(store.root), "cost", "report", comp.id, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["total"]["USD"] == pytest.approx(total_h * P3)
    table = runner.invoke(cli, ["-w", str(store.root), "cost", "report", comp.id], env={"COLUMNS": "120"})
    assert table.exit_code == 0 and "per team" in table.output and "alpha" in table.output
    assert "lost to the platform" in " ".join(table.output.split())
    out = runner.invoke(cli, ["-w", str(store.root), "cost", "pareto", comp.id, "--mode", "best", "--json"])
    assert out.exit_code == 0, out.output
    front = {p["team"] for p in json.loads(out.output)["points"] if p["on_front"]}
    assert front == {e.team for e in lb.entries if e.extra["pareto"] == "yes"}


def test_pareto_front_cases():
    # (score, cost), higher score is better
    pts = [(0.9, 10.0), (0.8, 5.0), (0.85, 20.0), (0.8, 5.0), (0.7, 1.0), (None, 0.5), (0.95, None), (0.6, 1.0)]
    assert pareto_front(pts, higher_is_better=True) == [True, True, False, True, True, False, False, False]
    # lower is better (log loss): the same points mirrored
    assert pareto_front([(-s if s is not None else None, c) for s, c in pts], higher_is_better=False) == \
        [True, True, False, True, True, False, False, False]
    assert pareto_front([], higher_is_better=True) == []


# -- local backend (real subprocesses) ----------------------------------------------------------------
@pytest.mark.parametrize("equivalent", ["c5.large", None])
def test_local_backend_run_is_priced_by_its_equivalent_or_as_zero_cost_time(store, example, script_plugins,
                                                                            equivalent):
    root = example("deepfake")
    comp = make_competition(store, root, name="local-costs", backend="local",
                            resources={"instance_type": "p3.2xlarge"},  # ignored for local runs
                            cost={"local_equivalent": equivalent, "share": "reserved"})
    texts = submit_scripts(store, comp, root, [("alpha", "alpha__good.csv"), ("bravo", "bravo__mediocre.csv")])
    summary = Controller(store, comp, poll_interval=0.05).run()
    assert summary.scored == 2, store._query("SELECT message FROM events")

    rows = cost_rows(store, comp.id)
    usd = {r["submission_id"]: r for r in rows if r["unit"] == "USD"}
    inst_h = {r["submission_id"]: r["amount"] for r in rows if r["unit"] == "instance-hours"}
    assert sorted(usd) == sorted(texts)
    import json
    for sid, r in usd.items():
        job = store._query("SELECT started_at, finished_at FROM jobs WHERE submission_id=?", (sid,))[0]
        seconds = (dt.datetime.fromisoformat(job["finished_at"]) -
                   dt.datetime.fromisoformat(job["started_at"])).total_seconds()
        assert seconds >= 0.3  # the script sleeps that long
        details = json.loads(r["details_json"])
        assert details["hours"] == pytest.approx(seconds / 3600)
        if equivalent is None:
            assert r["amount"] == 0.0 and details["basis"] == "local"
            assert inst_h[sid] == pytest.approx(seconds / 3600)  # zero-cost, but the time is reported
        else:
            # c5.large: 2 vCPU, 4 GiB -> two 1-vCPU/512 MiB jobs fit, so a job pays half of $0.085/h
            assert details["instance_type"] == "c5.large" and details["share"] == 0.5
            assert r["amount"] == pytest.approx(seconds / 3600 * 0.085 / 2, rel=1e-6)
            assert r["amount"] > 0
    assert report(store, comp.id)["total"]["jobs"] == 2


def test_rates_whole_instance_or_reserved_share_spot_and_reported_types():
    from referee.platform.cost.config import CostConfig
    whole, reserved = CostConfig(), CostConfig(share="reserved")
    one_gpu = {"cpu": 4, "memory": 8 * 2**30, "gpus": 1}
    assert whole.rate("aws-batch", requested="p3.8xlarge", **one_gpu).per_hour == pytest.approx(12.24)
    assert reserved.rate("aws-batch", requested="p3.8xlarge", **one_gpu).per_hour == pytest.approx(12.24 / 4)
    # the instance the backend reports wins over the requested one; spot takes the family's discount
    spot = CostConfig(pricing="spot")
    rate = spot.rate("aws-batch", requested="p3.2xlarge", reported="g4dn.xlarge", gpus=1)
    assert (rate.instance_type, rate.basis) == ("g4dn.xlarge", "reported")
    assert rate.per_hour == pytest.approx(0.526 * (1 - 0.70))
    assert CostConfig(pricing="spot", prices={"g4dn.xlarge": {"spot": 0.2}}).rate(
        "aws-batch", reported="g4dn.xlarge").per_hour == pytest.approx(0.2)
    # an unknown reported type, or no type at all, is priced at zero with a note (never a crash mid-run)
    odd = whole.rate("aws-batch", reported="z9.mega")
    assert odd.per_hour == 0 and odd.basis == "unpriced" and "z9.mega" in odd.note
    assert whole.rate("ray").basis == "unpriced"


# -- the cost section is validated at load time, naming the field -------------------------------------
def test_invalid_cost_section_is_a_spec_error_naming_the_field(store, example):
    root = example("deepfake")
    with pytest.raises(SpecError) as err:
        make_competition(store, root, name="bad1", cost={"budget": -5, "pricing": "reserved", "budjet": 3})
    text = str(err.value)
    assert "cost.budget" in text and "cost.pricing" in text and "cost.budjet: unknown field" in text
    with pytest.raises(SpecError) as err:
        make_competition(store, root, name="bad2", cost={"instance_type": "p9.enormous"})
    assert "cost.instance_type" in str(err.value) and "p3.2xlarge" in str(err.value)
    with pytest.raises(SpecError) as err:
        make_competition(store, root, name="bad3", cost={"prices": {"x1.custom": {"on_demand": 1.0}}})
    assert "cost.prices" in str(err.value) and "vcpu" in str(err.value)
    assert [r["id"] for r in store.list_competitions()] == []  # nothing half-loaded
    ok = make_competition(store, root, name="good", cost={"prices": {"x1.custom": {
        "on_demand": 1.0, "vcpu": 4, "memory_gib": 8, "gpus": 1}}, "instance_type": "x1.custom", "pricing": "spot",
        "spot_discount": 0.5})
    from referee.platform.cost.config import cost_config
    assert cost_config(ok).catalog.get("x1.custom").hourly("spot") == pytest.approx(0.5)


# -- queue time is never charged ------------------------------------------------------------------------
def test_a_job_that_never_started_is_charged_nothing():
    """No started_at from the backend (cancelled or lost while queued): zero hours, not dispatch-to-finish."""
    from referee.platform.core.jobs import FailureReason, JobRecord, JobState
    from referee.platform.cost.config import CostConfig
    from referee.platform.cost.trackers import GpuHoursTracker, InstanceTimeTracker

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    # the jobs row as the scheduler leaves it: started_at is the dispatch time when the backend gave none
    job = JobRecord(id=1, job_id="j1", submission_id=1, competition_id="c", team="alpha", attempt=1,
                    backend="aws-batch", state="cancelled", failure_reason="cancelled", cpu=1, memory=None, gpus=1,
                    instance_type="p3.2xlarge", node=None, created_at=t0, started_at=t0,
                    finished_at=t0 + dt.timedelta(hours=2), spec={})
    trackers = [InstanceTimeTracker(CostConfig()), GpuHoursTracker()]
    queued = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled", finished_at=job.finished_at)
    assert [e.amount for t in trackers for e in t.job_finished(job, queued)] == [0.0, 0.0, 0.0]
    ran = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled",
                    started_at=t0 + dt.timedelta(minutes=90), finished_at=job.finished_at)
    usd = [e for e in trackers[0].job_finished(job, ran) if e.unit == "USD"][0]
    assert usd.amount == pytest.approx(0.5 * P3) and usd.details["hours"] == pytest.approx(0.5)
    # no status at all (a resumed scheduler re-finishing a job): the stored times stand in
    assert [e for e in trackers[0].job_finished(job, None) if e.unit == "USD"][0].amount == pytest.approx(2 * P3)


class QueuedLoss(ClockedFake):
    """The first attempt of each submission is lost while queued: no started_at, finished hours later."""

    def _finish(self, job: JobSpec) -> JobStatus:
        if job.attempt == 1:
            from referee.platform.core.jobs import FailureReason, JobState, now_utc
            return JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR, "lost while queued",
                             finished_at=now_utc() + dt.timedelta(hours=3))
        return super()._finish(job)


def test_scheduler_run_charges_no_queue_time(store, example, script_plugins):
    root = example("deepfake")
    comp = make_competition(store, root, name="queued", resources={"gpus": 1, "instance_type": "p3.2xlarge"},
                            cost={"local_backends": []})
    texts = submit_scripts(store, comp, root, [("alpha", "alpha__good.csv")])
    summary = Controller(store, comp, QueuedLoss(default_hours=1.0, output=fake_output(texts)),
                        poll_interval=0.01).run()
    assert summary.scored == 1 and summary.retried == 1
    usd = {r["job_id"]: r["amount"] for r in cost_rows(store, comp.id) if r["unit"] == "USD"}
    assert sorted(usd.values()) == [0.0, pytest.approx(P3)]  # the queued attempt: nothing, not 3 hours
    assert report(store, comp.id)["total"]["USD"] == pytest.approx(P3)


def test_score_against_cost_plot_when_nothing_cost_anything():
    """Every cost 0 (local runs without a local_equivalent): the cost axis starts at $0, never below."""
    import re

    from referee.platform.core.leaderboard import Entry, Leaderboard, LeaderboardColumn
    from referee.platform.cost.pareto import cost_plot

    lb = Leaderboard("c", "C", "main", "public", "best", "acc", "maximize", ["acc"],
                     entries=[Entry(1, "a", 1, "2026-01-01", {"acc": 0.9}), Entry(2, "b", 2, "2026-01-01", {"acc": 0.7})])
    lb.add_column(LeaderboardColumn(key="cost", kind="currency", values={1: 0.0, 2: 0.0}))
    lb.add_column(LeaderboardColumn(key="pareto", kind="flag", values={1: "yes", 2: ""}))
    svg = cost_plot(lb)
    ticks = [float(t) for t in re.findall(r'text-anchor="middle">([-0-9.e]+)</text>', svg)]
    assert ticks and min(ticks) == 0 and max(ticks) > 0
    dots = [float(x) for x in re.findall(r'<circle class="plot-dot[^"]*" cx="([0-9.]+)"', svg)]
    assert len(dots) == 2 and dots[0] == dots[1] == 70.0  # both at $0, on the axis's left edge


def test_a_job_whose_scoring_fails_is_paid_by_the_host_not_the_team(store, example):
    """A scorer that raises is the host's problem (scorer_error): the job's cost moves to the platform account."""
    from referee.platform.cost.ledger import spent
    from referee.plugins.records import ScorerInfo

    class Broken:
        @hookimpl
        def referee_scorers(self):
            def boom(predictions, references, params):
                raise KeyError("scorer bug")
            return [ScorerInfo(name="broken", version="1", higher_is_better=True, accepts=("probability",),
                               statistics=boom, aggregate=lambda s, p: s[..., 0])]

    set_plugin_manager(PluginManager(entrypoints=False, extra=[testing_plugin, ScriptKind(), Broken()]))
    root = example("deepfake")
    doc = yaml.safe_load((root / "competition.yaml").read_text())
    doc["metrics"] = [{"scorer": "broken"}]
    (root / "competition.yaml").write_text(yaml.safe_dump(doc))
    comp = make_competition(store, root, name="scorerbug", resources={"gpus": 1, "instance_type": "p3.2xlarge"},
                            cost={"local_backends": []})
    texts = submit_scripts(store, comp, root, [("alpha", "alpha__good.csv")])
    (sid,) = texts
    summary = Controller(store, comp, ClockedFake(default_hours=2.0, output=fake_output(texts)),
                         poll_interval=0.01).run()
    sub = store.get_submission(sid)
    assert summary.failed == 1 and sub.failure_reason == "scorer_error" and not sub.counts_toward_quota
    assert spent(store, comp.id) == pytest.approx(2.0 * P3)  # the competition paid for the job ...
    assert spent(store, comp.id, "alpha") == 0.0  # ... the team did not
    assert report(store, comp.id)["platform"]["USD"] == pytest.approx(2.0 * P3)
