"""Docker backend: sandboxed containers on one Docker engine, N at a time.

Each job runs ``run_job_in_docker`` on one of ``slots`` worker threads, so ``poll`` only reads state.
A job that asks for GPUs holds distinct ones of this host's (a pool per host) while it runs.
A worker hands the removal of an exited container (and of its output mount) to a cleaner thread and
takes its next job at once; the cleaner reports the job when it has left nothing behind, and wakes
whoever asked through ``notify`` (the controller polls at once).
The handle is the container's name, which is stable and unique per attempt; a scheduler that restarts
hands its old handles to ``poll`` and the backend re-attaches to those containers through their labels
(the job spec and deadline travel with the container).
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from referee.platform.core.backend import Backend, lost_handle
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    now_utc,
)
from referee.platform.runtime.engine import docker_client
from referee.platform.runtime.gpus import GpuUnavailable, gpu_inventory, pool_for
from referee.platform.runtime.sandbox import (
    attach_job_in_docker,
    container_name,
    job_of_container,
    log_path_for,
    read_log_tail,
    run_job_in_docker,
    sweep_stale_outputs,
)


@dataclass
class _Task:
    handle: str
    job: JobSpec | None  # None until a re-attached container's spec is read
    attach: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    started_at: Any = None
    result: JobStatus | None = None
    log_path: Path | None = None


class DockerBackend(Backend):
    """Runs container jobs on a Docker engine with at most ``slots`` containers at once."""

    name = "docker"

    def __init__(self, workspace: Any = None, *, slots: int = 4, base_url: str | None = None,
                 client: Any = None, timeout: float = 120.0, gpu_ids: list[str] | int | None = None):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = int(slots)
        self.gpu_ids = gpu_inventory(gpu_ids)  # this host's GPUs: each running job holds its own
        self._base_url = base_url
        self._timeout = timeout
        self._client = client
        self._tasks: dict[str, _Task] = {}
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._swept = False
        self._wakers: list[Callable[[], None]] = []
        self._cleanups: queue.Queue[tuple[_Task, JobStatus, Callable[[], None]]] = queue.Queue()
        self._cleaner: threading.Thread | None = None

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = docker_client(self._base_url, timeout=self._timeout, pool=self.slots * 2 + 8)
            return self._client

    # -- the Backend interface -----------------------------------------------------------------------
    def submit(self, job: JobSpec) -> str:
        if not job.image:
            raise ValueError(f"the docker backend runs container images; job {job.job_id} has none "
                             "(prediction files are scored directly)")
        task = _Task(handle=container_name(job), job=job, log_path=log_path_for(job))
        self._enqueue(task)
        return task.handle

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for h in handles:
            task = self._tasks.get(h) or self._reattach(h)
            if task is None:
                out[h] = lost_handle(h, self.name)
            elif task.result is not None:
                out[h] = task.result
            elif task.started_at is not None:
                out[h] = JobStatus(JobState.RUNNING, started_at=task.started_at)
            else:
                out[h] = JobStatus(JobState.QUEUED)
        return out

    def cancel(self, handle: str) -> None:
        task = self._tasks.get(handle)
        if task is not None:
            if task.result is not None:
                return
            task.cancel.set()
        try:  # wake the worker at once (or stop a container this process does not know)
            self.client.api.kill(handle)
        except Exception:  # noqa: BLE001 - not running, or already gone
            pass
        if task is None:
            try:
                self.client.api.remove_container(handle, force=True)
            except Exception:  # noqa: BLE001
                pass

    def logs(self, handle: str, tail: int = 65536) -> str:
        task = self._tasks.get(handle)
        if task is not None and task.result is not None and task.log_path is not None:
            return read_log_tail(task.log_path, tail)
        try:  # still running: ask the engine
            data = self.client.api.logs(handle, stdout=True, stderr=True, tail=200)
            return data[-tail:].decode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            return read_log_tail(task.log_path, tail) if task and task.log_path else ""

    def collect(self, handle: str, job: JobSpec) -> Path:
        return Path(job.output_dir)  # run_job_in_docker already copied the prediction file there

    def cleanup(self, handle: str) -> None:
        with self._lock:
            self._tasks.pop(handle, None)

    def notify(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake not in self._wakers:
                self._wakers.append(wake)

    def close(self) -> None:
        """Let the workers exit once idle (a later submit starts fresh ones). Containers still running
        keep running; a new backend re-attaches to them by handle."""
        with self._lock:
            old, n = self._queue, len(self._workers)
            self._queue, self._workers = queue.Queue(), []
        for _ in range(n):
            old.put(None)

    # -- internals -----------------------------------------------------------------------------------
    def _enqueue(self, task: _Task) -> None:
        with self._lock:
            self._tasks[task.handle] = task
            if not self._swept:  # once: output mounts of runs that died with their process
                self._swept = True
                threading.Thread(target=self._sweep, daemon=True, name="referee-docker-sweep").start()
            if len(self._workers) < self.slots:
                t = threading.Thread(target=self._work, args=(self._queue,), daemon=True,
                                     name=f"referee-docker-{len(self._workers)}")
                self._workers.append(t)
                t.start()
            self._queue.put(task)

    def _sweep(self) -> None:
        try:
            sweep_stale_outputs(self.client)
        except Exception:  # noqa: BLE001 - housekeeping only
            pass

    def _reattach(self, handle: str) -> _Task | None:
        """A handle from an earlier process: adopt its container if it still exists."""
        job = job_of_container(self.client, handle)
        if job is None:
            return None
        task = _Task(handle=handle, job=job, attach=True, log_path=log_path_for(job), started_at=now_utc())
        self._enqueue(task)
        return task

    def _work(self, jobs: "queue.Queue[_Task | None]") -> None:
        while True:
            task = jobs.get()
            if task is None:
                return
            cleanups: list[Callable[[], None]] = []
            try:
                status = self._run(task, cleanups.append)
            except Exception as exc:  # noqa: BLE001 - never lose a job to a worker crash
                status = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                   f"docker backend error: {type(exc).__name__}: {exc}", finished_at=now_utc())
            if cleanups:
                self._clean_later(task, status, cleanups[0])
            else:
                self._report(task, status)

    def _report(self, task: _Task, status: JobStatus) -> None:
        task.result = status
        for wake in list(self._wakers):
            wake()

    def _clean_later(self, task: _Task, status: JobStatus, cleanup: Callable[[], None]) -> None:
        with self._lock:
            self._cleanups.put((task, status, cleanup))
            if self._cleaner is None:
                self._cleaner = threading.Thread(target=self._clean, daemon=True, name="referee-docker-cleaner")
                self._cleaner.start()

    def _clean(self) -> None:
        """Remove exited containers, then report their jobs; exits once idle (a later job starts another)."""
        while True:
            try:
                task, status, cleanup = self._cleanups.get(timeout=2.0)
            except queue.Empty:
                with self._lock:
                    if self._cleanups.empty():
                        self._cleaner = None
                        return
                continue
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - housekeeping: the engine reaps what is left
                pass
            self._report(task, status)

    def _run(self, task: _Task, defer_cleanup: Callable[[Callable[[], None]], None]) -> JobStatus:
        def started(_cid: str) -> None:
            task.started_at = task.started_at or now_utc()

        if task.cancel.is_set():
            return JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled before it started")
        if task.attach:
            status = attach_job_in_docker(task.handle, client=self.client, cancel_event=task.cancel,
                                          on_started=started)
            return status or lost_handle(task.handle, self.name)
        assert task.job is not None
        if task.job.resources.gpus <= 0 or not self.gpu_ids:  # no inventory: the engine picks (or refuses)
            return run_job_in_docker(task.job, client=self.client, cancel_event=task.cancel, on_started=started,
                                     defer_cleanup=defer_cleanup)
        pool = pool_for(self._base_url or os.environ.get("DOCKER_HOST") or "local", self.gpu_ids)
        try:
            ids = pool.acquire(int(task.job.resources.gpus), task.cancel)
        except GpuUnavailable as exc:
            reason = FailureReason.CANCELLED if task.cancel.is_set() else FailureReason.PLATFORM_ERROR
            return JobStatus(JobState.CANCELLED if task.cancel.is_set() else JobState.FAILED, reason, str(exc),
                             finished_at=now_utc())
        try:
            return run_job_in_docker(task.job, client=self.client, cancel_event=task.cancel, on_started=started,
                                     gpu_device_ids=ids, defer_cleanup=defer_cleanup)
        finally:
            pool.release(ids)
