"""Ray backend on a real local Ray cluster (started once per session, with one logical GPU) and the
real Docker engine: resource requests, bounded in-flight tasks, input staging, GPU pinning, orphans."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import engine_gpu_support, need, wait_final

from referee.platform.core.errors import BackendError
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources

pytestmark = pytest.mark.ray
_LOCK = threading.Lock()
_STARTED: list[bool] = []


def start_local_ray() -> Any:
    """A local Ray cluster for the whole session (2 CPUs, 1 logical GPU); started once per process."""
    with _LOCK:
        try:
            import ray
        except ImportError as exc:
            need(False, f"Ray ({exc})")
        if ray.is_initialized():
            return ray
        last: Exception | None = None
        for _ in range(3):  # a loaded machine can time the raylet out at startup; try again
            try:
                ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False)
                _STARTED.append(True)
                return ray
            except Exception as exc:  # noqa: BLE001
                last = exc
                ray.shutdown()
                time.sleep(2)
        need(False, f"a local Ray cluster ({last})")


@pytest.fixture(scope="session")
def ray_cluster() -> Any:
    ray = start_local_ray()
    yield ray
    if _STARTED and ray.is_initialized():
        ray.shutdown()
        _STARTED.clear()


@pytest.fixture(scope="module")
def base_image(docker_client):
    from referee.platform.runtime.images import ensure_base_image
    return ensure_base_image(docker_client)


def py_job(tmp: Path, name: str, code: str, *, image: str | None = None, cpu: float = 0.5, gpus: int = 0,
           timeout: float = 60, input_dir: Path | None = None) -> JobSpec:
    out = tmp / name / "output"
    out.mkdir(parents=True)
    command = ["python3", "-c", code] if image else [sys.executable, "-c", code]
    return JobSpec(job_id=f"r-{name}", submission_id=1, attempt=1, competition_id="r", output_dir=str(out),
                   output_file="out.txt", image=image, command=command, timeout_s=timeout,
                   input_dir=str(input_dir) if input_dir else None,
                   resources=Resources(cpu=cpu, memory=256 * 2**20, gpus=gpus))


WRITE = "import os; open(os.path.join(os.environ['REFEREE_OUTPUT'], os.environ['REFEREE_OUTPUT_FILE']), 'w').write({})"




def test_resources_reach_ray_and_a_gpu_task_gets_its_gpu(ray_cluster, tmp_path):
    from referee.platform.backends.ray import RayBackend
    backend = RayBackend(runner="process")
    code = WRITE.format("os.environ.get('CUDA_VISIBLE_DEVICES', 'none')")
    gpu = py_job(tmp_path, "gpu", code, gpus=1, cpu=1)
    assert backend.task_options(gpu) == {"num_cpus": 1, "num_gpus": 1, "memory": 256 * 2**20, "name": "referee:r-gpu"}
    too_big = py_job(tmp_path, "two-gpus", code, gpus=2)  # the cluster has one GPU: Ray must hold it back
    h_gpu, h_big = backend.submit(gpu), backend.submit(too_big)
    st = wait_final(backend, [h_gpu])
    assert st[h_gpu].state == JobState.SUCCEEDED, st[h_gpu]
    assert (Path(gpu.output_dir) / "out.txt").read_text() == "0"  # Ray assigned GPU 0 to this task
    time.sleep(1)
    assert not backend.poll([h_big])[h_big].state.final  # launched into Ray, never placed: no second GPU
    backend.cancel(h_big)
    assert backend.poll([h_big])[h_big].state == JobState.CANCELLED
    backend.close()


def test_in_flight_tasks_are_bounded(ray_cluster, tmp_path):
    from referee.platform.backends.ray import RayBackend
    backend = RayBackend(runner="process", max_in_flight=3)
    code = "import time; t = time.time(); time.sleep(0.6); " + WRITE.format("f'{t} {time.time()}'")
    jobs = [py_job(tmp_path, f"j{i}", code, cpu=0.1) for i in range(9)]  # Ray alone would run all 9 at once
    handles = [backend.submit(j) for j in jobs]
    first = backend.poll(handles)
    queued = sum(s.state == JobState.QUEUED for s in first.values())
    finished = sum(s.state.final for s in first.values())
    assert queued >= 9 - 3 - finished and queued > 0  # held back in referee, not handed to Ray
    st = wait_final(backend, handles)
    assert all(s.state == JobState.SUCCEEDED for s in st.values()), st
    spans = [tuple(map(float, (Path(j.output_dir) / "out.txt").read_text().split())) for j in jobs]
    peak = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert 1 <= peak <= 3
    backend.close()  # collected: the supervisors go, and with them their CPUs


def test_inputs_staged_through_the_object_store(ray_cluster, tmp_path):
    from referee.platform.backends.ray import RayBackend
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "sub" / "ids.txt").write_text("x1\nx2\n")
    backend = RayBackend(runner="process", stage_inputs=True)
    code = WRITE.format("os.environ['REFEREE_INPUT'] + '|' + open(os.environ['REFEREE_INPUT'] + '/sub/ids.txt').read()")
    jobs = [py_job(tmp_path, f"st{i}", code, input_dir=inp) for i in range(2)]
    st = wait_final(backend, [backend.submit(j) for j in jobs])
    assert all(s.state == JobState.SUCCEEDED for s in st.values())
    texts = {(Path(j.output_dir) / "out.txt").read_text() for j in jobs}
    assert len(texts) == 1  # both jobs read the same staged copy
    where, content = texts.pop().split("|")
    assert content == "x1\nx2\n" and Path(where) != inp and "referee-ray-inputs" in where
    shutil.rmtree(where, ignore_errors=True)
    backend.close()


def test_a_job_that_cannot_be_launched_fails_and_the_queue_moves_on(ray_cluster, tmp_path):
    """Staging fails (a symlink in the input tree) when the job is launched from poll: that job fails as a
    platform error (the scheduler retries it, not charged); it is not left queued, and the next one runs."""
    from referee.platform.backends.ray import RayBackend
    bad_input = tmp_path / "bad-in"
    bad_input.mkdir()
    (bad_input / "link").symlink_to("/etc/hostname")
    backend = RayBackend(runner="process", stage_inputs=True, max_in_flight=1)
    slow = py_job(tmp_path, "slow", "import time; time.sleep(0.5); " + WRITE.format("'slow'"))
    bad = py_job(tmp_path, "unstageable", WRITE.format("'never'"), input_dir=bad_input)
    after = py_job(tmp_path, "after", WRITE.format("'after'"))
    handles = [backend.submit(j) for j in (slow, bad, after)]  # bad and after wait for slow's slot
    assert backend.poll(handles[1:2])[handles[1]].state == JobState.QUEUED
    st = wait_final(backend, handles, limit=60)
    assert st[handles[0]].state == st[handles[2]].state == JobState.SUCCEEDED
    assert (st[handles[1]].state, st[handles[1]].reason) == (JobState.FAILED, FailureReason.PLATFORM_ERROR)
    assert "could not launch" in st[handles[1]].message and "symlinks" in st[handles[1]].message
    assert (Path(after.output_dir) / "out.txt").read_text() == "after"
    # a failure while launching from submit itself is reported the same way (the handle is usable)
    again = py_job(tmp_path, "unstageable-2", WRITE.format("'never'"), input_dir=bad_input)
    solo = RayBackend(runner="process", stage_inputs=True)
    h = solo.submit(again)
    assert solo.poll([h])[h].reason == FailureReason.PLATFORM_ERROR
    backend.close()
    solo.close()


def test_gpu_engines_are_recognised_by_hook_cdi_or_runtime(tmp_path, monkeypatch):
    """The GPU test below must know a GPU engine however NVIDIA's toolkit set it up."""
    class Engine:
        def __init__(self, **info: Any):
            self._info = info

        def info(self) -> dict:
            return self._info

    bin_dir, cdi = tmp_path / "bin", tmp_path / "cdi"
    bin_dir.mkdir()
    cdi.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))

    def tool(name: str) -> None:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)

    assert engine_gpu_support(Engine(Runtimes={"runc": {}}, CDISpecDirs=[str(cdi)])) is None
    assert engine_gpu_support(Engine(Runtimes={"runc": {}, "nvidia": {}})) == "the nvidia runtime"
    tool("nvidia-cdi-hook")  # CDI needs the hook and a spec for nvidia.com/gpu in a spec dir the engine reads
    assert engine_gpu_support(Engine(CDISpecDirs=[str(cdi)])) is None
    (cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    assert engine_gpu_support(Engine(CDISpecDirs=[str(cdi)])) == "CDI (nvidia.com/gpu)"
    assert engine_gpu_support(Engine(CDISpecDirs=[])) is None  # CDI switched off in the engine
    tool("nvidia-container-runtime-hook")
    assert engine_gpu_support(Engine(Runtimes={"runc": {}})) == "NVIDIA's container runtime hook"


def test_gpu_device_requests_reach_docker_pinned_to_rays_gpu(ray_cluster, tmp_path, base_image, docker_client):
    """The sandbox asks Docker for the GPUs Ray assigned. Without a GPU engine, Docker refuses that very
    request; with one, the container really sees its GPU."""
    from referee.platform.backends.ray import RayBackend
    from referee.platform.runtime.sandbox import SandboxPolicy, container_config
    job = py_job(tmp_path, "dgpu", WRITE.format("' '.join(sorted(d for d in os.listdir('/dev') "
                                                 "if d.startswith('nvidia')))"), image=base_image, gpus=1, cpu=1)
    cfg = container_config(job, SandboxPolicy(), output_source=tmp_path)
    assert [dict(r) for r in cfg["device_requests"]] == [{"Driver": "", "Count": 1, "DeviceIDs": [],
                                                          "Capabilities": [["gpu", "compute", "utility"]],
                                                          "Options": {}}]
    pinned = container_config(job, SandboxPolicy(), output_source=tmp_path, gpu_device_ids=["0"])
    assert pinned["device_requests"][0]["DeviceIDs"] == ["0"] and not pinned["device_requests"][0].get("Count")
    backend = RayBackend()
    h = backend.submit(job)
    st = wait_final(backend, [h])[h]
    if engine_gpu_support(docker_client):  # the hook, CDI or the nvidia runtime: the container sees its GPU
        assert st.state == JobState.SUCCEEDED, st
        assert "nvidia0" in (Path(job.output_dir) / "out.txt").read_text().split()
    else:  # the engine received the device request and refused it: no GPU driver on this machine
        assert st.state == JobState.FAILED and st.reason != FailureReason.EXITED_NONZERO
        assert "gpu" in st.message.lower() and "device" in st.message.lower(), st.message


def test_a_new_driver_reattaches_to_a_running_job_and_an_orphan_is_reaped(ray_cluster, tmp_path, base_image,
                                                                            docker_client):
    """A job's supervisor lives in the cluster: a second driver (a restarted scheduler) finds it by handle and
    collects its result from the one container that ran. A handle nothing supervises any more is lost, and a
    container it left behind is removed on its node."""
    from referee.platform.backends.ray import RayBackend
    old = RayBackend()
    job = py_job(tmp_path, "survivor", "import time; time.sleep(4); " + WRITE.format("'survived'"), image=base_image)
    h = old.submit(job)
    end = time.monotonic() + 90
    while not docker_client.containers.list(filters={"name": h}):
        assert time.monotonic() < end, "the container never started"
        time.sleep(0.2)
    created = docker_client.containers.get(h).attrs["Created"]
    new = RayBackend()  # what a restarted scheduler gets
    st = wait_final(new, [h])[h]
    assert st.state == JobState.SUCCEEDED, st
    new.collect(h, job)
    assert (Path(job.output_dir) / "out.txt").read_text() == "survived"
    new.cleanup(h)
    assert created  # the one container, seen running before the second driver came
    # an orphan: a referee container whose supervisor is gone
    orphan = py_job(tmp_path, "orphan", "import time; time.sleep(120)", image=base_image)
    from referee.platform.runtime.sandbox import MANAGED_LABEL, container_name
    name = container_name(orphan)
    docker_client.containers.run(base_image, ["sleep", "120"], name=name, detach=True, network_mode="none",
                                 labels={MANAGED_LABEL: "1"})
    lost = new.poll([name])[name]
    assert lost.state == JobState.FAILED and lost.reason == FailureReason.PLATFORM_ERROR
    assert not docker_client.containers.list(all=True, filters={"name": name})  # reaped on its node
    new.close()


def test_registry_builds_the_ray_backend_and_rejects_bad_options(ray_cluster, tmp_path, store):
    import yaml

    from referee.platform.backends.ray import RayBackend
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import make_backend
    (tmp_path / "ref.csv").write_text("id,label\na,1\n")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "id": "rc", "title": "R", "data": {"reference": "ref.csv"}, "metrics": [{"scorer": "accuracy"}],
        "backend": {"name": "ray", "options": {"max_in_flight": 7, "runner": "process"}}}))
    comp = load_into_store(store, tmp_path / "c.yaml")
    backend = make_backend(comp, store)
    assert isinstance(backend, RayBackend) and backend.max_in_flight == 7 and backend.runner == "process"
    with pytest.raises(BackendError, match="runner"):
        make_backend(comp, store, "ray", {"runner": "ssh"})
    with pytest.raises(BackendError, match="runs commands"):
        backend.submit(JobSpec(job_id="x", submission_id=1, attempt=1, competition_id="rc",
                               output_dir=str(tmp_path / "o"), output_file="p.csv", image="img"))
