"""Ray backend: each job is supervised by a detached, named Ray actor that runs the sandboxed container on
its node's Docker engine, so a job outlives the scheduler that started it.

**Supervision lives in the cluster.** The supervisor of a job is an actor named after the job's handle
(the sandbox's container name), in the backend's namespace, with ``lifetime="detached"`` and the job's
resources (``num_cpus``, ``num_gpus``, ``memory``): Ray places it on a node that has them and keeps it
when the driver goes away (``kill -9`` of ``referee run``, a Ray Client that lost its connection). There
it calls ``run_job_in_docker`` (the same sandbox the docker backend uses) with the GPUs Ray assigned.
A restarted scheduler finds it by name and collects its result: a container never runs twice because the
scheduler died. A finished supervisor keeps its result ``hold_s`` seconds for its scheduler; if none
comes, it hands the result to a holder actor that takes no resources and exits, freeing its node.

**Node loss** ends the supervisor (it dies with its node): the job is a platform failure (retried, never
charged) and its container, which may still run under the node's Docker engine, is removed by name on
every live node; a node that comes back removes, when its next job starts, every container of this
cluster whose supervisor is gone, so an orphan never keeps a GPU.

At most ``max_in_flight`` supervisors are in Ray at once; further submissions wait in the backend. The
shards of one submission are spread over nodes (``SPREAD``), so one lost node costs one shard.

Nodes share nothing with the scheduler but a registry and an input store. A container job runs its
image by registry digest (the node pulls it once, with its own Docker credentials) in a node-local
work directory; the prediction file comes back in the supervisor's result. With ``input_store`` (or
``stage_inputs``) the competition's inputs are published once as a content-addressed tree and every
node materialises each tree once into its ``input_cache``, mounted read-only into each job.

Options: ``address`` (``ray://host:10001``, ``auto`` for a cluster on this machine, or none to start a
local one), ``num_cpus``/``num_gpus`` for a local start, ``namespace`` (default ``referee``),
``max_in_flight``, ``runner`` (``docker``, or ``process`` for a host's trusted commands), ``input_store``
(``s3://bucket/prefix`` or a directory the nodes can read), ``input_cache`` (on each node; default
/tmp/referee-ray-inputs), ``input_cache_bytes`` (LRU bound, default 100g), ``stage_inputs`` (true: a
directory store on this machine, for one-machine clusters), ``hold_s`` (60), ``capacity_check`` (true:
refuse a request larger than every live node; false for an autoscaling cluster whose nodes come later).
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
from referee.platform.core.errors import BackendError, BackendUnavailable
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    now_utc,
)
from referee.platform.core.units import parse_size

LOG_TAIL_BYTES = 1 << 16
BACKSTOP_GRACE_S = 60.0  # the sandbox enforces the timeout; the supervisor stops waiting this much later
LONG_POLL_S = 20.0  # a driver's wait() on a supervisor returns at the latest after this long
HOLDER_SUFFIX = "~result"  # the name of the actor that keeps a result nobody collected
CAPACITY_TTL_S = 30.0
STAGE_ROOT = Path(os.environ.get("REFEREE_RAY_STAGE", "/tmp/referee-ray-inputs"))  # the default node cache
LOCAL_STORE = Path(os.environ.get("REFEREE_RAY_STORE", "/tmp/referee-input-store"))  # stage_inputs: true
NODE_WORK = Path(os.environ.get("REFEREE_NODE_WORK", "/tmp/referee-node"))  # a job's files on its node
CLUSTER_LABEL = "referee.ray.cluster"  # on a container: the GCS address of the cluster that started it
NAMESPACE_LABEL = "referee.ray.namespace"


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
    job: JobSpec | None  # None for a job re-attached from an earlier scheduler (the controller has its spec)
    actor: Any = None  # the supervisor's handle once launched
    holder: Any = None  # the result holder of a supervisor that handed its result off
    ref: Any = None  # the outstanding wait() call
    started_at: Any = None  # set once the supervisor runs on a node
    node: str | None = None
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


def _cluster_id() -> str:
    import ray
    return str(ray.get_runtime_context().gcs_address or "")


def _node_local(job: JobSpec, namespace: str | None = None) -> Path:
    """Run a container job in a work directory of this node (the scheduler's paths need not exist here);
    the container keeps the name the scheduler knows it by, and says which cluster started it."""
    from referee.platform.runtime.sandbox import NAME_LABEL, container_name
    job.labels = {**job.labels, NAME_LABEL: container_name(job), CLUSTER_LABEL: _cluster_id()}
    if namespace:
        job.labels[NAMESPACE_LABEL] = namespace
    work = NODE_WORK / f"{job.job_id}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "output").mkdir(parents=True)
    job.output_dir = str(work / "output")
    return work


def sweep_orphans(namespace: str) -> list[str]:
    """On a node: remove this cluster's job containers (of ``namespace``) whose supervisor is gone (its
    node died, and this is that machine come back): an orphan never keeps a GPU. Returns their names."""
    import ray

    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.sandbox import MANAGED_LABEL, NAME_LABEL
    client = docker_client()
    removed = []
    filters = {"label": [MANAGED_LABEL, f"{CLUSTER_LABEL}={_cluster_id()}", f"{NAMESPACE_LABEL}={namespace}"]}
    for c in client.api.containers(all=True, filters=filters):
        name = (c.get("Labels") or {}).get(NAME_LABEL)
        if not name:
            continue
        try:
            ray.get_actor(name, namespace=namespace)
            continue  # its supervisor lives
        except ValueError:
            pass
        try:
            client.api.remove_container(c["Id"], force=True)
            removed.append(name)
        except Exception:  # noqa: BLE001 - gone already
            pass
    return removed


def execute_job(job_dict: dict[str, Any], runner: str, staged: Staged | None = None,
                cancel: threading.Event | None = None, namespace: str | None = None) -> dict[str, Any]:
    """Run one job on this node (the supervisor's work; also usable as a plain Ray task)."""
    import contextlib

    import ray

    job = JobSpec.from_dict(job_dict)
    cancel = cancel or threading.Event()
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
    work = _node_local(job, namespace) if runner == "docker" else None
    try:
        with in_use:
            result = _execute(job, runner, cancel)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    result["status"].node = node
    return result


def _execute(job: JobSpec, runner: str, cancel: threading.Event) -> dict[str, Any]:
    import ray

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
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
    began = now_utc()  # the job holds its resources from here (statuses made below report it)
    thread.start()
    backstop = time.monotonic() + job.timeout_s + BACKSTOP_GRACE_S
    try:
        # Short joins: ray.cancel of a plain task raises KeyboardInterrupt, seen only between bytecodes.
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


class JobSupervisor:
    """One job on its node, as a detached named actor (see the module docstring). Its methods answer
    while the job runs (a threaded actor): ``wait`` (the driver's long poll), ``cancel``."""

    def __init__(self, job_dict: dict[str, Any], runner: str, staged: Staged | None, name: str, namespace: str,
                 hold_s: float):
        import ray
        self.name, self.namespace, self.hold_s = name, namespace, hold_s
        self.cancel_event, self.done = threading.Event(), threading.Event()
        self.result: dict[str, Any] | None = None
        self.started_at = now_utc()
        self.node = f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:12]})"
        threading.Thread(target=self._run, args=(job_dict, runner, staged), name=f"referee-{name}",
                         daemon=True).start()

    def _run(self, job_dict: dict[str, Any], runner: str, staged: Staged | None) -> None:
        try:
            if runner == "docker":
                try:
                    sweep_orphans(self.namespace)
                except Exception:  # noqa: BLE001 - housekeeping must never fail the job
                    pass
            self.result = execute_job(job_dict, runner, staged, self.cancel_event, self.namespace)
        except BaseException as exc:  # noqa: BLE001
            self.result = {"status": JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                               f"ray supervisor error: {type(exc).__name__}: {exc}",
                                               started_at=self.started_at, finished_at=now_utc(), node=self.node),
                           "log_tail": "", "output": None}
        finally:
            self.done.set()
        time.sleep(self.hold_s)  # the scheduler collects (and kills this actor) meanwhile, as a rule
        self._hand_off()

    def _hand_off(self) -> None:
        """Nobody collected the result: give it to a holder that takes no resources, then leave."""
        import ray
        try:
            holder: Any = ray.remote(ResultHolder).options(
                name=self.name + HOLDER_SUFFIX, namespace=self.namespace, lifetime="detached", num_cpus=0,
                max_restarts=0).remote(self.result)
            ray.get(holder.ready.remote(), timeout=300)
        except Exception:  # noqa: BLE001 - keep the result (and the node) rather than lose it
            return
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def wait(self, seen_start: bool, timeout: float) -> dict[str, Any] | None:
        """The driver's long poll: at once where and since when it runs (the first call), then the result
        when the job ends within ``timeout``, else None."""
        if not seen_start:
            return {"phase": "running", "started_at": self.started_at, "node": self.node}
        if self.done.wait(timeout):
            return {"phase": "done", **(self.result or {})}
        return None

    def cancel(self, timeout: float = 30.0) -> bool:
        """Stop the job (its container is killed and removed); True once it has stopped."""
        self.cancel_event.set()
        return self.done.wait(timeout)


