"""The Docker backend with the scheduler on the real engine: example code submissions, slots,
re-attaching after a scheduler dies, platform errors, cancellation."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, ROOT, prepare_example, wait_final

from referee.platform.backends.docker import DockerBackend
from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources
from referee.platform.reports.views import submission_detail
from referee.platform.runtime.sandbox import SCRATCH_DIR
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = pytest.mark.docker
CODE = EXAMPLES / "deepfake" / "code"


def docker_competition(root: Path, *, slots: int = 3, retries: int = 3, timeout: str = "60s") -> tuple[Store, object]:
    ex = prepare_example("deepfake", root)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc.update(limits={}, backend={"name": "docker", "options": {"slots": slots}, "max_in_flight": slots,
                                   "max_infra_retries": retries},
               resources={"cpu": 1, "memory": "512m", "timeout": timeout})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(root / "ws")
    return store, load_into_store(store, ex / "competition.yaml")


def scores(store: Store, sid: int) -> dict[tuple[str, str], float]:
    return {(r.metric, r.split): r.value for r in store.scores(sid)}


def test_example_code_submissions(tmp_path, docker_client, base_image):
    store, comp = docker_competition(tmp_path)
    ids = {name: submit(store, comp, name, CODE / name) for name in ("good", "poor", "crash")}
    assert {store.get_submission(i).kind for i in ids.values()} == {"dockerfile"}
    t = time.monotonic()
    summary = Controller(store, comp, poll_interval=120).run()
    # the backend wakes the controller as each container ends: it never sleeps out its poll interval
    assert time.monotonic() - t < 60
    assert (summary.scored, summary.failed, summary.retried) == (2, 1, 0)
    good, poor = scores(store, ids["good"]), scores(store, ids["poor"])
    for split in ("public", "private"):
        assert good[("log_loss", split)] < poor[("log_loss", split)] < math.log(2)  # ln 2: the constant 0.5
        assert good[("accuracy", split)] > poor[("accuracy", split)]
    crash = submission_detail(store, ids["crash"])
    assert crash["failure_reason"] == "exited_nonzero" and crash["counts_toward_quota"]
    assert "ValueError" in crash["log_tail"] and "predict.py" in crash["log_tail"]
    assert crash["failure_explanation"] and crash["jobs"][0]["exit_code"] == 1
    assert "wrote 2000 predictions" in submission_detail(store, ids["good"])["log_tail"]


def sleep_job(tmp: Path, name: str, image: str, seconds: float, timeout: float = 60) -> JobSpec:
    out = tmp / name / "output"
    out.mkdir(parents=True)
    code = f"import time; time.sleep({seconds}); open('/data/output/predictions.csv', 'w').write('id,label\\n')"
    return JobSpec(job_id=f"b-{name}", submission_id=1, attempt=1, competition_id="b", output_dir=str(out),
                   output_file="predictions.csv", image=image, command=["python3", "-c", code],
                   resources=Resources(cpu=0.5, memory=128 * 2**20), timeout_s=timeout)




def test_slots_bound_concurrency_and_poll_does_not_block(tmp_path, docker_client, base_image):
    backend = DockerBackend(slots=2)
    woken: list[float] = []
    backend.notify(lambda: woken.append(time.monotonic()))
    jobs = [sleep_job(tmp_path, f"s{i}", base_image, 1.5) for i in range(4)]
    handles = [backend.submit(job) for job in jobs]
    t = time.monotonic()
    first = backend.poll(handles)
    assert time.monotonic() - t < 0.5 and not any(s.state.final for s in first.values())
    done = wait_final(backend, handles)
    assert all(s.state == JobState.SUCCEEDED for s in done.values()), done
    spans = [(s.started_at, s.finished_at) for s in done.values()]
    most = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert most == 2  # both slots used, never a third container
    assert len(woken) == 4  # one wake-up per finished job
    for h, job in zip(handles, jobs):  # a job is reported final only once it has left nothing behind
        assert not docker_client.containers.list(all=True, filters={"name": h}), h
        assert not (Path(job.output_dir).parent / SCRATCH_DIR).exists(), h
    assert str(tmp_path) not in Path("/proc/self/mounts").read_text()
    backend.close()


def test_cancel_stops_a_running_container(tmp_path, docker_client, base_image):
    backend = DockerBackend(slots=1)
    job = sleep_job(tmp_path, "cancel", base_image, 600)
    h = backend.submit(job)
    end = time.monotonic() + 60
    while backend.poll([h])[h].state != JobState.RUNNING and time.monotonic() < end:
        time.sleep(0.05)
    t = time.monotonic()
    backend.cancel(h)
    st = wait_final(backend, [h], limit=20)[h]
    assert st.state == JobState.CANCELLED and st.reason == FailureReason.CANCELLED
    assert time.monotonic() - t < 10
    assert not docker_client.containers.list(all=True, filters={"name": h})
    backend.close()


CHILD = """
import sys
from referee.platform.controller.reconcile import Controller
from referee.platform.store import Store
store = Store(sys.argv[1])
Controller(store, store.get_competition("deepfake"), poll_interval=0.05).run()
"""


def test_restarted_scheduler_reattaches_to_running_container(tmp_path, docker_client, base_image):
    store, comp = docker_competition(tmp_path, slots=1)
    slow = tmp_path / "slow"
    shutil.copytree(CODE / "good", slow)
    (slow / "run.py").write_text("import runpy, time\ntime.sleep(4)\nrunpy.run_path('/app/predict.py', "
                                 "run_name='__main__')\n")
    dockerfile = (slow / "Dockerfile").read_text()
    dockerfile = dockerfile.replace("COPY predict.py /app/predict.py", "COPY predict.py run.py /app/")
    (slow / "Dockerfile").write_text(dockerfile.replace('/app/predict.py"]', '/app/run.py"]'))
    sid = submit(store, comp, "slow", slow)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store.root)], env=env)
    try:
        handle = None
        end = time.monotonic() + 60
        while time.monotonic() < end and handle is None:
            rows = store._query("SELECT handle FROM jobs WHERE submission_id=? AND state='running'", (sid,))
            if rows and rows[0]["handle"] and docker_client.containers.list(filters={"name": rows[0]["handle"]}):
                handle = rows[0]["handle"]
            time.sleep(0.1)
        assert handle, "the first scheduler never started the container"
    finally:
        child.send_signal(signal.SIGKILL)  # the scheduler dies; its container keeps running
        child.wait()
    assert docker_client.containers.get(handle).status == "running"
    summary = Controller(store, comp, poll_interval=0.05).run()
    assert summary.scored == 1 and summary.retried == 0
    sub = store.get_submission(sid)
    assert sub.status == "scored" and sub.attempts == 1  # finished by re-attaching, not by running it again
    assert scores(store, sid)[("log_loss", "public")] < math.log(2)
    assert not docker_client.containers.list(all=True, filters={"name": handle})
    assert store._query("SELECT COUNT(*) AS n FROM events WHERE kind='reclaimed' AND submission_id=?", (sid,))[0]["n"]


def test_unreachable_engine_is_a_platform_error_not_charged(tmp_path, docker_client, base_image):
    store, comp = docker_competition(tmp_path, retries=1)
    sid = submit(store, comp, "alpha", CODE / "good")
    backend = DockerBackend(slots=1, base_url="unix:///nonexistent/docker.sock", timeout=2)
    summary = Controller(store, comp, backend, poll_interval=0.05).run()
    sub = store.get_submission(sid)
    assert (sub.status, sub.failure_reason, sub.counts_toward_quota) == ("failed", "platform_error", 0)
    assert sub.attempts == 2 and summary.retried == 1
    assert "gave up after 2 attempts" in sub.failure_message
