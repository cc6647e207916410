"""Fleets that share nothing but a registry and an input store, on this machine.

A second Docker engine plays the other machine; the Ray worker node uses it and cannot see pytest's
temporary directories (every workspace and competition lives there); moto's Batch runs its jobs on
it. Container images travel only through the registry (by digest, with credentials), inputs only
through the input store (or S3), and the scheduler's memory does not grow with the inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, REGISTRY_PASSWORD_ENV, REGISTRY_USER, prepare_example

from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources

pytestmark = pytest.mark.fleet
CODE = EXAMPLES / "deepfake" / "code"
TEAMS = {"alpha": "good", "bravo": "poor", "charlie": "crash"}
ROOT = Path(__file__).resolve().parents[1]


def registry_block(fleet: Any) -> dict[str, Any]:
    return {"url": f"{fleet.registry.address}/fleet", "username": REGISTRY_USER, "password_env": REGISTRY_PASSWORD_ENV}


def pulls(engine: Any, since: float) -> list[str]:
    """Images the engine pulled since ``since`` (from its own event stream)."""
    import time
    client = engine.client()
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"type": "image", "event": "pull"})
    return [e.get("id") or e.get("Actor", {}).get("ID", "") for e in events]


def run_competition(root: Path, backend: dict[str, Any], registry: dict[str, Any] | None,
                    subprocess_driver: bool = False) -> tuple[dict, dict, list[str]]:
    """The deepfake code competition, one backend block changed; returns leaderboards, outcomes, image refs."""
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.leaderboard import build as leaderboard
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    ex = prepare_example("deepfake", root)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc["backend"] = {**backend, "max_in_flight": 3}
    doc["resources"] = {"cpu": 0.5, "memory": "512m", "timeout": "120s"}
    if registry:
        doc["registry"] = registry
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(root / "ws")
    comp = load_into_store(store, ex / "competition.yaml")
    ids = {team: submit(store, comp, team, CODE / code) for team, code in TEAMS.items()}
    refs = [str(store.get_submission(sid).metadata.get("image_ref", "")) for sid in ids.values()]
    if subprocess_driver:  # a Ray driver of its own (this process may hold another Ray connection)
        from referee.platform.cli.localfleet import ray_env
        got = subprocess.run([sys.executable, "-m", "referee.platform.cli", "-w", str(root / "ws"), "run", comp.id],
                             env=ray_env(), capture_output=True, text=True, timeout=600)
        assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    else:
        Controller(store, comp, poll_interval=0.1).run()
    boards = {}
    for split in ("public", "private"):
        lb = leaderboard.build(store, comp, split=split)
        boards[split] = [(e.rank, e.team, e.metrics, e.intervals) for e in lb.entries]
    outcomes = {team: (store.get_submission(sid).status, store.get_submission(sid).failure_reason,
                       store.get_submission(sid).failure_message)
                for team, sid in ids.items()}
    store.close()
    return boards, outcomes, refs


def test_a_job_on_the_second_engine_pulls_by_digest_once(fleet, tmp_path, base_image):
    """Run directly on the other engine: the image arrives by digest from the registry, once for two
    concurrent jobs; a digest the registry lacks, a node without credentials and an unreachable registry
    are the platform's faults (retried, never charged)."""
    import time

    from referee.platform.runtime.registry import Registry, RegistrySettings, ensure_image, RegistryError
    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.sandbox import run_job_in_docker

    host = docker_client()
    settings = RegistrySettings.model_validate(registry_block(fleet))
    image_id = host.api.inspect_image(base_image)["Id"]
    ref = Registry(settings).push(host, image_id, "pull-test", "base")
    assert ref.startswith(f"{fleet.registry.address}/fleet/referee-pull-test@sha256:")
    assert ref.split("@")[1] != image_id  # the manifest digest is not the image id: both are recorded
    other = fleet.engine.client()
    assert not [i for i in other.images.list() if image_id in i.id]  # the other machine starts without it
    since = time.time() - 1
    jobs, results = [], {}
    for i in range(2):
        out = tmp_path / f"j{i}" / "output"
        out.mkdir(parents=True)
        jobs.append(JobSpec(job_id=f"pull-{i}", submission_id=i, attempt=1, competition_id="pull-test",
                            output_dir=str(out), output_file="p.txt", image=ref,
                            command=["python3", "-c", "import os; open(os.environ['REFEREE_OUTPUT'] + '/p.txt', "
                                                      "'w').write('ok')"],
                            resources=Resources(cpu=0.5, memory=256 * 2**20), timeout_s=60))
    old = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(fleet.root / "docker-config")  # the node's own `docker login`
    try:
        from referee.platform.runtime.engine import new_docker_client
        node = new_docker_client(fleet.engine.host, timeout=120)
        threads = [threading.Thread(target=lambda j=j: results.__setitem__(j.job_id, run_job_in_docker(j, client=node)))
                   for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert all(results[j.job_id].state == JobState.SUCCEEDED for j in jobs), results
        assert all((Path(j.output_dir) / "p.txt").read_text() == "ok" for j in jobs)
        assert ref in other.api.inspect_image(ref)["RepoDigests"]
        assert len(pulls(fleet.engine, since)) == 1  # two jobs, one pull
        missing = ref.split("@")[0] + "@sha256:" + "0" * 64
        with pytest.raises(RegistryError) as exc:
            ensure_image(node, missing)
        # referee pushed every reference it runs: one the registry no longer has is the platform's fault
        assert exc.value.reason is FailureReason.PLATFORM_ERROR and "manifest unknown" in str(exc.value)
    finally:
        if old is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = old
    anonymous = new_docker_client(fleet.engine.host, timeout=60)  # a node that never logged in
    other_ref = Registry(settings).push(host, host.api.inspect_image(base_image)["Id"], "pull-test-2", "base")
    with pytest.raises(RegistryError) as exc:
        ensure_image(anonymous, other_ref)
    assert exc.value.reason is FailureReason.PLATFORM_ERROR  # referee's credentials: the platform's fault
    from referee.platform.cli.localfleet import free_port
    with pytest.raises(RegistryError) as exc:
        ensure_image(node, f"127.0.0.1:{free_port()}/x/y@sha256:{'1' * 64}")  # nobody listens: registry down
    assert exc.value.reason is FailureReason.PLATFORM_ERROR


def test_identical_leaderboards_on_docker_ray_two_nodes_and_batch_on_the_other_engine(fleet, tmp_path, base_image,
                                                                                    monkeypatch):
    import time
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    fleet.moto.session().client("s3", endpoint_url=fleet.moto.endpoint).create_bucket(Bucket="referee-fleet")
    since = time.time() - 1
    results = {
        # one machine, no registry: the embedded default
        "docker": run_competition(tmp_path / "docker", {"name": "docker", "options": {"slots": 3}}, None),
        "ray": run_competition(tmp_path / "ray", {"name": "ray", "options": {
            "address": fleet.ray.address, "max_in_flight": 3, "input_store": str(fleet.store),
            "input_cache": str(fleet.cache)}}, registry_block(fleet), subprocess_driver=True),
        "aws-batch": run_competition(tmp_path / "batch", {"name": "aws-batch", "options": {
            "endpoint_url": fleet.moto.endpoint, "region": "us-east-1", "job_queue": "fleet", "data": "s3",
            "s3_bucket": "referee-fleet", "input_cache": str(fleet.root / "instance-cache"),
            "create_queue": {"service_role": _role(fleet)}}}, registry_block(fleet)),
    }
    boards, outcomes, _ = results["docker"]
    assert {t: o[:2] for t, o in outcomes.items()} == {"alpha": ("scored", None), "bravo": ("scored", None),
                                                       "charlie": ("failed", "exited_nonzero")}
    assert [(rank, team) for rank, team, _, _ in boards["public"]] == [(1, "alpha"), (2, "bravo")]
    for name in ("ray", "aws-batch"):
        other_boards, other_outcomes, refs = results[name]
        assert {t: o[:2] for t, o in other_outcomes.items()} == {t: o[:2] for t, o in outcomes.items()}, \
            (name, other_outcomes)
        assert other_boards == boards, name  # the same ranks, scores and intervals, to the last bit
        assert all("@sha256:" in r for r in refs), refs  # pushed at intake, run by digest
    # Ray: the worker (the other engine) pulled each image once, and fetched the input tree once for 3 jobs.
    from referee.platform.runtime.inputcache import fetch_count
    assert fetch_count(fleet.cache) == 1
    pulled = pulls(fleet.engine, since)
    assert len(pulled) == len(set(pulled)), pulled  # one pull per image (Ray and Batch share the engine)
    _, _, ray_refs = results["ray"]
    engine_digests = {d for i in fleet.engine.client().images.list() for d in i.attrs.get("RepoDigests") or []}
    assert set(ray_refs) <= engine_digests
    # Batch: the inputs went to the instance volume, not the sandbox tmpfs
    assert fetch_count(fleet.root / "instance-cache" / "deepfake") == 1


def _role(fleet: Any) -> str:
    iam = fleet.moto.session().client("iam", endpoint_url=fleet.moto.endpoint)
    trust = '{"Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}}]}'
    try:
        return iam.create_role(RoleName="fleet-batch", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        return iam.get_role(RoleName="fleet-batch")["Role"]["Arn"]


DRIVER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from referee.platform.backends.ray import RayBackend
    from referee.platform.core.jobs import JobSpec, Resources

    def rss():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024

    address, image, store, cache, small, big, work = sys.argv[1:8]
    backend = RayBackend(address=address, input_store=store, input_cache=cache)
    code = ("import os, hashlib\\n"
            "h, n = hashlib.sha256(), 0\\n"
            "for root, _, files in os.walk(os.environ['REFEREE_INPUT']):\\n"
            "    for name in sorted(files):\\n"
            "        with open(os.path.join(root, name), 'rb') as f:\\n"
            "            while True:\\n"
            "                b = f.read(1 << 20)\\n"
            "                if not b: break\\n"
            "                n += len(b)\\n"
            "out = os.environ['REFEREE_OUTPUT']\\n"
            "fs = [l.split()[2] for l in open('/proc/self/mounts') if l.split()[1] == out]\\n"
            "open(os.path.join(out, 'p.txt'), 'w').write('%d %s' % (n, fs[-1] if fs else '?'))\\n")
    def run(name, inp):
        out = Path(work) / name / "output"
        out.mkdir(parents=True)
        job = JobSpec(job_id=name, submission_id=1, attempt=1, competition_id="big", output_dir=str(out),
                      output_file="p.txt", image=image, command=["python3", "-c", code], input_dir=inp,
                      resources=Resources(cpu=1, memory=512 * 2**20), timeout_s=600)
        h = backend.submit(job)
        while not backend.poll([h])[h].state.final:
            time.sleep(0.2)
        st = backend.poll([h])[h]
        backend.collect(h, job)
        return st.state.value, (out / "p.txt").read_text() if (out / "p.txt").exists() else st.message
    first = run("small", small)
    before = rss()
    second = run("big", big)
    after = rss()
    print(json.dumps({"small": first, "big": second, "before": before, "after": after}))
""")


def test_a_2gb_input_runs_on_ray_without_growing_the_scheduler(fleet, tmp_path, base_image):
    """A 2 GiB input tree (sparse on the host, really read by the job) reaches the other node through the
    input store; the scheduler's resident memory grows by less than 100 MB."""
    from referee.platform.cli.localfleet import ray_env
    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.registry import Registry, RegistrySettings
    host = docker_client()
    ref = Registry(RegistrySettings.model_validate(registry_block(fleet))).push(
        host, host.api.inspect_image(base_image)["Id"], "big", "base")
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    (small / "x.bin").write_bytes(b"x" * 1000)
    big.mkdir()
    size = 2 * 2**30
    with open(big / "features.bin", "wb") as f:
        f.truncate(size)  # sparse here; the store, the node's cache and the job see 2 GiB
    (big / "ids.txt").write_text("a\n")
    store = fleet.root / "store-big"
    got = subprocess.run([sys.executable, "-c", DRIVER, fleet.ray.address, ref, str(store),
                          str(fleet.root / "cache-big"), str(small), str(big), str(tmp_path / "work")],
                         env=ray_env(), capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, got.stderr[-3000:]
    result = json.loads(got.stdout.strip().splitlines()[-1])
    try:
        # the output stays the sandbox's capped tmpfs on the other node (mounted in the node's own mount
        # namespace, seen by its Docker engine)
        assert result["small"] == ["succeeded", "1000 tmpfs"], result
        assert result["big"] == ["succeeded", f"{size + 2} tmpfs"], result  # every byte was read in the container
        growth = result["after"] - result["before"]
        assert growth < 100 * 2**20, f"the driver grew by {growth / 2**20:.0f} MiB for a 2 GiB input"
    finally:
        import shutil
        shutil.rmtree(store, ignore_errors=True)
        subprocess.run(["chmod", "-R", "u+w", str(fleet.root / "cache-big")], check=False)
        shutil.rmtree(fleet.root / "cache-big", ignore_errors=True)
