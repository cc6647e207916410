"""Controller: scoring, retries, failure taxonomy, bounded dispatch, resumability (with a real kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.policy import Candidate, SchedulingPolicy
from referee.platform.controller.reconcile import Controller
from referee.platform.controller.actions import cancel_submission
from referee.platform.core.jobs import FailureReason
from referee.plugins.testing import FakeBackend
from referee.submissions.submit import submit

N_ITEMS = 20

GOOD = """
import os, pathlib
ids = pathlib.Path(os.environ["REFEREE_INPUT"], "ids.txt").read_text().split()
out = pathlib.Path(os.environ["REFEREE_OUTPUT"], os.environ["REFEREE_OUTPUT_FILE"])
out.write_text("id,label\\n" + "".join(f"{i},{0.8 if int(i[1:]) % 2 else 0.2}\\n" for i in ids))
"""


def job_comp(tmp_path: Path, store, *, limits: dict | None = None, max_infra_retries: int = 2,
             timeout: str = "20s", cid: str = "jobs"):
    d = tmp_path / cid
    (d / "input").mkdir(parents=True, exist_ok=True)
    (d / "input" / "ids.txt").write_text("\n".join(f"x{i}" for i in range(N_ITEMS)))
    (d / "ref.csv").write_text("id,label\n" + "".join(f"x{i},{i % 2}\n" for i in range(N_ITEMS)))
    spec = {"id": cid, "title": "Jobs", "data": {"reference": "ref.csv", "input": "input"},
            "split": {"public_fraction": 0.5, "seed": 1}, "limits": limits or {},
            "resources": {"timeout": timeout, "memory": "1g"},
            "backend": {"name": "local", "max_infra_retries": max_infra_retries, "max_in_flight": 2},
            "metrics": [{"scorer": "log_loss"}, {"scorer": "accuracy"}]}
    (d / "c.yaml").write_text(yaml.safe_dump(spec))
    return load_into_store(store, d / "c.yaml")


def script_dir(root: Path, name: str, code: str) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "predict.py").write_text(code)
    return d


def submit_jobs(store, comp, teams: list[str], code: str = GOOD) -> list[int]:
    root = store.root.parent / "scripts"
    return [submit(store, comp, t, script_dir(root, f"{t}{i}", code)) for i, t in enumerate(teams)]


# -- policy (pure) --------------------------------------------------------------------------------
def test_policy_interleaves_teams_and_bounds_slots():
    p = SchedulingPolicy(max_in_flight=3)
    pend = [Candidate(i, "big", f"2026-01-01T00:00:{i:02d}") for i in range(5)] + \
           [Candidate(10, "small", "2026-01-01T00:00:30")]
    picked = p.pick(pend, in_flight=0)
    assert [c.team for c in picked] == ["big", "small", "big"]
    assert p.pick(pend, in_flight=3) == []
    d = p.on_failure(FailureReason.PLATFORM_ERROR, attempt=1)
    assert d.retry and not d.charge
    d = p.on_failure(FailureReason.PLATFORM_ERROR, attempt=4)
    assert not d.retry and not d.charge
    d = p.on_failure(FailureReason.OUT_OF_MEMORY, attempt=1)
    assert not d.retry and d.charge


# -- fake backend: scheduling logic ---------------------------------------------------------------
def fake_output(job) -> str:
    return "id,label\n" + "".join(f"x{i},0.6\n" for i in range(N_ITEMS))


def test_infra_failures_retried_then_scored(tmp_path, store):
    comp = job_comp(tmp_path, store, max_infra_retries=2)
    a, b = submit_jobs(store, comp, ["a", "b"])
    fb = FakeBackend(script={a: ["platform_error", "platform_error", "ok"], b: ["exited_nonzero"]},
                     output=fake_output)
    summary = Controller(store, comp, fb, poll_interval=0).run()
    assert summary.retried == 2 and summary.scored == 1 and summary.failed == 1
    sa, sb = store.get_submission(a), store.get_submission(b)
    assert sa.status == "scored" and sa.attempts == 3 and sa.counts_toward_quota
    assert sb.status == "failed" and sb.failure_reason == "exited_nonzero" and sb.attempts == 1
    attempts = [r["state"] for r in store._query("SELECT state FROM jobs WHERE submission_id=? ORDER BY attempt", (a,))]
    assert attempts == ["failed", "failed", "succeeded"]


def test_bounded_in_flight(tmp_path, store):
    comp = job_comp(tmp_path, store)
    submit_jobs(store, comp, [f"t{i}" for i in range(7)])
    fb = FakeBackend(output=fake_output, polls_to_finish=3)
    Controller(store, comp, fb, max_in_flight=3, poll_interval=0).run()
    assert fb.max_seen_in_flight == 3
    assert len(store.submissions(comp.id, status="scored")) == 7


def test_cancel_pending_is_not_charged(tmp_path, store):
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"])
    assert cancel_submission(store, sid) == "cancelled"
    sub = store.get_submission(sid)
    assert sub.status == "cancelled" and not sub.counts_toward_quota
    assert Controller(store, comp, FakeBackend(), poll_interval=0).run().scored == 0


# -- local backend: real processes ----------------------------------------------------------------
def test_local_backend_failure_taxonomy(tmp_path, store):
    comp = job_comp(tmp_path, store, timeout="3s")
    cases = {
        "good": GOOD,
        "crash": "raise RuntimeError('model file missing')\n",
        "sleepy": "import time\ntime.sleep(60)\n",
        "silent": "print('forgot to write')\n",
        "invalid": "import os,pathlib\npathlib.Path(os.environ['REFEREE_OUTPUT'],"
                   "os.environ['REFEREE_OUTPUT_FILE']).write_text('id,label\\nx0,2.0\\n')\n",
        "symlink": "import os\nos.symlink('/etc/passwd', os.path.join(os.environ['REFEREE_OUTPUT'],"
                   "os.environ['REFEREE_OUTPUT_FILE']))\n",
    }
    ids = {name: submit_jobs(store, comp, [name], code)[0] for name, code in cases.items()}
    summary = Controller(store, comp, poll_interval=0.05, max_in_flight=6).run()
    got = {n: store.get_submission(i) for n, i in ids.items()}
    assert got["good"].status == "scored"
    assert got["crash"].failure_reason == "exited_nonzero" and "model file missing" in got["crash"].log_tail
    assert got["sleepy"].failure_reason == "timed_out"
    assert got["silent"].failure_reason == "no_output" and "forgot to write" in got["silent"].log_tail
    assert got["invalid"].failure_reason == "invalid_output" and "missing" in got["invalid"].failure_message
    assert got["symlink"].failure_reason == "no_output" and "symlink" in got["symlink"].failure_message
    assert summary.scored == 1 and summary.failed == 5
    # the good one is scored exactly as the same predictions submitted as a file
    (good_out,) = list((store.root / "work" / comp.id).glob(f"s{ids['good']}/a1/output/predictions.csv"))
    fid = submit(store, comp, "file", good_out)
    Controller(store, comp).run()
    a = {(r.metric, r.split): r.value for r in store.scores(ids["good"])}
    b = {(r.metric, r.split): r.value for r in store.scores(fid)}
    assert a == b and len(a) == 4


# -- resumability with a real kill ----------------------------------------------------------------
def _count(store, sql, *args):
    return store._query(sql, args)[0][0]


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, example, store):
    d = example("deepfake")
    comp = load_into_store(store, d / "competition.yaml")
    comp.limits.total = comp.limits.per_team_per_day = comp.limits.concurrent = None
    good = d / "submissions" / "alpha__good.csv"
    n = 40
    for i in range(n):
        submit(store, comp, f"team{i}", good)
    env = {**os.environ, "REFEREE_WORKSPACE": str(store.root)}
    proc = subprocess.Popen([sys.executable, "-m", "referee.platform.cli", "run", "deepfake", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _count(store, "SELECT COUNT(*) FROM submissions WHERE status='scored'") < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count(store, "SELECT COUNT(*) FROM submissions WHERE status='scored'")
    assert 3 <= done < n, "the kill must land mid-run"
    # every scored submission has all of its scores; none has partial ones
    per_sub = store._query("SELECT submission_id, COUNT(*) c FROM scores GROUP BY submission_id")
    assert all(r["c"] == 4 for r in per_sub) and len(per_sub) == done
    rc = subprocess.run([sys.executable, "-m", "referee.platform.cli", "run", "deepfake", "--json"],
                        env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert _count(store, "SELECT COUNT(*) FROM submissions WHERE status='scored'") == n
    assert _count(store, "SELECT COUNT(*) FROM scores") == n * 4
    values = {r[0] for r in store._query("SELECT value FROM scores WHERE metric='log_loss' AND split='private'")}
    assert len(values) == 1  # same file, same score, every time


def test_killed_run_with_running_job_is_retried_not_charged(tmp_path, store):
    comp = job_comp(tmp_path, store)
    slow = "import time\ntime.sleep(1.5)\n" + GOOD
    (sid,) = submit_jobs(store, comp, ["a"], slow)
    env = {**os.environ, "REFEREE_WORKSPACE": str(store.root)}
    proc = subprocess.Popen([sys.executable, "-m", "referee.platform.cli", "run", comp.id, "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not store._query("SELECT 1 FROM jobs WHERE submission_id=? AND state='running'", (sid,)):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.get_submission(sid).status == "running"
    summary = Controller(store, comp, poll_interval=0.05).run()
    sub = store.get_submission(sid)
    assert sub.status == "scored" and summary.retried == 1 and sub.counts_toward_quota
    reasons = [r["failure_reason"] for r in store._query("SELECT failure_reason FROM jobs WHERE submission_id=? "
                                                        "ORDER BY attempt", (sid,))]
    assert reasons == ["platform_error", None]


def test_rerun_gets_fresh_retries_and_replaces_scores(tmp_path, store):
    from referee.platform.controller.actions import rerun_submission
    comp = job_comp(tmp_path, store, max_infra_retries=1)
    (sid,) = submit_jobs(store, comp, ["a"])
    fb = FakeBackend(script={sid: ["platform_error", "platform_error", "platform_error", "ok"]},
                     output=fake_output)
    Controller(store, comp, fb, poll_interval=0).run()
    assert store.get_submission(sid).failure_reason == "platform_error"
    rerun_submission(store, sid)
    assert store.get_submission(sid).status == "pending"
    Controller(store, comp, fb, poll_interval=0).run()
    sub = store.get_submission(sid)
    assert sub.status == "scored" and sub.attempts == 4 and len(store.scores(sid)) == 4
    with pytest.raises(Exception, match="only a scored, failed or cancelled"):
        store._execute("UPDATE submissions SET status='running' WHERE id=?", (sid,))
        rerun_submission(store, sid)


def test_cancel_while_running_stays_cancelled(tmp_path, store):
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"], "import time\ntime.sleep(30)\n")
    sched = Controller(store, comp, poll_interval=0.05)
    import threading
    t = threading.Thread(target=sched.run)
    t.start()
    deadline = time.time() + 20
    while not store._query("SELECT 1 FROM jobs WHERE submission_id=? AND state='running'", (sid,)):
        assert time.time() < deadline
        time.sleep(0.02)
    assert cancel_submission(store, sid, backend=sched.backend) == "cancelled"
    t.join(timeout=20)
    assert not t.is_alive()
    sub = store.get_submission(sid)
    assert sub.status == "cancelled" and not sub.counts_toward_quota


DEAD = f"{__import__('socket').gethostname()}:4190000:dead"  # a scheduler process that no longer exists


def test_reclaim_applies_a_finished_jobs_outcome_without_dispatching_again(tmp_path, store):
    from referee.platform.core.jobs import JobSpec
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"])
    # a controller claimed it, dispatched attempt 1, the job finished and wrote its output ... then it died
    store.claim(sid, DEAD)
    out = store.work_dir(comp.id, f"s{sid}", "a1", "output")
    job = JobSpec(job_id="gone", submission_id=sid, attempt=1, competition_id=comp.id, output_dir=str(out),
                  output_file="predictions.csv")
    job_row = store.add_job(sid, 1, "fake", job.to_dict(), gpus=0, cpu=1, memory=1, instance_type=None)
    store.job_dispatched(job_row, "gone")
    FakeBackend(output=fake_output).output_for(job)
    store._execute("UPDATE jobs SET state='succeeded', finished_at=started_at WHERE id=?", (job_row,))
    fresh = FakeBackend(output=fake_output)
    summary = Controller(store, comp, fresh, poll_interval=0).run()
    assert summary.scored == 1 and fresh.submitted == []  # scored from the finished job, not run again
    assert store.get_submission(sid).status == "scored" and store.get_submission(sid).attempts == 1


def test_only_one_scheduler_reclaims_a_submission(tmp_path, store):
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"])
    store._execute("UPDATE submissions SET status='running', claimed_by=? WHERE id=?", (DEAD, sid))
    first, second = Controller(store, comp, FakeBackend()), Controller(store, comp, FakeBackend())
    assert first.adopt() == 1 and second.adopt() == 0
    assert store.get_submission(sid).status == "pending"  # it had no job yet: back in the queue, once


def test_outside_cancel_is_not_undone_by_a_late_platform_error(tmp_path, store):
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"])
    fb = FakeBackend(script={sid: ["platform_error"]}, polls_to_finish=50)

    def host_cancels_elsewhere(event: str, _sid: int) -> None:
        if event == "started":
            store._execute("UPDATE submissions SET status='cancelled', claimed_by=NULL WHERE id=?", (sid,))

    sched = Controller(store, comp, fb, poll_interval=0, on_progress=host_cancels_elsewhere)
    sched.run()
    sub = store.get_submission(sid)
    assert sub.status == "cancelled" and len(fb.submitted) == 1 and sched.summary.retried == 0


def test_host_cancel_is_guarded_and_stops_the_job(tmp_path, store):
    """A cancel never overwrites a final status, and the controller holding the job stops it."""
    comp = job_comp(tmp_path, store)
    done, running = submit_jobs(store, comp, ["a", "b"])
    Controller(store, comp, FakeBackend(output=fake_output), poll_interval=0).run(limit=1)
    assert store.get_submission(done).status == "scored"
    assert cancel_submission(store, done) == "scored"  # already final: unchanged
    assert store.get_submission(done).status == "scored" and len(store.scores(done)) == 4
    fb = FakeBackend(output=fake_output, polls_to_finish=10**6)
    sched = Controller(store, comp, fb, poll_interval=0.01)
    t = threading.Thread(target=sched.run)
    t.start()
    deadline = time.time() + 20
    while not fb.submitted:
        assert time.time() < deadline
        time.sleep(0.01)
    assert cancel_submission(store, running) == "cancelled"  # no backend given: the live controller stops it
    t.join(timeout=20)
    assert not t.is_alive() and fb.cancelled == [fb.submitted[0].job_id]
    assert store.get_submission(running).status == "cancelled"


def test_a_broken_submission_fails_alone(tmp_path, store):
    comp = job_comp(tmp_path, store)
    (bad,) = submit_jobs(store, comp, ["a"], GOOD + "# a different program\n")
    (good,) = submit_jobs(store, comp, ["b"])
    store.blob_path(store.get_submission(bad).sha256).unlink()  # its stored code is gone
    summary = Controller(store, comp, FakeBackend(output=fake_output), poll_interval=0).run()
    b, g = store.get_submission(bad), store.get_submission(good)
    assert b.status == "failed" and b.failure_reason == "platform_error" and not b.counts_toward_quota
    assert "could not start" in b.failure_message and g.status == "scored" and summary.scored == 1


def test_limit_claims_exactly_that_many(tmp_path, store):
    comp = job_comp(tmp_path, store)
    submit_jobs(store, comp, ["a", "b", "c", "d"])
    Controller(store, comp, FakeBackend(output=fake_output), poll_interval=0).run(limit=1)
    assert [s.status for s in store.submissions(comp.id)] == ["scored", "pending", "pending", "pending"]


def test_a_claim_not_renewed_within_the_lease_is_taken_over(tmp_path, store):
    import datetime as dt

    from referee.platform.controller import reconcile as sch
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"])
    other_host = "elsewhere:1:x"
    stale = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=sch.LEASE_S + 5)).isoformat()
    fresh = dt.datetime.now(dt.timezone.utc).isoformat()
    store._execute("UPDATE submissions SET status='running', claimed_by=?, updated_at=? WHERE id=?",
                  (other_host, fresh, sid))
    assert Controller(store, comp, FakeBackend()).adopt() == 0  # another machine, renewed: alive
    store._execute("UPDATE submissions SET updated_at=? WHERE id=?", (stale, sid))
    assert Controller(store, comp, FakeBackend()).adopt() == 1  # not renewed for the lease: dead


def test_scoring_runs_blas_on_one_thread_and_restores_it():
    """The controller scores beside the containers: numpy's BLAS gets one thread while any scorer runs,
    and its own setting back when the last one is done."""
    import numpy as np  # noqa: F401 - loads the BLAS
    from threadpoolctl import threadpool_info

    from referee.platform.controller.scoring import one_blas_thread

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    with one_blas_thread():
        with one_blas_thread():  # a second scorer at the same time
            assert blas_threads() == {1}
        assert blas_threads() == {1}  # the first one is still scoring
    assert blas_threads() == before
