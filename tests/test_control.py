"""The controller against a backend's control plane: outages and back-off, adaptive polling, stuck jobs,
refused requests, throttled logs, backend-internal retries in the cost, and sharded evaluation.

The scheduling logic runs against the opt-in fake backend (an in-memory test double of the control plane);
sharding runs real processes on the local backend. The real control planes (moto's Batch behind a proxy
that goes away, a Ray cluster whose scheduler is killed) are in test_control_fleet.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from referee.platform.controller.backoff import BreakerState, CircuitBreaker, PollInterval
from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.controller.shards import item_of, merge, plan
from referee.platform.core.errors import BackendUnavailable, SubmissionRejected
from referee.plugins.testing import FakeBackend
from referee.submissions.submit import submit

pytestmark = pytest.mark.control
N_ITEMS = 12


def fast_breaker() -> CircuitBreaker:
    return CircuitBreaker(base_s=0.02, cap_s=0.1)


def comp_with(tmp_path: Path, store, *, cid: str = "ctl", backend: dict | None = None, shards: int = 1,
              per_item: bool = False):
    """A small code competition: ids x0..x11; inputs either one ids.txt or one file per item."""
    d = tmp_path / cid
    inp = d / "input"
    inp.mkdir(parents=True, exist_ok=True)
    if per_item:
        for i in range(N_ITEMS):
            (inp / f"x{i}.txt").write_text(f"{(i * 7 % 10) / 10:.1f}\n")
        (inp / "labels.txt").write_text("0 1\n")  # shared by every shard
    else:
        (inp / "ids.txt").write_text("\n".join(f"x{i}" for i in range(N_ITEMS)))
    (d / "ref.csv").write_text("id,label\n" + "".join(f"x{i},{int((i * 7 % 10) / 10 > 0.45)}\n"
                                                      for i in range(N_ITEMS)))
    spec = {"id": cid, "title": "Control", "data": {"reference": "ref.csv", "input": "input"},
            "split": {"public_fraction": 0.5, "seed": 1}, "limits": {},
            "resources": {"timeout": "30s", "memory": "1g", "shards": shards},
            "backend": {"name": "local", "max_in_flight": 4, "max_infra_retries": 2, **(backend or {})},
            "metrics": [{"scorer": "log_loss"}, {"scorer": "accuracy"}]}
    (d / "c.yaml").write_text(yaml.safe_dump(spec))
    return load_into_store(store, d / "c.yaml")


def fake_output(job) -> str:
    return "id,label\n" + "".join(f"x{i},0.6\n" for i in range(N_ITEMS))


def scripts(store, comp, teams: list[str], code: str = "pass\n") -> list[int]:
    root = store.root.parent / "scripts"
    out = []
    for i, team in enumerate(teams):
        d = root / f"{team}{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "predict.py").write_text(code)
        out.append(submit(store, comp, team, d))
    return out


# -- pure parts ------------------------------------------------------------------------------------
def test_breaker_backs_off_with_jitter_and_closes_on_an_answer():
    now = [100.0]
    draws = iter([0.0, 1.0, 0.5, 0.0])
    b = CircuitBreaker(base_s=1.0, cap_s=8.0, clock=lambda: now[0], rng=lambda: next(draws))
    assert b.allow() and b.state is BreakerState.CLOSED
    assert b.failure(BackendUnavailable("x")) == 0.5  # 1 s, drawn from [0.5, 1]
    assert not b.allow() and b.wait_s == 0.5
    now[0] += 0.5
    assert b.allow() and b.state is BreakerState.HALF_OPEN  # one probe goes out
    assert b.failure(BackendUnavailable("x")) == 2.0  # 2 s, drawn from [1, 2]
    now[0] += 2.0
    assert b.failure(BackendUnavailable("x")) == 3.0  # 4 s, drawn from [2, 4]
    assert b.outage_s == 2.5
    assert b.failure(BackendUnavailable("x"), retry_after=7.5) == 7.5  # the backend's own Retry-After wins
    assert b.success() and b.state is BreakerState.CLOSED and b.failures == 0 and b.outage_s == 0
    assert not b.success()  # nothing to end


def test_poll_interval_grows_while_nothing_changes():
    p = PollInterval(1.0, 10.0)
    seen = []
    for _ in range(8):
        p.unchanged()
        seen.append(p.current)
    assert seen[0] == 1.5 and seen[-1] == 10.0 and seen == sorted(seen)
    p.changed()
    assert p.current == 1.0
    fixed = PollInterval(0.0, 0.0)
    fixed.unchanged()
    assert fixed.current == 0.0


def test_shard_plan_owners_and_merge(tmp_path):
    ids = [f"x{i}" for i in range(10)]
    groups = plan(ids, 3)
    assert [len(g) for g in groups] == [4, 3, 3] and sum(groups, []) == ids
    assert len(plan(ids[:2], 5)) == 2  # never more shards than items
    index = {"a.b": 0, "a": 1, "c": 2}
    assert item_of("a.b.mp4", index) == "a.b" and item_of("a.wav", index) == "a" and item_of("c", index) == "c"
    assert item_of("labels.txt", index) is None  # shared by every shard
    parts = [tmp_path / "p0.csv", tmp_path / "p1.csv"]
    parts[0].write_bytes(b"\xef\xbb\xbfid,label\r\nx0,0.1\r\n")
    parts[1].write_text("id,label\nx1,0.2")  # no final newline
    merged = merge(parts, tmp_path / "m.csv", "csv")
    assert merged.read_bytes() == b"id,label\nx0,0.1\r\nx1,0.2\n"
    parts[1].write_text("id,score\nx1,0.2\n")
    with pytest.raises(SubmissionRejected, match="shard 2 of 2"):
        merge(parts, tmp_path / "m.csv", "csv")


# -- outages -----------------------------------------------------------------------------------------
def test_an_outage_spends_no_retry_and_every_submission_is_scored(tmp_path, store):
    """The endpoint stops answering after the first dispatch and comes back: nothing is charged, nothing
    "gave up", the attempts that never reached the backend are forgotten."""
    comp = comp_with(tmp_path, store)
    sids = scripts(store, comp, ["a", "b", "c", "d"])
    fb = FakeBackend(output=fake_output, polls_to_finish=3)
    ctl = Controller(store, comp, fb, poll_interval=0.01, breaker=fast_breaker())
    flips = {"n": 0}

    def on_progress(event: str, sid: int) -> None:
        if event == "started" and flips["n"] == 0:
            flips["n"] += 1
            fb.down = True  # the endpoint goes away right after the first job went out

    ctl.on_progress = on_progress
    original = fb._call

    def come_back(what: str) -> None:
        if fb.down and sum(fb.calls.values()) > 25:
            fb.down = False
        original(what)

    fb._call = come_back  # type: ignore[method-assign]
    summary = ctl.run()
    assert summary.scored == 4 and summary.failed == 0 and summary.outages >= 1, summary
    for sid in sids:
        sub = store.get_submission(sid)
        assert sub.status == "scored" and sub.attempts == 1 and sub.failure_message is None
        assert [j.state.value for j in store.jobs_of(sid)] == ["succeeded"]
    kinds = [e["kind"] for e in store.events(competition_id=comp.id)]
    assert "backend_unavailable" in kinds and "backend_recovered" in kinds and "retry" not in kinds


def test_run_stops_with_exit_status_4_and_a_later_run_resumes(tmp_path, store):
    comp = comp_with(tmp_path, store)
    sids = scripts(store, comp, ["a", "b"])
    fb = FakeBackend(output=fake_output, polls_to_finish=10**6)
    first = Controller(store, comp, fb, poll_interval=0.01, breaker=fast_breaker(), outage_limit=0.3)
    dispatched = []

    def down_after_dispatch(event: str, sid: int) -> None:
        dispatched.append(sid)
        if len(dispatched) == 2:
            fb.down = True

    first.on_progress = down_after_dispatch
    with pytest.raises(BackendUnavailable) as exc:
        first.run()
    assert exc.value.exit_code == 4 and "has not answered for" in str(exc.value)
    assert f"referee run {comp.id}" in str(exc.value) and "bring the fake endpoint back" in str(exc.value)
    held = [store.get_submission(s) for s in sids]
    assert all(s.status == "running" and s.claimed_by is None for s in held)  # left for the next run at once
    fb.down = False
    fb.polls_to_finish = 1
    fb._polls = {h: 10**6 for h in fb._polls}  # the jobs finished while nobody watched
    summary = Controller(store, comp, fb, poll_interval=0.01).run()
    assert summary.scored == 2 and len(fb.submitted) == 2  # re-attached by handle, never dispatched again
    assert all(store.get_submission(s).attempts == 1 for s in sids)


def test_a_request_no_machine_can_run_pauses_before_dispatch(tmp_path, store):
    comp = comp_with(tmp_path, store)
    (sid,) = scripts(store, comp, ["a"])
    fb = FakeBackend(output=fake_output)
    fb.refuse = "no node offers 8 GPU"
    summary = Controller(store, comp, fb, poll_interval=0).run()
    assert summary.paused_reason == "cannot dispatch: no node offers 8 GPU"
    assert fb.submitted == [] and store.get_submission(sid).status == "pending" and not store.jobs_of(sid)


# -- stuck jobs ----------------------------------------------------------------------------------------
def test_a_stuck_job_shows_the_backends_reason_and_cancel_is_a_platform_failure(tmp_path, store):
    from referee.platform.reports.views import submission_detail, submission_table
    comp = comp_with(tmp_path, store, backend={"stuck_after": 0.2, "on_stuck": "cancel"})
    stuck, fine = scripts(store, comp, ["a", "b"])
    fb = FakeBackend(output=fake_output)
    reason = "RUNNABLE: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity requested"
    fb.queued[stuck] = reason
    seen: dict = {}

    def look(event: str, sid: int) -> None:  # what status shows while it waits (before the cancel lands)
        if event == "finished" and sid == fine:
            seen["table"] = submission_table(store, comp.id)

    summary = Controller(store, comp, fb, poll_interval=0.02, on_progress=look).run()
    s = store.get_submission(stuck)
    assert (s.status, s.failure_reason, s.counts_toward_quota) == ("failed", "platform_error", 0)
    assert "waited" in s.failure_message and "for a machine" in s.failure_message and reason in s.failure_message
    assert summary.scored == 1 and fb.cancelled
    (job,) = store.jobs_of(stuck)
    assert job.waiting_reason == reason and job.stuck_at
    assert submission_detail(store, stuck)["jobs"][0]["waiting_reason"] == reason
    kinds = [e["kind"] for e in store.events(competition_id=comp.id)]
    assert "stuck" in kinds


def test_a_stuck_job_that_keeps_waiting_is_listed_with_its_reason(tmp_path, store):
    """``on_stuck: wait``: the job stays queued and `referee status` (the table, --json, the detail) says
    why; it runs once the backend places it."""
    import threading
    import time

    from referee.platform.reports.views import submission_detail, submission_table
    comp = comp_with(tmp_path, store, backend={"stuck_after": 0.1})
    (sid,) = scripts(store, comp, ["a"])
    fb = FakeBackend(output=fake_output, polls_to_finish=5)  # once placed, it runs for a few polls
    fb.queued[sid] = "pending in Ray (PENDING_CREATION): it asks for 1 CPU, 8 GPU"
    ctl = Controller(store, comp, fb, poll_interval=0.02)
    t = threading.Thread(target=ctl.run)
    t.start()
    deadline = time.monotonic() + 20
    while not store.stuck_jobs(comp.id):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    row = submission_table(store, comp.id)[0]
    assert row["waiting"]["reason"] == fb.queued[sid]
    d = submission_detail(store, sid)
    assert d["waiting"]["reason"] == fb.queued[sid] and d["status"] == "running"
    del fb.queued[sid]  # capacity arrives
    t.join(20)
    assert not t.is_alive() and store.get_submission(sid).status == "scored"
    assert store.jobs_of(sid)[0].stuck_at is None  # it got its machine: no longer stuck
    assert submission_table(store, comp.id)[0]["waiting"] is None


# -- logs and costs ------------------------------------------------------------------------------------
def test_a_throttled_log_read_keeps_the_tail_for_later(tmp_path, store, monkeypatch):
    from referee.platform.controller import reconcile
    monkeypatch.setattr(reconcile, "LATE_LOG_FIRST_S", 0.05)
    comp = comp_with(tmp_path, store)
    (sid,) = scripts(store, comp, ["a"])
    fb = FakeBackend(output=fake_output)
    fb.throttle_logs = 1
    Controller(store, comp, fb, poll_interval=0).run()
    sub = store.get_submission(sid)
    assert sub.status == "scored" and sub.log_tail == f"fake log for {fb.submitted[0].job_id}\n"
    assert fb.calls["logs"] == 2


def test_tries_the_backend_made_itself_are_priced_to_the_platform(tmp_path, store):
    comp = comp_with(tmp_path, store, backend={"name": "fake"})
    doc = yaml.safe_load((tmp_path / "ctl" / "c.yaml").read_text())
    doc["cost"] = {"local_equivalent": "g4dn.xlarge", "prices": {"g4dn.xlarge": {"on_demand": 0.5}}}
    (tmp_path / "ctl" / "c.yaml").write_text(yaml.safe_dump(doc))
    comp = load_into_store(store, tmp_path / "ctl" / "c.yaml")
    (sid,) = scripts(store, comp, ["a"])
    Controller(store, comp, FakeBackend(script={sid: ["retried_ok"]}, output=fake_output), poll_interval=0).run()
    rows = store._query("SELECT tracker, amount, unit, details_json FROM costs WHERE submission_id=? AND unit='USD'",
                        (sid,))
    by_tracker = {r["tracker"]: (r["amount"], json.loads(r["details_json"]).get("account")) for r in rows}
    assert by_tracker["instance-time"] == (pytest.approx(0.25), None)  # the last try: 30 min, the team's
    assert by_tracker["instance-time@try1"] == (pytest.approx(0.25), "platform")  # the reclaimed try
    assert store.cost_spent(comp.id, "USD") == pytest.approx(0.5)
    assert store.cost_spent(comp.id, "USD", team="a") == pytest.approx(0.25)


# -- sharded evaluation (real processes on the local backend) ---------------------------------------------
SHARD_AWARE = """
import json, os, pathlib
inp = pathlib.Path(os.environ["REFEREE_INPUT"])
shard = json.loads((inp / "referee-shard.json").read_text())
files = sorted(p.name for p in inp.glob("x*.txt"))
assert files == sorted(f"{i}.txt" for i in shard["ids"]), (files, shard)  # only this shard's items
assert (inp / "labels.txt").exists()  # shared files reach every shard
assert os.environ["REFEREE_SHARD"] == str(shard["shard"]) and os.environ["REFEREE_SHARDS"] == str(shard["shards"])
rows = "".join(f"{f[:-4]},{float((inp / f).read_text()):.2f}\\n" for f in files)
pathlib.Path(os.environ["REFEREE_OUTPUT"], os.environ["REFEREE_OUTPUT_FILE"]).write_text("id,label\\n" + rows)
"""
UNSHARDED = SHARD_AWARE.replace('shard = json.loads((inp / "referee-shard.json").read_text())',
                                'shard = {"ids": [f"x{i}" for i in range(12)], "shard": 0, "shards": 1}') \
    .replace('assert os.environ["REFEREE_SHARD"]', '# assert os.environ["REFEREE_SHARD"]')


def test_a_sharded_submission_runs_its_shards_and_scores_like_an_unsharded_one(tmp_path, store):
    whole = comp_with(tmp_path, store, cid="whole", per_item=True)
    (w,) = scripts(store, whole, ["a"], UNSHARDED)
    assert Controller(store, whole, poll_interval=0.02).run().scored == 1
    sharded = comp_with(tmp_path, store, cid="sharded", per_item=True, shards=3)
    (s,) = scripts(store, sharded, ["a"], SHARD_AWARE)
    summary = Controller(store, sharded, poll_interval=0.02).run()
    assert summary.scored == 1, store.get_submission(s).failure_message
    jobs = store.jobs_of(s)
    assert sorted(j.shard for j in jobs) == [0, 1, 2] and all(j.state.value == "succeeded" for j in jobs)
    score = {(r.metric, r.split): r.value for r in store.scores(s)}
    assert score == {(r.metric, r.split): r.value for r in store.scores(w)}
    from referee.platform.reports.views import submission_detail
    d = submission_detail(store, s)
    assert [sh["shard"] for sh in d["shards"]] == [0, 1, 2] and all(sh["tries"] == 1 for sh in d["shards"])
    assert "== shard 3/3 ==" in (store.get_submission(s).log_tail or "")


def test_a_lost_shard_is_rerun_alone_and_a_failed_shard_fails_the_submission(tmp_path, store):
    comp = comp_with(tmp_path, store, cid="shardfake", per_item=True, shards=3, backend={"name": "fake"})
    ok, bad = scripts(store, comp, ["a", "b"])

    def per_shard(job) -> str:
        ids = json.loads((Path(job.input_dir) / "referee-shard.json").read_text())["ids"]
        return "id,label\n" + "".join(f"{i},0.5\n" for i in ids)

    fb = FakeBackend(output=per_shard, script={ok: ["ok", "platform_error", "ok", "ok"],
                                               bad: ["ok", "exited_nonzero", "ok"]}, polls_to_finish=2)
    summary = Controller(store, comp, fb, poll_interval=0).run()
    assert summary.scored == 1 and summary.failed == 1
    tries = sorted((j.shard, j.state.value) for j in store.jobs_of(ok))
    assert tries == [(0, "succeeded"), (1, "failed"), (1, "succeeded"), (2, "succeeded")]  # only shard 2 again
    b = store.get_submission(bad)
    assert (b.status, b.failure_reason, b.counts_toward_quota) == ("failed", "exited_nonzero", 1)
    assert b.failure_message.startswith("shard 2 of 3:")
    assert [(j.shard, j.state.value) for j in store.jobs_of(bad)] == [(0, "succeeded"), (1, "failed"),
                                                                       (2, "cancelled")]  # the rest stopped
