"""GPUs on one host: concurrent jobs get distinct GPUs, CDI device names, configurable driver capabilities.

No GPU is needed: the inventory is simulated (``gpu_ids``) and the tests assert what reaches the real
Docker engine (the device requests of the containers it is asked to create) and that an engine without
a GPU driver refuses them as a platform error, never the team's.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_final

from referee.platform.core.errors import SpecError
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources
from referee.platform.runtime.gpus import GpuPool, GpuUnavailable, gpu_inventory
from referee.platform.runtime.sandbox import SandboxPolicy, container_config

pytestmark = [pytest.mark.docker, pytest.mark.fleet]


def gpu_job(tmp: Path, name: str, image: str = "img", gpus: int = 1, sandbox: dict | None = None) -> JobSpec:
    out = tmp / name / "output"
    out.mkdir(parents=True)
    return JobSpec(job_id=f"g-{name}-{uuid.uuid4().hex[:6]}", submission_id=1, attempt=1, competition_id="g",
                   output_dir=str(out), output_file="p.txt", image=image, command=["true"], timeout_s=30,
                   resources=Resources(cpu=0.1, memory=64 * 2**20, gpus=gpus), sandbox=sandbox or {})


def test_inventory_from_option_environment_or_driver(monkeypatch):
    assert gpu_inventory(4) == ["0", "1", "2", "3"]
    assert gpu_inventory(["2", "3"]) == ["2", "3"]
    monkeypatch.setenv("REFEREE_GPU_INVENTORY", "0,1")
    assert gpu_inventory() == ["0", "1"]
    monkeypatch.delenv("REFEREE_GPU_INVENTORY")
    assert isinstance(gpu_inventory(), list)  # this machine's driver (none here: [])


def test_pool_hands_out_distinct_gpus_and_waits_for_a_free_one():
    host = f"test-{uuid.uuid4().hex}"
    pool = GpuPool(["0", "1"], host)
    a, b = pool.acquire(1), pool.acquire(1)
    assert {*a, *b} == {"0", "1"}
    other_process = GpuPool(["0", "1"], host)  # another scheduler on the same host: lock files, not memory
    got: list[list[str]] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(1)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got  # nothing free: it waits
    pool.release(a)
    waiter.join(5)
    assert got == [a]
    with pytest.raises(GpuUnavailable, match="has 2"):
        pool.acquire(3)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GpuUnavailable, match="cancelled"):
        other_process.acquire(1, cancel)  # both held by the first "process"
    pool.release(b)
    pool.release(got[0])
    assert sorted(other_process.acquire(2)) == ["0", "1"]


class _Spy:
    """The real Docker client; records the device requests of each container it creates (at the API
    call that reaches the engine), and lets the creations through together so every job holds its GPU
    at the same moment."""

    def __init__(self, real: Any, parties: int):
        self._real = real
        self.requests: list[dict[str, Any]] = []
        self._barrier = threading.Barrier(parties, timeout=60)
        spy = self

        class Api:
            def create_container(self, *args: Any, **kw: Any) -> Any:
                spy.requests.append(dict((kw.get("host_config") or {})["DeviceRequests"][0]))
                spy._barrier.wait()
                return real.api.create_container(*args, **kw)

            def __getattr__(self, name: str) -> Any:
                return getattr(real.api, name)

        self.api = Api()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_four_concurrent_jobs_on_a_four_gpu_host_get_four_different_gpus(tmp_path, docker_client, base_image):
    from referee.platform.backends.docker import DockerBackend
    spy = _Spy(docker_client, 4)
    backend = DockerBackend(slots=4, client=spy, gpu_ids=4)
    jobs = [gpu_job(tmp_path, f"j{i}", base_image) for i in range(4)]
    handles = [backend.submit(j) for j in jobs]
    st = wait_final(backend, handles, limit=120)
    ids = [r["DeviceIDs"] for r in spy.requests]
    assert sorted(i for d in ids for i in d) == ["0", "1", "2", "3"]  # one GPU each, all different
    assert all(r.get("Count") in (0, None) for r in spy.requests)  # exact devices, not "any one"
    assert all(r["Capabilities"] == [["gpu", "compute", "utility"]] for r in spy.requests)
    gpu_engine = "nvidia" in (docker_client.info().get("Runtimes") or {})
    for h in handles:
        if not gpu_engine:  # the engine was asked for those devices and refused: the platform's failure
            assert (st[h].state, st[h].reason) == (JobState.FAILED, FailureReason.PLATFORM_ERROR), st[h]
            assert "device" in st[h].message.lower() and "gpu" in st[h].message.lower(), st[h].message
    backend.close()


def test_cdi_device_names_and_video_capability_reach_docker(tmp_path, docker_client, base_image):
    from referee.platform.runtime.sandbox import run_job_in_docker
    video = SandboxPolicy.from_mapping({"gpu_capabilities": ["compute", "utility", "video"]})
    job = gpu_job(tmp_path, "video", base_image, gpus=2)
    cfg = container_config(job, video, output_source=tmp_path)
    req = dict(cfg["device_requests"][0])
    assert req["Count"] == 2 and req["Capabilities"] == [["gpu", "compute", "utility", "video"]]  # NVDEC
    assert cfg["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"
    cdi = SandboxPolicy.from_mapping({"gpu_driver": "cdi"})
    cdi_cfg = container_config(job, cdi, output_source=tmp_path, gpu_device_ids=["1", "3"])
    req = dict(cdi_cfg["device_requests"][0])
    assert req["Driver"] == "cdi" and req["DeviceIDs"] == ["nvidia.com/gpu=1", "nvidia.com/gpu=3"]
    no_gpu = container_config(gpu_job(tmp_path, "cpu", base_image, gpus=0), cdi, output_source=tmp_path)
    assert "device_requests" not in no_gpu
    with pytest.raises(SpecError, match="gpu_capabilities"):
        SandboxPolicy.from_mapping({"gpu_capabilities": ["compute", "warp-drive"]})
    with pytest.raises(SpecError, match="gpu_driver"):
        SandboxPolicy.from_mapping({"gpu_driver": "amd"})
    # what the engine says to a CDI request (an engine without CDI support refuses it): the platform's fault
    run = gpu_job(tmp_path, "cdi-run", base_image, sandbox={"gpu_driver": "cdi"})
    st = run_job_in_docker(run, client=docker_client, gpu_device_ids=["0"])
    if "nvidia" not in (docker_client.info().get("Runtimes") or {}):
        assert (st.state, st.reason) == (JobState.FAILED, FailureReason.PLATFORM_ERROR), st
        assert "cdi" in st.message.lower() or "device" in st.message.lower(), st.message


def test_gpu_check_refuses_clearly_without_a_gpu():
    import subprocess
    from conftest import ROOT
    if Path("/proc/driver/nvidia/gpus").is_dir():
        pytest.skip("this machine has an NVIDIA GPU: run scripts/gpu-check.sh itself")
    got = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True, timeout=60)
    assert got.returncode == 2 and "no NVIDIA GPU" in got.stderr, (got.returncode, got.stderr)
