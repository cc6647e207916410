"""Jobs outlive the scheduler, and a lost node costs one shard: on the local fleet (a Ray cluster whose
workers run containers on a second Docker engine and cannot see the workspace, a real registry).

* `kill -9` of `referee run` while its job runs, then `referee run` again: the job's container was created
  once (the engine's own event stream says so) and its result is collected and scored.
* A sharded submission whose second node is lost mid-run: only that node's shard runs again, the orphan
  container is removed, and the merged predictions score exactly like the unsharded run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, REGISTRY_PASSWORD_ENV, REGISTRY_USER, prepare_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = [pytest.mark.control, pytest.mark.fleet]
CODE = EXAMPLES / "deepfake" / "code"


def ray_block(fleet: Any) -> dict[str, Any]:
    return {"name": "ray", "max_in_flight": 4, "options": {
        "address": fleet.ray.address, "max_in_flight": 4, "input_store": str(fleet.store),
        "input_cache": str(fleet.root / "control-cache")}}  # its own: test_fleet counts fleet.cache's fetches


def registry_block(fleet: Any) -> dict[str, Any]:
    return {"url": f"{fleet.registry.address}/control", "username": REGISTRY_USER, "password_env": REGISTRY_PASSWORD_ENV}


def referee(ws: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "referee.platform.cli", "-w", str(ws), *args]


def created(engine: Any, since: float, name_part: str) -> list[str]:
    """Names of the containers the engine created since ``since`` whose name contains ``name_part``."""
    events = engine.client().events(since=int(since), until=int(time.time()) + 1, decode=True,
                                    filters={"type": "container", "event": "create"})
    names = [(e.get("Actor") or {}).get("Attributes", {}).get("name", "") for e in events]
    return [n for n in names if name_part in n]


def running(engine: Any, name_part: str) -> list[str]:
    return [c.name for c in engine.client().containers.list() if name_part in c.name]


def wait_for(what: str, check: Any, timeout: float = 180.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:g}s")


def test_kill_9_of_referee_run_mid_job_then_restart_runs_the_container_once(fleet, tmp_path, base_image):
    from referee.platform.cli.localfleet import ray_env
    ex = prepare_example("deepfake", tmp_path)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc.update(id="survive", limits={}, backend=ray_block(fleet), registry=registry_block(fleet),
               resources={"cpu": 0.5, "memory": "512m", "timeout": "300s"})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "Dockerfile").write_text((CODE / "good" / "Dockerfile").read_text())
    (slow / "predict.py").write_text("import time\ntime.sleep(12)\n" + (CODE / "good" / "predict.py").read_text())
    ws = tmp_path / "ws"
    store = Store(ws)
    comp = load_into_store(store, ex / "competition.yaml")
    sid = submit(store, comp, "alpha", slow)
    store.close()
    since = time.time() - 1
    first = subprocess.Popen(referee(ws, "run", comp.id, "--no-progress"), env=ray_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        (name,) = wait_for("the job's container running on the other machine",
                           lambda: running(fleet.engine, f"-s{sid}-a1-"))
        os.kill(first.pid, signal.SIGKILL)  # the scheduler dies; its job keeps running in the cluster
        first.wait(30)
        assert running(fleet.engine, name), "the job died with its scheduler"
        again = subprocess.run(referee(ws, "run", comp.id, "--no-progress"), env=ray_env(), capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
    store = Store(ws)
    sub = store.get_submission(sid)
    assert sub.status == "scored" and "wrote 2000 predictions" in (sub.log_tail or "")
    jobs = store.jobs_of(sid)
    assert [(j.attempt, j.state.value) for j in jobs] == [(1, "succeeded")]  # never dispatched again
    assert created(fleet.engine, since, f"-s{sid}-a") == [name]  # the container was created once
    assert any(e["kind"] == "reclaimed" for e in store.events(competition_id=comp.id))
    assert not running(fleet.engine, name)
    store.close()


SHARD_CODE = """
import json, os, pathlib, time
inp = pathlib.Path(os.environ.get("REFEREE_INPUT", "/data/input"))
spec = inp / "referee-shard.json"
ids = json.loads(spec.read_text())["ids"] if spec.exists() else sorted(p.name[:-4] for p in inp.glob("x*.txt"))
files = sorted(p.name for p in inp.glob("x*.txt"))
assert files == sorted(f"{i}.txt" for i in ids), (files, ids)  # a shard sees only its own items
if os.environ.get("REFEREE_SHARDS"):
    time.sleep(15)  # long enough to lose a node under it
