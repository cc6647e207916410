"""Test doubles as an opt-in plugin (like pytest's ``pytester``): never registered in a plain install.

Register it explicitly, e.g. ``PluginManager(extra=[referee.plugins.testing])``, to get the ``fake``
backend: an in-memory backend for unit tests of the controller's logic (never a test of a real backend).

Each job follows a script: a list of outcomes consumed per attempt, keyed by submission id, e.g.
``{7: ["platform_error", "ok"]}``; unscripted jobs succeed. "ok" writes ``output`` (a callable
``job -> str`` or a string) into the job's output file; "retried_ok" succeeds after one try the backend
made (and lost) on its own, as AWS Batch's retryStrategy would.

Control-plane trouble: while ``down`` is true every call raises ``BackendUnavailable`` (``calls`` counts
what was attempted); ``throttle_logs`` makes that many ``logs`` calls raise it first. ``queued`` keeps the
jobs of the listed submissions queued with the backend's reason for waiting; ``refuse`` is what
``unsatisfiable`` answers.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

from referee.platform.core.backend import Backend, lost_handle
from referee.platform.core.errors import BackendUnavailable
from referee.platform.core.jobs import (
    BackendAttempt,
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
        self.down = False
        self.calls: dict[str, int] = {}
        self.throttle_logs = 0
        self.queued: dict[int, str] = {}  # submission id -> why its jobs wait
        self.refuse: str | None = None

    def _call(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if self.down:
            raise BackendUnavailable(f"fake backend: {what}: the endpoint does not answer",
                                     hint="bring the fake endpoint back")

    def unsatisfiable(self, job: JobSpec) -> str | None:
        return self.refuse

    def submit(self, job: JobSpec) -> str:
        self._call("submit")
        self.jobs[job.job_id] = job
        self.submitted.append(job)
        self._polls[job.job_id] = 0
        self._running += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self._running)
        return job.job_id

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        self._call("poll")
        out = {}
        for h in handles:
            if h not in self.jobs:
                out[h] = lost_handle(h, self.name)
                continue
            if h in self._status:
                out[h] = self._status[h]
                continue
            if self.jobs[h].submission_id in self.queued:
                out[h] = JobStatus(JobState.QUEUED, message=self.queued[self.jobs[h].submission_id])
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
        if outcome in ("ok", "retried_ok"):
            self.output_for(job)
            tried = [] if outcome == "ok" else [BackendAttempt(t - dt.timedelta(hours=1), t - dt.timedelta(minutes=30),
                                                              FailureReason.PLATFORM_ERROR, "Host EC2 terminated")]
            return JobStatus(JobState.SUCCEEDED, exit_code=0, started_at=t - dt.timedelta(minutes=30), finished_at=t,
                             node="fake", backend_attempts=tried)
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
        self._call("cancel")
        self.cancelled.append(handle)
        if handle in self.jobs and handle not in self._status:
            self._status[handle] = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled")
            self._running -= 1

    def logs(self, handle: str, tail: int = 65536) -> str:
        self._call("logs")
        if self.throttle_logs > 0:
            self.throttle_logs -= 1
            raise BackendUnavailable("fake backend: logs: Rate exceeded (ThrottlingException)")
        return f"fake log for {handle}\n"[-tail:]


@hookimpl
def referee_backends() -> list[BackendInfo]:
    return [BackendInfo(name="fake", factory=lambda options, workspace: FakeBackend(**options),
                        description="in-memory backend for tests of scheduling logic (referee.plugins.testing)",
                        runs_images=True)]
