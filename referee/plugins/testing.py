"""Test doubles as an opt-in plugin (like pytest's ``pytester``): never registered in a plain install.

Register it explicitly, e.g. ``PluginManager(extra=[referee.plugins.testing])``, to get the ``fake``
backend: an in-memory backend for unit tests of the controller's logic (never a test of a real backend).

Each job follows a script: a list of outcomes consumed per attempt, keyed by submission id, e.g.
``{7: ["platform_error", "ok"]}``; unscripted jobs succeed. "ok" writes ``output`` (a callable
``job -> str`` or a string) into the job's output file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from referee.platform.core.backend import Backend, lost_handle
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    now_utc,
)
from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import BackendInfo


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, script: dict[int, list[str]] | None = None,
                 output: str | Callable[[JobSpec], str] | None = None, polls_to_finish: int = 1):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.output = output
        self.polls_to_finish = polls_to_finish
        self.jobs: dict[str, JobSpec] = {}
        self.submitted: list[JobSpec] = []
        self.cancelled: list[str] = []
        self._polls: dict[str, int] = {}
        self._status: dict[str, JobStatus] = {}
        self.max_seen_in_flight = 0
        self._running = 0  # submitted and not yet final

    def submit(self, job: JobSpec) -> str:
        self.jobs[job.job_id] = job
        self.submitted.append(job)
        self._polls[job.job_id] = 0
        self._running += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self._running)
        return job.job_id

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        out = {}
        for h in handles:
            if h not in self.jobs:
                out[h] = lost_handle(h, self.name)
                continue
            if h in self._status:
                out[h] = self._status[h]
                continue
            self._polls[h] += 1
            if self._polls[h] < self.polls_to_finish:
                out[h] = JobStatus(JobState.RUNNING, started_at=now_utc())
                continue
            out[h] = self._status[h] = self._finish(self.jobs[h])
            self._running -= 1
        return out

    def _finish(self, job: JobSpec) -> JobStatus:
        steps = self.script.get(job.submission_id, [])
        outcome = steps.pop(0) if steps else "ok"
        t = now_utc()
        if outcome == "ok":
            self.output_for(job)
            return JobStatus(JobState.SUCCEEDED, exit_code=0, started_at=t, finished_at=t, node="fake")
        reason = FailureReason(outcome)
        return JobStatus(JobState.FAILED, reason, f"scripted {outcome}", exit_code=1, started_at=t,
                         finished_at=t, node="fake")

    def output_for(self, job: JobSpec) -> None:
        """Write the job's output file as a successful run would (nothing when ``output`` is None)."""
        if self.output is not None:
            text = self.output(job) if callable(self.output) else self.output
            out = Path(job.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / job.output_file).write_text(text)

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        if handle in self.jobs and handle not in self._status:
            self._status[handle] = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled")
            self._running -= 1

    def logs(self, handle: str, tail: int = 65536) -> str:
        return f"fake log for {handle}\n"[-tail:]


@hookimpl
def referee_backends() -> list[BackendInfo]:
    return [BackendInfo(name="fake", factory=lambda options, workspace: FakeBackend(**options),
                        description="in-memory backend for tests of scheduling logic (referee.plugins.testing)",
                        runs_images=True)]