class ResultHolder:
    """Keeps a finished job's result for a scheduler that was away (no resources of its own)."""

    def __init__(self, result: dict[str, Any] | None):
        self.result = result

    def ready(self) -> bool:
        return True

    def wait(self, seen_start: bool, timeout: float) -> dict[str, Any] | None:
        return {"phase": "done", **(self.result or {})}


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


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, cut to 300 characters (Ray's can run to pages)."""
    return (str(exc).splitlines() or [""])[0][:300]


def _live_nodes(ray: Any) -> list[dict[str, float]]:
    """The resources of each live node of the cluster."""
    return [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]


def _largest(nodes: list[dict[str, float]]) -> dict[str, float]:
    return max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0), n.get("memory", 0)), default={})


def _fmt_resources(res: dict[str, float]) -> str:
    parts = [f"{res.get('CPU', 0):g} CPU", f"{res.get('GPU', 0):g} GPU"]
    if res.get("memory"):
        parts.append(f"{res['memory'] / 2**30:.1f} GiB")
    return ", ".join(parts)


# -- the driver side --------------------------------------------------------------------------------
class RayBackend(Backend):
    """Jobs supervised by detached Ray actors with the job's resources, at most ``max_in_flight`` at once."""

    name = "ray"
    poll_interval_s = 0.2
    max_poll_interval_s = 2.0

    def __init__(self, workspace: Any = None, *, address: str | None = None, num_cpus: int | None = None,
                 num_gpus: int | None = None, namespace: str = "referee", max_in_flight: int = 64,
                 runner: str = "docker", stage_inputs: bool = False, poll_timeout_s: float = 0.0,
                 runtime_env: dict[str, Any] | None = None, input_store: str | None = None,
                 input_cache: str | None = None, input_cache_bytes: int | str = "100g",
                 input_store_endpoint_url: str | None = None, hold_s: float = 60.0, capacity_check: bool = True):
        if runner not in ("docker", "process"):
            raise BackendError(f"ray backend: runner must be 'docker' or 'process', not {runner!r}")
        if max_in_flight < 1:
            raise BackendError("ray backend: max_in_flight must be at least 1")
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.namespace, self.runtime_env = namespace, runtime_env
        self.max_in_flight, self.runner = int(max_in_flight), runner
        self.poll_timeout_s = poll_timeout_s
        self.hold_s, self.capacity_check = float(hold_s), capacity_check
        self.input_store = input_store or (str(LOCAL_STORE) if stage_inputs else None)
        self.stage_inputs = self.input_store is not None
        self.input_cache = str(input_cache or STAGE_ROOT)
        self.input_cache_bytes = parse_size(input_cache_bytes)
        self.input_store_endpoint_url = input_store_endpoint_url
        self._store: Any = None
        self._entries: dict[str, _Entry] = {}
        self._waiting: collections.deque[str] = collections.deque()
        self._running: dict[Any, str] = {}  # outstanding wait() ref -> handle
        self._supervisor: Any = None
        self._nodes: tuple[float, list[dict[str, float]]] | None = None
        self._started_cluster = False

    # -- connection ------------------------------------------------------------------------------------
    def _ray(self) -> Any:
        import ray
        if self._supervisor is None:
            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, num_cpus=self.num_cpus if not self.address else None,
                             num_gpus=self.num_gpus if not self.address else None, namespace=self.namespace,
                             include_dashboard=False, runtime_env=self.runtime_env, logging_level=logging.WARNING)
                except (ConnectionError, TimeoutError) as exc:
                    raise BackendUnavailable(f"ray backend: cannot reach {self.address}: {exc}",
                                             hint="check that the Ray head runs and its address") from None
                except Exception as exc:
                    raise BackendError(f"ray backend: cannot connect to {self.address or 'a new local cluster'}"
                                       f": {type(exc).__name__}: {exc}") from None
                self._started_cluster = True  # so close() lets go of the connection (or the local cluster)
            self._supervisor = ray.remote(JobSupervisor)
        return ray

    def task_options(self, job: JobSpec) -> dict[str, Any]:
        """The Ray resource request of a job: num_cpus, num_gpus, memory (bytes), a readable name."""
        r = job.resources
        opts: dict[str, Any] = {"num_cpus": r.cpu, "num_gpus": r.gpus, "name": f"referee:{job.job_id}"}
        if r.memory:
            opts["memory"] = int(r.memory)
        return opts

    def handle_of(self, job: JobSpec) -> str:
        """A job's handle, which is also its supervisor's name: the sandbox's container name (any node
        can find the container by it), or the job id for the process runner."""
        if self.runner == "docker":
            from referee.platform.runtime.sandbox import container_name
            return container_name(job)
        return job.job_id

    # -- Backend interface -----------------------------------------------------------------------------
    def submit(self, job: JobSpec) -> str:
        if self.runner == "docker" and not job.image:
            raise BackendError(f"ray backend (runner docker) runs container images; job {job.job_id} has none")
        if self.runner == "process" and not job.command:
            raise BackendError(f"ray backend (runner process) runs commands; job {job.job_id} has none")
        self._ray()
        Path(job.output_dir).mkdir(parents=True, exist_ok=True)
        handle = self.handle_of(job)
        if handle in self._entries and self._entries[handle].status is None:
            raise BackendError(f"ray backend: job {job.job_id} is already running")
        self._entries[handle] = _Entry(job=job)
        self._waiting.append(handle)
        self._pump()
        return handle

    def _launch(self, handle: str) -> None:
        ray = self._ray()
        entry = self._entries[handle]
        job = entry.job
        assert job is not None
        staged = self._stage(job.input_dir) if self.stage_inputs and job.input_dir else None
        opts = self.task_options(job)
        opts.update(name=handle, namespace=self.namespace, lifetime="detached", max_restarts=0, max_concurrency=8)
        if job.shards > 1:
            opts["scheduling_strategy"] = "SPREAD"  # shards of one submission on different nodes where possible
        try:
            entry.actor = self._supervisor.options(**opts).remote(job.to_dict(), self.runner, staged, handle,
                                                                  self.namespace, self.hold_s)
        except ValueError:  # the name is taken: this very job runs already (an earlier dispatch): attach to it
            entry.actor = ray.get_actor(handle, namespace=self.namespace)
        self._await(handle)

    def _await(self, handle: str) -> None:
        entry = self._entries[handle]
        target = entry.actor if entry.holder is None else entry.holder
        ref = target.wait.remote(entry.started_at is not None, LONG_POLL_S)
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
        """Collect answers of the supervisors (ray.wait), then launch waiting jobs into the free slots."""
        ray = self._ray()
        try:
            if self._running:
                refs = list(self._running)
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                if not ready and block_s > 0:
                    ready, _ = ray.wait(refs, num_returns=1, timeout=block_s)
                for ref in ready:
                    self._harvest(ray, ref)
        except (ConnectionError, ray.exceptions.RaySystemError) as exc:
            raise BackendUnavailable(f"ray backend: the cluster does not answer: {exc}",
                                     hint="check that the Ray head runs") from None
        while self._waiting and len(self._running) < self.max_in_flight:
            handle = self._waiting.popleft()
            try:
                self._launch(handle)
            except Exception as exc:  # staging or the actor launch: this job fails, the rest go on
                entry = self._entries.get(handle)
                if entry is not None and entry.status is None:
                    entry.status = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                             f"ray: could not launch the job: {type(exc).__name__}: "
                                             f"{_first_line(exc)}",
                                             finished_at=now_utc())

    def _harvest(self, ray: Any, ref: Any) -> None:
        handle = self._running.pop(ref)
        entry = self._entries.get(handle)
        if entry is None or entry.status is not None:  # cancelled meanwhile
            return
        try:
            answer = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            self._await(handle)  # unreachable for a moment (a network blip): ask again
            return
        except ray.exceptions.RayActorError as exc:
            if entry.holder is None and self._find_holder(ray, handle, entry):
                self._await(handle)  # it handed its result off while nobody collected it
                return
            entry.status = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                     f"ray: the job's supervisor died (its node was lost?): "
                                     f"{_first_line(exc)}", finished_at=now_utc(), node=entry.node)
            self._reap(handle)  # its container may still run under that node's engine
            return
        except Exception as exc:  # noqa: BLE001 - object lost, worker crashed: infrastructure
            entry.status = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                     f"ray: {type(exc).__name__}: {_first_line(exc)}",
                                     finished_at=now_utc(), node=entry.node)
            return
        if answer is None:
            self._await(handle)
        elif answer["phase"] == "running":
            entry.started_at, entry.node = answer["started_at"], answer["node"]
            self._await(handle)
        else:
            entry.status, entry.log_tail, entry.output = answer["status"], answer["log_tail"], answer["output"]

    def _find_holder(self, ray: Any, handle: str, entry: _Entry) -> bool:
        try:
            entry.holder = ray.get_actor(handle + HOLDER_SUFFIX, namespace=self.namespace)
        except ValueError:
            return False
        entry.started_at = entry.started_at or now_utc()
        return True

    def _reattach(self, handle: str) -> _Entry | None:
        """A job an earlier scheduler started: its supervisor (or result holder) by name, or None."""
        ray = self._ray()
        entry = _Entry(job=None)
        try:
            entry.actor = ray.get_actor(handle, namespace=self.namespace)
        except ValueError:
            if not self._find_holder(ray, handle, entry):
                return None
        self._entries[handle] = entry
        self._await(handle)
        return entry

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        if self._entries:
            finals = any(self._entries[h].status for h in handles if h in self._entries)
            self._pump(block_s=0.0 if finals else self.poll_timeout_s)
        out: dict[str, JobStatus] = {}
        for h in handles:
            entry = self._entries.get(h) or self._reattach(h)
            if entry is None:  # no supervisor and no result: lost; stop a container it may have left
                self._reap(h)
                out[h] = lost_handle(h, self.name)
            elif entry.status is not None:
                out[h] = entry.status
            elif entry.started_at is None:
                out[h] = JobStatus(JobState.QUEUED)
            else:
                out[h] = JobStatus(JobState.RUNNING, started_at=entry.started_at, node=entry.node)
        return out

    def locate(self, job: JobSpec) -> str | None:
        handle = self.handle_of(job)
        if handle in self._entries:
            return handle
        entry = self._reattach(handle)
        if entry is None:
            return None
        entry.job = job
        return handle

    def cancel(self, handle: str) -> None:
        entry = self._entries.get(handle) or self._reattach(handle)
        if entry is None:  # nothing supervises it: stop a container it may have left
            self._reap(handle)
            return
        if entry.status is not None:
            return
        entry.status = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled", finished_at=now_utc())
        if entry.actor is None and entry.holder is None:
            self._waiting.remove(handle)
            return
        ray = self._ray()
        stopped = entry.started_at is None or entry.holder is not None
        if not stopped:
            try:  # the supervisor kills and removes its container before it answers
                stopped = bool(ray.get(entry.actor.cancel.remote(30.0), timeout=45))
            except Exception:  # noqa: BLE001 - its node is gone: reaped below
                stopped = False
        self._running.pop(entry.ref, None)
        self._kill(entry)
        if not stopped:
            self._reap(handle)

    def _kill(self, entry: _Entry) -> None:
        ray = self._ray()
        for actor in (entry.actor, entry.holder):
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - dead already
                    pass

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

    def waiting_reason(self, handle: str) -> str | None:
        """Ray's own view of a job it has not placed: the actor's state and its unmet resource request
        against what the cluster has free."""
        entry = self._entries.get(handle)
        if entry is None or entry.started_at is not None or entry.actor is None:
            return None
        ray = self._ray()
        from ray._private import state
        try:
            info = state.actors(actor_id=entry.actor._actor_id.hex()) or {}
        except Exception:  # noqa: BLE001 - the GCS table is a convenience
            info = {}
        want = ""
        if entry.job is not None:
            r = entry.job.resources
            want = f"it asks for {_fmt_resources({'CPU': r.cpu, 'GPU': r.gpus, 'memory': r.memory})}; "
        largest = _largest(_live_nodes(ray))
        return (f"pending in Ray ({info.get('State', 'PENDING_CREATION')}): {want}free in the cluster now: "
                f"{_fmt_resources(ray.available_resources())}; largest node: {_fmt_resources(largest)}")

    def unsatisfiable(self, job: JobSpec) -> str | None:
        """A request larger than every live node of the cluster (``capacity_check: false`` for an
        autoscaling cluster whose bigger nodes come later)."""
        if not self.capacity_check:
            return None
        ray = self._ray()
        if self._nodes is None or time.monotonic() - self._nodes[0] > CAPACITY_TTL_S:
            self._nodes = (time.monotonic(), _live_nodes(ray))
        nodes = self._nodes[1]
        r = job.resources
        need = {"CPU": r.cpu, "GPU": float(r.gpus), "memory": float(r.memory or 0)}
        if not nodes or any(all(n.get(k, 0.0) >= v for k, v in need.items() if v) for n in nodes):
            return None
        return (f"no node of the Ray cluster can run a job that asks for {_fmt_resources(need)} (the largest "
                f"has {_fmt_resources(_largest(nodes))}); lower resources in the competition, add such a node, or set "
                "the backend option capacity_check: false for an autoscaling cluster")

    def logs(self, handle: str, tail: int = 65536) -> str:
        entry = self._entries.get(handle)
        if entry is None:
            return ""
        if entry.log_tail or entry.job is None:
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
        """The result is collected: the supervisor (or holder) goes, and with it the job's reservation."""
        entry = self._entries.get(handle)
        if entry is not None and entry.status is not None:
            self._running.pop(entry.ref, None)
            self._kill(entry)
            del self._entries[handle]

    def close(self) -> None:
        """Forget finished jobs (running ones keep running, supervised in the cluster); shut down the
        local cluster if this backend started it and nothing runs there."""
        for handle, entry in list(self._entries.items()):
            if entry.status is not None:
                self.cleanup(handle)
        if self._started_cluster and not self._entries:
            import ray
            ray.shutdown()
            self._started_cluster = False
            self._supervisor = None