rows = "".join(f"{f[:-4]},{float((inp / f).read_text()):.2f}\\n" for f in files)
out = pathlib.Path(os.environ.get("REFEREE_OUTPUT", "/data/output"), os.environ.get("REFEREE_OUTPUT_FILE", "predictions.csv"))
out.write_text("id,label\\n" + rows)
print("shard", os.environ.get("REFEREE_SHARD"), "wrote", len(files))
"""


def sharded_competition(root: Path, cid: str, fleet: Any, shards: int, n: int = 16) -> Path:
    d = root / cid
    (d / "input").mkdir(parents=True)
    value = [(i * 7 % 10 + 0.5) / 10 for i in range(n)]
    for i in range(n):
        (d / "input" / f"x{i}.txt").write_text(f"{value[i]:.2f}\n")
    (d / "input" / "classes.txt").write_text("0 1\n")  # shared by every shard
    (d / "ref.csv").write_text("id,label\n" + "".join(f"x{i},{int(value[i] > 0.5 if i % 5 else value[i] < 0.5)}\n"
                                                      for i in range(n)))
    (d / "c.yaml").write_text(yaml.safe_dump({
        "id": cid, "title": "Sharded", "data": {"reference": "ref.csv", "input": "input"},
        "split": {"public_fraction": 0.5, "seed": 1}, "metrics": [{"scorer": "log_loss"}, {"scorer": "accuracy"}],
        "resources": {"cpu": 1.5, "memory": "256m", "timeout": "300s", "shards": shards},
        "backend": {**ray_block(fleet), "max_infra_retries": 2}, "registry": registry_block(fleet)}))
    return d


def test_a_lost_node_reruns_only_its_shard_and_the_score_matches_unsharded(fleet, tmp_path, base_image):
    from referee.platform.cli.localfleet import ray_env
    code = tmp_path / "code"
    code.mkdir()
    (code / "predict.py").write_text(SHARD_CODE)
    (code / "Dockerfile").write_text("FROM referee/base-python:bookworm\nCOPY predict.py /app/predict.py\n"
                                     'CMD ["python3", "/app/predict.py"]\n')
    ws = tmp_path / "ws"
    store = Store(ws)
    whole = load_into_store(store, sharded_competition(tmp_path, "whole", fleet, shards=1) / "c.yaml")
    w = submit(store, whole, "alpha", code)
    sharded = load_into_store(store, sharded_competition(tmp_path, "halves", fleet, shards=2) / "c.yaml")
    s = submit(store, sharded, "alpha", code)
    store.close()
    got = subprocess.run(referee(ws, "run", whole.id, "--no-progress"), env=ray_env(), capture_output=True,
                         text=True, timeout=300)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    second = fleet.ray.add_worker(cpus=2)  # a second machine: each node fits one 1.5-CPU shard
    since = time.time() - 1
    run = subprocess.Popen(referee(ws, "run", sharded.id, "--no-progress"), env=ray_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first_try = wait_for("both shards running, one on each node",
                             lambda: both if len(both := running(fleet.engine, f"halves-s{s}-a")) == 2 else None)
        fleet.ray.kill_node(second)  # that machine's node is gone; its container is left behind on the engine
        out, _ = run.communicate(timeout=400)
        assert run.returncode == 0, out[-3000:]
    finally:
        if run.poll() is None:
            os.kill(run.pid, signal.SIGKILL)
    store = Store(ws)
    jobs = store.jobs_of(s)
    by_shard: dict[int, list[Any]] = {}
    for j in jobs:
        by_shard.setdefault(int(j.shard or 0), []).append(j)
    tries = sorted(len(v) for v in by_shard.values())
    assert tries == [1, 2], [(j.shard, j.attempt, j.state.value, j.message) for j in jobs]  # one shard again
    lost = next(v for v in by_shard.values() if len(v) == 2)
    assert (lost[0].state.value, lost[0].failure_reason) == ("failed", "platform_error")
    assert lost[1].state.value == "succeeded"
    kept = next(v for v in by_shard.values() if len(v) == 1)[0]
    assert kept.state.value == "succeeded"
    names = created(fleet.engine, since, f"halves-s{s}-a")
    assert len(names) == 3 and sum(f"-a{kept.attempt}-" in n for n in names) == 1  # the kept shard: one container
    assert not [n for n in first_try if n in running(fleet.engine, "halves")]  # the orphan was removed
    sub = store.get_submission(s)
    assert sub.status == "scored" and sub.counts_toward_quota == 1, sub.failure_message
    score = {(r.metric, r.split): r.value for r in store.scores(s)}
    assert score and score == {(r.metric, r.split): r.value for r in store.scores(w)}  # merged == unsharded
    store.close()
