"""Ray backend: each job is a Ray task that runs the sandboxed container on its node's Docker engine.

The task asks Ray for the job's resources (``num_cpus``, ``num_gpus``, ``memory``), so Ray places
it on a node that has them; there it calls ``run_job_in_docker`` (the same sandbox the docker backend
uses) with the GPUs Ray assigned. At most ``max_in_flight`` tasks are in Ray at once: further
submissions wait in the backend and are launched as ``ray.wait`` reports finished ones, so 10,000
queued jobs never flood the cluster.

Handles are the sandbox's container names (job ids for the process runner). A Ray task cannot be
re-attached from a new driver, so after a scheduler restart ``poll`` reports an old handle lost (a
platform error: retried, not charged) and removes its container from whichever node still runs it;
``cancel`` from another process does the same.

Nodes share nothing with the scheduler but a registry and an input store. A container job runs its
image by registry digest (the node pulls it once, with its own Docker credentials) in a node-local
work directory; the prediction file comes back in the task's result. With ``input_store`` (or
``stage_inputs``) the competition's inputs are published once as a content-addressed tree and every
node materialises each tree once into its ``input_cache`` (streaming from the store, never through
the scheduler's memory), mounted read-only into each job.

Options: ``address`` (``ray://host:10001``, ``auto`` for a cluster on this machine, or none to start a
local one), ``num_cpus``/``num_gpus`` for a local start, ``max_in_flight``, ``runner`` (``docker``, or
``process`` for a host's trusted commands), ``input_store`` (``s3://bucket/prefix`` or a directory the
nodes can read), ``input_cache`` (on each node; default /tmp/referee-ray-inputs), ``input_cache_bytes``
(LRU bound, default 100g), ``stage_inputs`` (true: a directory store on this machine, for one-machine
clusters).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referee.platform.core.backend import Backend, lost_handle
from referee.platform.core.errors import BackendError
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    now_utc,
)
from referee.platform.core.units import parse_size

LOG_TAIL_BYTES = 1 << 16
BACKSTOP_GRACE_S = 60.0  # the sandbox enforces the timeout; the task stops waiting this much later
STAGE_ROOT = Path(os.environ.get("REFEREE_RAY_STAGE", "/tmp/referee-ray-inputs"))  # the default node cache
LOCAL_STORE = Path(os.environ.get("REFEREE_RAY_STORE", "/tmp/referee-input-store"))  # stage_inputs: true
NODE_WORK = Path(os.environ.get("REFEREE_NODE_WORK", "/tmp/referee-node"))  # a job's files on its node


@dataclass(frozen=True)
class Staged:
    """Where a job's inputs come from on its node: a published tree and the node's cache."""

    store: str  # s3://bucket/prefix or a directory
    tree: str  # the tree's sha256
    cache: str  # the node's cache root
    cache_bytes: int
    endpoint_url: str | None = None


@dataclass
class _Entry:
    job: JobSpec
    ref: Any = None  # the task's ObjectRef once launched
    status: JobStatus | None = None  # final status
    log_tail: str = ""
    output: bytes | None = None


# -- what runs on the node --------------------------------------------------------------------------
def _stage_inputs(staged: Staged) -> Any:
    """Materialise the job's input tree in this node's cache (once per node); returns (dir, cache)."""
    from referee.platform.runtime.inputcache import InputCache
    from referee.platform.runtime.inputs import materialise, open_input_store

    cache = InputCache(staged.cache, staged.cache_bytes)
    store = open_input_store(staged.store, endpoint_url=staged.endpoint_url)
    return str(materialise(store, staged.tree, cache)), cache


def _run_process(job: JobSpec, cancel: threading.Event) -> tuple[JobStatus, str]:
    """A trusted command as a local process (LocalBackend on the node)."""
    from referee.platform.backends.local import LocalBackend

    local = LocalBackend()
    handle = local.submit(job)
    delay = 0.001
    while True:
        status = local.poll([handle])[handle]
        if status.state.final:
            return status, local.logs(handle, LOG_TAIL_BYTES)
        if cancel.wait(delay):
            local.cancel(handle)
        delay = min(0.05, delay * 2)


def _run_docker(job: JobSpec, cancel: threading.Event, gpu_ids: list[str]) -> tuple[JobStatus, str]:
    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.sandbox import (
        log_path_for,
        read_log_tail,
        run_job_in_docker,
    )

    status = run_job_in_docker(job, client=docker_client(), cancel_event=cancel, gpu_device_ids=gpu_ids or None)
    return status, read_log_tail(log_path_for(job), LOG_TAIL_BYTES)


def _node_local(job: JobSpec) -> Path:
    """Run a container job in a work directory of this node (the scheduler's paths need not exist here);
    the container keeps the name the scheduler knows it by."""
    from referee.platform.runtime.sandbox import NAME_LABEL, container_name
    job.labels = {**job.labels, NAME_LABEL: container_name(job)}
    work = NODE_WORK / f"{job.job_id}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "output").mkdir(parents=True)
    job.output_dir = str(work / "output")
    return work


def execute_job(job_dict: dict[str, Any], runner: str, staged: Staged | None = None) -> dict[str, Any]:
    """The body of the Ray task: run one job on this node; survives ray.cancel (KeyboardInterrupt)."""
    import contextlib

    import ray

    job = JobSpec.from_dict(job_dict)
    began = now_utc()
    node = f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:12]})"
    in_use: Any = contextlib.nullcontext()
    if staged is not None:
        try:
            job.input_dir, cache = _stage_inputs(staged)
            in_use = cache.use(staged.tree)
        except Exception as exc:  # noqa: BLE001 - the store or this node's disk: never the submission's fault
            return {"status": JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                        f"could not stage the inputs on {node}: {type(exc).__name__}: {exc}",
                                        started_at=began, finished_at=now_utc(), node=node),
                    "log_tail": "", "output": None, "gpu_ids": []}
    work = _node_local(job) if runner == "docker" else None
    try:
        with in_use:
            result = _execute(job, runner)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    result["status"].node = node
    return result


def _execute(job: JobSpec, runner: str) -> dict[str, Any]:
    import ray

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    cancel = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            if runner == "process":
                box["result"] = _run_process(job, cancel)
            else:
                box["result"] = _run_docker(job, cancel, gpu_ids)
        except BaseException as exc:  # noqa: BLE001 - reported as a platform error below
            box["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=work, name=f"referee-{job.job_id}", daemon=True)
    began = now_utc()  # the task holds its resources from here (statuses made below report it)
    thread.start()
    backstop = time.monotonic() + job.timeout_s + BACKSTOP_GRACE_S
    try:
        # Short joins: ray.cancel raises KeyboardInterrupt asynchronously, seen only between bytecodes.
        while thread.is_alive() and time.monotonic() < backstop:
            thread.join(0.1)
        if thread.is_alive():  # the runner did not stop the job at its deadline: stop it now
            cancel.set()
            thread.join(30)
            box["result"] = (JobStatus(JobState.FAILED, FailureReason.TIMED_OUT,
                                       f"stopped after {job.timeout_s:g}s (backstop)", started_at=began,
                                       finished_at=now_utc()), "")
    except KeyboardInterrupt:  # ray.cancel: stop the container before the worker lets go
        cancel.set()
        thread.join(30)
        raise
    if "error" in box:
        status, log_tail = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                     f"ray task error: {box['error']}", started_at=began, finished_at=now_utc()), ""
    else:
        status, log_tail = box["result"]
    output = None
    out_file = Path(job.output_dir) / job.output_file
    if status.state == JobState.SUCCEEDED and out_file.is_file() and not out_file.is_symlink():
        output = out_file.read_bytes()  # for a driver that does not share this node's disk
    return {"status": status, "log_tail": log_tail, "output": output, "gpu_ids": gpu_ids}


def remove_container(name: str) -> bool:
    """On a node: force-remove a referee sandbox container by name; True if there was one."""
    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.sandbox import MANAGED_LABEL
    client = docker_client()
    try:
        labels = client.api.inspect_container(name)["Config"].get("Labels") or {}
    except Exception:  # noqa: BLE001 - not on this node
        return False
    if MANAGED_LABEL not in labels:
        return False  # never touch a container referee did not start
    client.api.remove_container(name, force=True)
    return True


# -- the driver side --------------------------------------------------------------------------------
class RayBackend(Backend):
    """Jobs as Ray tasks with the job's resources, at most ``max_in_flight`` in Ray at once."""

    name = "ray"

    def __init__(self, workspace: Any = None, *, address: str | None = None, num_cpus: int | None = None,
                 num_gpus: int | None = None, namespace: str = "referee", max_in_flight: int = 64,
                 runner: str = "docker", stage_inputs: bool = False, poll_timeout_s: float = 0.0,
                 runtime_env: dict[str, Any] | None = None, input_store: str | None = None,
                 input_cache: str | None = None, input_cache_bytes: int | str = "100g",
                 input_store_endpoint_url: str | None = None):
        if runner not in ("docker", "process"):
            raise BackendError(f"ray backend: runner must be 'docker' or 'process', not {runner!r}")
        if max_in_flight < 1:
            raise BackendError("ray backend: max_in_flight must be at least 1")
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.namespace, self.runtime_env = namespace, runtime_env
        self.max_in_flight, self.runner = int(max_in_flight), runner
        self.poll_timeout_s = poll_timeout_s
        self.input_store = input_store or (str(LOCAL_STORE) if stage_inputs else None)
        self.stage_inputs = self.input_store is not None
        self.input_cache = str(input_cache or STAGE_ROOT)
        self.input_cache_bytes = parse_size(input_cache_bytes)
        self.input_store_endpoint_url = input_store_endpoint_url
        self._store: Any = None
        self._entries: dict[str, _Entry] = {}
        self._waiting: collections.deque[str] = collections.deque()
        self._running: dict[Any, str] = {}  # ObjectRef -> handle
        self._remote: Any = None
        self._started_cluster = False

    # -- connection ------------------------------------------------------------------------------------
    def _ray(self) -> Any:
        import ray
        if self._remote is None:
            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, num_cpus=self.num_cpus if not self.address else None,
                             num_gpus=self.num_gpus if not self.address else None, namespace=self.namespace,
                             include_dashboard=False, runtime_env=self.runtime_env, logging_level=logging.WARNING)
                except Exception as exc:
                    raise BackendError(f"ray backend: cannot connect to {self.address or 'a new local cluster'}"
                                       f": {type(exc).__name__}: {exc}") from None
                self._started_cluster = True
            self._remote = ray.remote(max_retries=0)(execute_job)
        return ray

    def task_options(self, job: JobSpec) -> dict[str, Any]:
        """The Ray resource request of a job: num_cpus, num_gpus, memory (bytes), a readable name."""
        r = job.resources
        opts: dict[str, Any] = {"num_cpus": r.cpu, "num_gpus": r.gpus, "name": f"referee:{job.job_id}"}
        if r.memory:
            opts["memory"] = int(r.memory)
        return opts

    # -- Backend interface -----------------------------------------------------------------------------
    def submit(self, job: JobSpec) -> str:
        if self.runner == "docker" and not job.image:
            raise BackendError(f"ray backend (runner docker) runs container images; job {job.job_id} has none")
        if self.runner == "process" and not job.command:
            raise BackendError(f"ray backend (runner process) runs commands; job {job.job_id} has none")
        self._ray()
        Path(job.output_dir).mkdir(parents=True, exist_ok=True)
        handle = job.job_id
        if self.runner == "docker":  # the sandbox's container name: any node can find it by handle
            from referee.platform.runtime.sandbox import container_name
            handle = container_name(job)
        if handle in self._entries and self._entries[handle].status is None:
            raise BackendError(f"ray backend: job {job.job_id} is already running")
        self._entries[handle] = _Entry(job=job)
        self._waiting.append(handle)
        self._pump()
        return handle

    def _launch(self, handle: str) -> None:
        entry = self._entries[handle]
        staged = self._stage(entry.job.input_dir) if self.stage_inputs and entry.job.input_dir else None
        ref = self._remote.options(**self.task_options(entry.job)).remote(entry.job.to_dict(), self.runner, staged)
        entry.ref = ref
        self._running[ref] = handle

    def _stage(self, input_dir: str) -> Staged:
        """Publish an input tree to the input store (each file streamed once; a tree already there is
        only hashed); the node fetches it into its cache."""
        from referee.platform.runtime.inputs import open_input_store, publish_tree
        assert self.input_store is not None
        if self._store is None:
            self._store = open_input_store(self.input_store, endpoint_url=self.input_store_endpoint_url)
        tree = publish_tree(self._store, input_dir)
        return Staged(store=self.input_store, tree=tree, cache=self.input_cache, cache_bytes=self.input_cache_bytes,
                      endpoint_url=self.input_store_endpoint_url)

    def _pump(self, block_s: float = 0.0) -> None:
        """Collect finished tasks (ray.wait), then launch waiting jobs into the free slots."""
        ray = self._ray()
        if self._running:
            refs = list(self._running)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            if not ready and block_s > 0:
                ready, _ = ray.wait(refs, num_returns=1, timeout=block_s)
            for ref in ready:
                self._harvest(ray, ref)
        while self._waiting and len(self._running) < self.max_in_flight:
            handle = self._waiting.popleft()
            try:
                self._launch(handle)
            except Exception as exc:  # staging, ray.put or the task launch: this job fails, the rest go on
                entry = self._entries.get(handle)
                if entry is not None and entry.status is None:
                    entry.status = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                             f"ray: could not launch the task: {type(exc).__name__}: "
                                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}",
                                             finished_at=now_utc())

    def _harvest(self, ray: Any, ref: Any) -> None:
        handle = self._running.pop(ref)
        entry = self._entries.get(handle)
        if entry is None or entry.status is not None:  # cancelled meanwhile
            return
        try:
            result = ray.get(ref)
        except Exception as exc:  # node lost, worker crashed, object lost: infrastructure
            entry.status = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                     f"ray: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                                     finished_at=now_utc())
            return
        entry.status, entry.log_tail, entry.output = result["status"], result["log_tail"], result["output"]

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        if self._entries:
            finals = any(self._entries[h].status for h in handles if h in self._entries)
            self._pump(block_s=0.0 if finals else self.poll_timeout_s)
        out: dict[str, JobStatus] = {}
        for h in handles:
            entry = self._entries.get(h)
            if entry is None:  # from an earlier driver: its task died with that driver; stop its container
                self._reap(h)
                out[h] = lost_handle(h, self.name)
            elif entry.status is not None:
                out[h] = entry.status
            elif entry.ref is None:
                out[h] = JobStatus(JobState.QUEUED)
            else:
                out[h] = JobStatus(JobState.RUNNING)
        return out

    def cancel(self, handle: str) -> None:
        entry = self._entries.get(handle)
        if entry is None:  # not this driver's job (e.g. `referee cancel` from another process)
            self._reap(handle)
            return
        if entry.status is not None:
            return
        entry.status = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled", finished_at=now_utc())
        if entry.ref is None:
            self._waiting.remove(handle)
            return
        self._ray().cancel(entry.ref)  # KeyboardInterrupt in the task: it kills the container, then exits
        self._running.pop(entry.ref, None)

    def _reap(self, handle: str) -> None:
        """Kill and remove a sandbox container by name on every live node (best effort)."""
        if self.runner != "docker" or not handle.startswith("referee-"):
            return
        ray = self._ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        reaper = ray.remote(num_cpus=0, max_retries=0)(remove_container)
        refs = [reaper.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(handle) for n in ray.nodes() if n.get("Alive")]
        ray.wait(refs, num_returns=len(refs), timeout=30)

    def logs(self, handle: str, tail: int = 65536) -> str:
        entry = self._entries.get(handle)
        if entry is None:
            return ""
        if entry.log_tail:
            return entry.log_tail[-tail:]
        from referee.platform.runtime.sandbox import log_path_for, read_log_tail
        return read_log_tail(log_path_for(entry.job), tail)

    def collect(self, handle: str, job: JobSpec) -> Path:
        out = Path(job.output_dir)
        entry = self._entries.get(handle)
        target = out / job.output_file
        if entry is not None and entry.output is not None and not target.exists():
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / f".{job.output_file}.part"
            tmp.write_bytes(entry.output)
            os.replace(tmp, target)
        return out

    def cleanup(self, handle: str) -> None:
        entry = self._entries.get(handle)
        if entry is not None and entry.status is not None:
            del self._entries[handle]

    def close(self) -> None:
        """Forget finished jobs; shut down the local cluster if this backend started it."""
        self._entries = {h: e for h, e in self._entries.items() if e.status is None}
        if self._started_cluster and not self._entries:
            import ray
            ray.shutdown()
            self._started_cluster = False
            self._remote = None
