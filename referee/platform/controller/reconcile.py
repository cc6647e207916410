"""The controller: one level-triggered loop that moves a competition's submissions to a final state.

Every submission it holds is reconciled the same way, whoever started it: the desired state is the
submission's row (pending, running and claimed by this controller, or cancelled by a host), the
observed state is its current attempt's job on the backend; each step is idempotent. So a controller
that starts after another one died simply adopts its claims: a job still running is re-attached by
handle, a job that finished has its outcome applied (never dispatched twice), and a job that was
never dispatched goes back to the queue.

Every outcome (scored, failed, retried) goes through one guarded store transition, ``_apply``:
it lands only while this controller still holds the claim for that attempt, so a host's cancel or
re-run from another process is never overwritten. Scoring runs in a worker pool, off the poll loop,
so slow scoring never delays polls or heartbeats. ``referee run`` and ``referee serve`` both run it.

The backend's control plane is guarded by a circuit breaker (``backoff.py``): throttling, timeouts, an
unreachable endpoint or expired credentials (``BackendUnavailable``) pause dispatching and polling with a
jittered back-off and never spend a submission's retries; an attempt the backend never took is forgotten.
``referee run`` stops with exit status 4 after ``backend.outage_limit``; ``referee serve`` keeps trying.
Polling slows down while nothing changes. A job that waits longer than ``backend.stuck_after`` for a
machine is recorded with the backend's own reason (and, with ``on_stuck: cancel``, cancelled as a platform
failure); a job no machine could ever run is refused before dispatch. A competition with
``resources.shards: N`` runs each submission as N jobs (``shards.py``): a lost shard is re-run alone,
and the merged prediction file is scored once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from referee.platform.controller.outcomes import (
    LOG_TAIL_BYTES,
    Outcome,
    RunSummary,
    WatchedJob,
    unusable_output,
)
from referee.platform.controller.shards import ShardedSubmissions
from referee.platform.controller.backoff import CircuitBreaker, PollInterval
from referee.platform.controller.policy import Candidate, SchedulingPolicy
from referee.platform.controller.scoring import one_blas_thread, score_file
from referee.platform.core.backend import Backend
from referee.platform.core.errors import BackendError, BackendUnavailable, SubmissionRejected
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
    SubmissionStatus,
)
from referee.platform.core.units import format_duration
from referee.platform.core.spec import Competition
from referee.platform.store import JobRow, NewScore, Store, SubmissionRow
from referee.plugins.manager import get_plugin_manager
from referee.plugins.records import Hold, SubmissionKindInfo
from referee.scoring.engine import (
    SCORER_ERROR_EVENT,
    SCORER_ERROR_MESSAGE,
    ScorerFailed,
)

MAX_POLL_ERRORS = 10  # consecutive failed polls (other than control-plane outages) before a run gives up
HEARTBEAT_S = 60.0  # a running controller renews its claims this often ...
LEASE_S = 600.0  # ... and a claim not renewed for this long is taken over
RECONCILE_S = 1.0  # how often held claims are compared with the store (a host's cancel, a lost claim)
LATE_LOG_TRIES = 8  # a log read the backend throttled is tried again this often (backing off) ...
LATE_LOG_FIRST_S = 5.0  # ... first after this long


@dataclass
class _LateLog:
    """A log tail the backend would not give yet (throttled): read again later, never stored empty."""

    sid: int
    attempt: int
    handle: str
    tries: int = 0
    at: float = 0.0


def _platform_failure(st: JobStatus, message: str) -> JobStatus:
    """``st`` turned into the platform's failure (times, node and the backend's tries kept)."""
    return replace(st, state=JobState.FAILED, reason=FailureReason.PLATFORM_ERROR, message=message, exit_code=None)


def owner_alive(owner: str | None, heartbeat: str | None = None) -> bool:
    """A claim is alive while its controller renews it (every HEARTBEAT_S) and, on this host, while
    its process exists; a claim not renewed for LEASE_S is dead wherever it came from."""
    if not owner:
        return False
    if heartbeat is not None:
        age = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(heartbeat)).total_seconds()
        if age > LEASE_S:
            return False
    try:
        host, pid, _ = owner.split(":", 2)
        if host != socket.gethostname():
            return True  # another machine's controller: trust its lease
        os.kill(int(pid), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def make_backend(comp: Competition, store: Store, name: str | None = None,
                 options: dict[str, Any] | None = None) -> Backend:
    """The competition's backend (or another installed one by ``name``), built by its plugin."""
    info = get_plugin_manager().backend(name or comp.backend.name)
    opts = dict(comp.backend.options if name in (None, comp.backend.name) else {})
    opts.update(options or {})
    backend: Backend = info.factory(opts, store)
    return backend


class Controller:
    """Runs one competition's pending submissions to a final state on one backend.

    ``poll_interval`` (and ``max_poll_interval``) fix the polling; without them it starts at the
    competition's (or the backend's) interval and grows while nothing changes. ``keep_trying`` (``referee
    serve``) rides out any outage; otherwise ``outage_limit`` (default: the competition's) bounds it and
    ``run`` raises ``BackendUnavailable``: every claim stays, so the next run resumes.
    """

    def __init__(self, store: Store, comp: Competition, backend: Backend | None = None, *,
                 max_in_flight: int | None = None, poll_interval: float | None = None,
                 max_poll_interval: float | None = None,
                 on_progress: Callable[[str, int], None] | None = None, scoring_workers: int = 1,
                 keep_trying: bool = False, outage_limit: float | None = None,
                 breaker: CircuitBreaker | None = None):
        self.store = store
        self.comp = comp
        self._backend = backend
        self.max_in_flight = max_in_flight or comp.backend.max_in_flight
        self._poll_setting = (poll_interval, max_poll_interval)
        self._interval: PollInterval | None = None
        self.on_progress = on_progress or (lambda event, sid: None)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pm = get_plugin_manager()
        self.policy = SchedulingPolicy(max_in_flight=self.max_in_flight,
                                       max_infra_retries=comp.backend.max_infra_retries)
        self.summary = RunSummary()
        self.breaker = breaker or CircuitBreaker()
        self.outage_limit = None if keep_trying else (outage_limit if outage_limit is not None
                                                      else comp.backend.outage_limit)
        self._jobs: dict[str, WatchedJob] = {}  # backend handle -> the attempt it runs
        self.sharded = ShardedSubmissions(self)  # sharded submissions held, with their shards' state
        self._scoring: dict[Future[Outcome], tuple[int, int | None]] = {}  # -> (submission id, attempt)
        self._scoring_workers = max(1, scoring_workers)
        self._pool: ThreadPoolExecutor | None = None
        self._wake = threading.Event()  # set by finished scoring and by backends that can tell (notify)
        self._kinds: dict[str, SubmissionKindInfo] = self.pm.submission_kinds()
        self._poll_errors = 0
        self._next_poll = 0.0
        self._late_logs: list[_LateLog] = []
        self._unanswered: set[str] = set()  # job ids whose submit may have reached the backend unanswered
        self._last_heartbeat = self._last_reconcile = time.monotonic()
        self._notified = False  # a backend said a job may have finished: poll now, not when due
        if backend is not None:
            backend.notify(self._backend_woke)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_backend(self.comp, self.store)
            self._backend.notify(self._backend_woke)  # a finished job wakes the loop: no poll_interval lag
        return self._backend

    def _backend_woke(self) -> None:
        self._notified = True
        self._wake.set()

    @property
    def interval(self) -> PollInterval:
        """The poll interval (made on first use: its defaults come from the backend)."""
        if self._interval is None:
            low, high = self._poll_setting
            if low is not None:
                high = low if high is None else max(low, high)
            else:
                low = self.comp.backend.poll_interval
                high = self.comp.backend.max_poll_interval if high is None else high
                low = self.backend.poll_interval_s if low is None else low
                high = max(low, self.backend.max_poll_interval_s if high is None else high)
            self._interval = PollInterval(low, high)
        return self._interval

    @property
    def poll_interval(self) -> float:
        return self.interval.current

    @property
    def in_flight(self) -> int:
        """Attempts this controller holds: dispatched jobs, shards waiting to go out, scoring."""
        return len(self._jobs) + len(self._scoring) + self.sharded.queued()

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, *, limit: int | None = None) -> RunSummary:
        """Bring every pending submission (at most ``limit`` new claims) to a final state."""
        self.adopt()
        claimed = 0
        stopped_early = False
        try:
            while True:
                progressed = self._harvest_scoring()
                progressed |= self._read_late_logs()
                if self.breaker.allow():
                    if self.summary.paused_reason is None and (limit is None or claimed < limit):
                        n = self._dispatch(None if limit is None else limit - claimed)
                        claimed += n
                        progressed |= n > 0
                    if self._jobs and self.breaker.allow() and (self._notified or time.monotonic() >= self._next_poll):
                        self._notified = False
                        progressed |= self._poll()
                self._check_outage()
                self._housekeeping()
                busy = len(self._jobs) + len(self._scoring)
                if self.summary.paused_reason is None:
                    busy += self.sharded.queued()
                if not busy and not progressed and (
                        self.summary.paused_reason is not None or (limit is not None and claimed >= limit)
                        or not self.store.has_pending(self.comp.id, exclude_teams=tuple(self.summary.held_teams))):
                    break
                if not progressed:
                    self._wait()
        except BaseException:
            stopped_early = True
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._harvest_scoring()
                self._pool = None
            self._read_late_logs(final=True)
            self._let_go(everything=stopped_early)
            if self._backend is not None:
                self._backend.close()
        return self.summary

    def _let_go(self, *, everything: bool) -> None:
        """Leave held submissions for the next controller to adopt (at once, not after the lease): every
        one when this run stops early (an outage past its limit), else sharded runs that still wait for a
        shard to go out (a paused competition)."""
        sids = {j.sid for j in self._jobs.values()} | set(self.sharded.runs) if everything else \
            {sid for sid, r in self.sharded.runs.items() if r.queued}
        for sid in sids:
            self.store.let_go(sid, self.owner)
        if everything:
            self._jobs.clear()
            self.sharded.runs.clear()

    def poll_soon(self) -> None:
        """New jobs went out: poll them after the shortest interval."""
        self._next_poll = min(self._next_poll, time.monotonic() + self.interval.low)

    def _wait(self) -> None:
        """Sleep until the next poll is due, the breaker lets a call out, or something may have finished: woken
        at once by the scoring pool and by a backend that notifies (then it polls at once)."""
        now = time.monotonic()
        due = [self._next_poll if self._jobs else now + self.poll_interval]
        if self.breaker.wait_s:
            due.append(now + self.breaker.wait_s)
        if self._late_logs:
            due.append(min(x.at for x in self._late_logs))
        timeout = min(due) - now
        if timeout <= 0:
            if not self._scoring:
                return
            timeout = 0.005  # only scoring to wait for: do not spin against the workers
        self._wake.wait(timeout)
        self._wake.clear()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self.store.renew_claims(self.owner)
        if (self._jobs or self.sharded.runs) and now - self._last_reconcile >= RECONCILE_S:
            self._last_reconcile = now
            self._drop_lost_claims()

    # -- the control plane: outages ------------------------------------------------------------------
    def _unavailable(self, exc: BackendUnavailable, during: str) -> None:
        """The backend's control plane did not answer: back off (nothing is charged, no retry is spent)."""
        first = self.breaker.failures == 0
        delay = self.breaker.failure(exc, exc.retry_after)
        if first:
            self.summary.outages += 1
            self.store.event("backend_unavailable", f"{during}: {exc}", competition_id=self.comp.id,
                             backend=self.backend.name, hint=exc.hint)
        self.store.event("backoff", f"{during}: backing off {delay:.1f}s", competition_id=self.comp.id,
                         failures=self.breaker.failures)

    def _answered(self) -> None:
        if self.breaker.success():
            self.store.event("backend_recovered", f"the {self.backend.name} backend answers again",
                             competition_id=self.comp.id)

    def _check_outage(self) -> None:
        """``referee run`` stops once an outage lasts past its limit; its claims stay for the next run."""
        if self.outage_limit is None or not self.breaker.failures or self.breaker.outage_s < self.outage_limit:
            return
        last = self.breaker.last_error
        hint = getattr(last, "hint", "") or "check the backend's endpoint, network and credentials"
        raise BackendUnavailable(
            f"the {self.backend.name} backend has not answered for {format_duration(self.breaker.outage_s)} "
            f"({getattr(last, 'detail', last)}); nothing was charged and every job stays claimed: fix it, then "
            f"run `referee run {self.comp.id}` again to resume", hint=hint)

    # -- adopting the claims of a controller that died -----------------------------------------------
    def adopt(self) -> int:
        """Take over running submissions whose controller died and reconcile each (see the module
        docstring). Returns how many were taken over."""
        n = 0
        for sub in self.store.submissions(self.comp.id, status=SubmissionStatus.RUNNING):
            if sub.claimed_by == self.owner or owner_alive(sub.claimed_by, sub.updated_at):
                continue
            if not self.store.take_over(sub.id, self.owner, sub.claimed_by):
                continue  # another controller took it first
            self.store.event("reclaimed", f"from {sub.claimed_by}", competition_id=self.comp.id,
                             submission_id=sub.id)
            n += 1
            self._reconcile_adopted(sub)
        return n

    def _watch(self, sub: SubmissionRow, job_row: int, spec: JobSpec, handle: str, dispatched: str | None) -> None:
        """Re-attach to a job by handle; its waiting time counts from when it was dispatched."""
        since = time.monotonic()
        if dispatched:
            age = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(dispatched)).total_seconds()
            since -= max(0.0, age)
        self._jobs[handle] = WatchedJob(sub.id, sub.team, job_row, spec, since=since)

    def _locate(self, spec: JobSpec) -> str | None:
        """A job the backend may have started for ``spec`` without the scheduler hearing of it."""
        try:
            return self.backend.locate(spec)
        except BackendUnavailable:
            return None  # cannot tell now; treated as never started (at worst it runs twice)

    def _reconcile_adopted(self, sub: SubmissionRow) -> None:
        rows = [j for j in self.store.jobs_of(sub.id) if j.attempt > sub.attempt_base]
        if any(j.shard is not None for j in rows):
            self.sharded.adopt(sub, rows)
            return
        job = self.store.job(sub.id, sub.attempts) if sub.attempts else None
        if job is None or not self._reattach(sub, job):  # claimed, never dispatched: back to the queue
            self.store.release(sub.id, self.owner)

    def _reattach(self, sub: SubmissionRow, job: JobRow) -> bool:
        """Pick up one job of an adopted submission: re-attached by handle while it runs, its outcome
        applied when it finished before its controller could. False when it never reached the backend
        (its row is closed as a platform failure; the caller queues it again)."""
        spec = JobSpec.from_dict(job.spec)
        handle = job.handle
        if not job.state.final and not handle:  # the controller died between recording and dispatching
            handle = self._locate(spec)
            if handle is None:
                self.store.job_finished(job.id, JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                                          "controller stopped before dispatch"))
                return False
            self.store.job_dispatched(job.id, handle)
        if not job.state.final:
            assert handle is not None
            self._watch(sub, job.id, spec, handle, job.started_at)  # re-attached by handle
        else:  # it finished, but its controller died before applying the outcome
            self._settle_job(WatchedJob(sub.id, sub.team, job.id, spec), job.handle, job.status(), recorded=True)
        return True

    def _drop_lost_claims(self) -> None:
        """Level-triggered host actions: a held job whose submission a host cancelled is stopped on the
        backend (its late outcome will not land); one another controller took over is let go."""
        ours = {s.id for s in self.store.claimed(self.comp.id, self.owner)}
        for handle, job in list(self._jobs.items()):
            if job.sid in ours:
                continue
            if self.store.get_submission(job.sid).status is not SubmissionStatus.CANCELLED:
                del self._jobs[handle]  # someone else's now: never touch its job
                continue
            try:
                self.backend.cancel(handle)
            except Exception as exc:  # noqa: BLE001 - the next poll reports it either way
                self.store.event("cancel_error", f"{type(exc).__name__}: {exc}", competition_id=self.comp.id,
                                 submission_id=job.sid)
        for sid, run in list(self.sharded.runs.items()):
            if sid not in ours:
                run.queued.clear()  # never dispatch more shards of a submission we no longer hold
                if not any(j.sid == sid for j in self._jobs.values()):
                    del self.sharded.runs[sid]

    # -- dispatching ---------------------------------------------------------------------------------
    def _dispatch(self, at_most: int | None) -> int:
        """Send queued shards, then claim what the policy picks for the free slots and start each;
        returns how many submissions were claimed."""
        for run in list(self.sharded.runs.values()):
            if run.queued and self.breaker.allow() and self.summary.paused_reason is None:
                self.sharded.dispatch(run, list(run.queued))
        free = self.policy.free_slots(len(self._jobs))
        free = min(free, self.max_in_flight + self._scoring_workers - self.in_flight)
        if at_most is not None:
            free = min(free, at_most)
        if free <= 0:
            return 0
        held = tuple(self.summary.held_teams)
        rows = self.store.pending_candidates(self.comp.id, exclude_teams=held, limit=self.policy.claim_window(free))
        running: dict[str, int] = {}
        for job in self._jobs.values():
            running[job.team] = running.get(job.team, 0) + 1
        picked = self.policy.pick([Candidate(i, team, at) for i, team, at in rows], len(self._jobs), running)[:free]
        n = 0
        for cand in picked:
            if not self.breaker.allow():
                break  # the backend stopped answering: the rest wait in the queue, unclaimed
            sub = self.store.claim(cand.key, self.owner)
            if sub is None:
                continue  # another controller claimed it
            n += 1
            if self.summary.paused_reason is not None:
                self.store.release(sub.id, self.owner)
            else:
                self._start(sub)
        return n

    def _start(self, sub: SubmissionRow) -> None:
        """Score a prediction file, or dispatch a job; one broken submission fails alone."""
        try:
            kind = self._kinds.get(sub.kind)
            if kind is None:
                self._apply(sub.id, sub.attempts, Outcome(
                    SubmissionStatus.FAILED, FailureReason.PLATFORM_ERROR,
                    f"submission kind {sub.kind!r} is not installed", charge=False))
            elif kind.to_job is None:
                self._score_later(sub, self.store.blob_path(sub.sha256), attempt=sub.attempts, from_job=False)
            elif self.comp.resources.shards > 1:
                self.sharded.start(sub, kind)
            else:
                self._dispatch_job(sub, kind)
        except Exception as exc:  # noqa: BLE001
            self.store.event("start_error", traceback.format_exc(), competition_id=self.comp.id,
                             submission_id=sub.id)
            self.sharded.runs.pop(sub.id, None)
            self._apply(sub.id, None, Outcome(SubmissionStatus.FAILED, FailureReason.PLATFORM_ERROR,
                                              f"could not start: {type(exc).__name__}: {exc}", charge=False))

    def _check_before_dispatch(self, sub: SubmissionRow, job: JobSpec) -> bool:
        """Can ``job`` go out now? A request no machine could ever run pauses the competition with the
        reason; so does a budget, or it holds one team (the ``referee_dispatch_check`` hook)."""
        why = self.backend.unsatisfiable(job)
        if why:
            self.summary.paused_reason = f"cannot dispatch: {why}"
            self.store.event("paused", self.summary.paused_reason, competition_id=self.comp.id,
                             submission_id=sub.id)
            return False
        reason = self.pm.hook.referee_dispatch_check(competition=self.comp, job_spec=job, store=self.store,
                                                     backend=self.backend.name)
        if reason:
            hold = reason if isinstance(reason, Hold) else Hold(str(reason))
            self.store.event("paused" if hold.team is None else "held", hold.reason, competition_id=self.comp.id,
                             submission_id=sub.id, team=hold.team)
            if hold.team is None:
                self.summary.paused_reason = hold.reason
            else:
                self.summary.held_teams[hold.team] = hold.reason  # the other teams keep running
            return False
        return True

    def _dispatch_job(self, sub: SubmissionRow, kind: SubmissionKindInfo) -> None:
        assert kind.to_job is not None
        attempt = sub.attempts + 1
        job = self._job_spec(sub, attempt, self._kind_fields(sub, kind.to_job))
        try:
            ok = self._check_before_dispatch(sub, job)
        except BackendUnavailable as exc:
            self.store.release(sub.id, self.owner)
            self._unavailable(exc, "checking capacity")
            return
        if not ok:
            self.store.release(sub.id, self.owner)
            return
        job_row = self._add_job(job)
        watched = WatchedJob(sub.id, sub.team, job_row, job)
        try:
            handle = self._locate(job) if job.job_id in self._unanswered else None
            if handle is None:
                handle = self.backend.submit(job)
        except BackendUnavailable as exc:  # the control plane, not the job: forget the attempt, retry later
            self._unanswered.add(job.job_id)
            self.store.discard_job(job_row)
            self.store.release(sub.id, self.owner)
            self._unavailable(exc, f"submitting {job.job_id}")
            return
        except Exception as exc:  # noqa: BLE001 - the backend could not even take the job: infrastructure
            self._settle_job(watched, None, JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                                      f"submit failed: {type(exc).__name__}: {exc}"))
            return
        self._answered()
        self._dispatched(watched, handle)
        self.poll_soon()
        self.on_progress("started", sub.id)

    def _add_job(self, job: JobSpec) -> int:
        """Record an attempt (of a shard, for a sharded run) before it goes to the backend; its row id."""
        r = job.resources
        return self.store.add_job(job.submission_id, job.attempt, self.backend.name, job.to_dict(), gpus=r.gpus,
                                  cpu=r.cpu, memory=r.memory, instance_type=r.instance_type, shard=job.shard)

    def _dispatched(self, watched: WatchedJob, handle: str) -> None:
        """The backend took a recorded attempt: watch it by handle and tell the hooks."""
        self._unanswered.discard(watched.spec.job_id)
        self.store.job_dispatched(watched.job_row, handle)
        self._jobs[handle] = watched
        self.pm.hook.referee_job_started(job=self.store.job_record(watched.job_row), competition=self.comp,
                                         store=self.store)

    def _kind_fields(self, sub: SubmissionRow, to_job: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """The JobSpec fields a submission's kind adds (a container's image, by registry digest): asked
        once per dispatch, for every shard it sends."""
        return to_job(sub, self.comp.for_phase(sub.phase, strict=False), self.store) or {}

    def _job_spec(self, sub: SubmissionRow, attempt: int, extra: dict[str, Any]) -> JobSpec:
        r = self.comp.resources
        comp = self.comp.for_phase(sub.phase, strict=False)  # the inputs of the submission's phase
        phase = self.comp.phase(comp.phase_name) if comp.phase_name else None
        gpus = phase.gpus if phase is not None and phase.gpus is not None else r.gpus
        out = self.store.work_dir(self.comp.id, f"s{sub.id}", f"a{attempt}") / "output"
        out.mkdir(exist_ok=True)
        return JobSpec(
            job_id=f"{self.comp.id}-s{sub.id}-a{attempt}", submission_id=sub.id, attempt=attempt,
            competition_id=self.comp.id, output_dir=str(out),
            output_file=f"predictions.{self.comp.prediction.format}",
            input_dir=str(comp.input_path) if comp.input_path else None,
            resources=Resources(cpu=r.cpu, memory=r.memory, gpus=gpus, instance_type=r.instance_type),
            timeout_s=r.timeout, sandbox=dict(self.comp.section_data("sandbox") or {}),
            max_infra_retries=self.comp.backend.max_infra_retries,
            labels={"referee.competition": self.comp.id, "referee.submission": str(sub.id)},
            **extra)

    # -- observing -----------------------------------------------------------------------------------
    def _poll(self) -> bool:
        handles = list(self._jobs)
        try:
            statuses = self.backend.poll(handles)
            self._poll_errors = 0
        except BackendUnavailable as exc:
            self._unavailable(exc, "polling")
            return False
        except Exception as exc:  # noqa: BLE001
            self._poll_errors += 1
            self.store.event("poll_error", f"{type(exc).__name__}: {exc}", competition_id=self.comp.id)
            if self._poll_errors >= MAX_POLL_ERRORS:  # the jobs stay claimed: the next run re-attaches them
                raise BackendError(f"the {self.backend.name} backend failed {self._poll_errors} polls in a row; "
                                   f"last error: {type(exc).__name__}: {exc}") from exc
            self._next_poll = time.monotonic() + min(30.0, 0.5 * 2 ** self._poll_errors)
            return False
        self._answered()
        progressed = changed = False
        for handle, st in statuses.items():
            job = self._jobs.get(handle)
            if job is None:
                continue
            seen = (st.state.value, st.message)
            changed |= seen != job.seen
            job.seen = seen
            if not st.state.final:
                self._observe_waiting(handle, job, st)
                continue
            del self._jobs[handle]
            self._settle_job(job, handle, st)
            progressed = True
        if changed:
            self.interval.changed()
        else:
            self.interval.unchanged()
        self._next_poll = time.monotonic() + self.interval.current
        return progressed

    def _observe_waiting(self, handle: str, job: WatchedJob, st: JobStatus) -> None:
        """Record a job that waits longer than ``stuck_after`` for a machine, with the backend's reason;
        ``on_stuck: cancel`` cancels it (a platform failure: never charged)."""
        if st.state is JobState.RUNNING:
            if job.stuck:
                job.stuck = False
                self.store.job_unstuck(job.job_row)
            return
        waited = time.monotonic() - job.since
        if waited < self.comp.backend.stuck_after or job.capacity_cancel:
            return
        if job.stuck:
            if st.message and st.message != job.reason:  # the backend's reason changed: keep the new one
                job.reason = st.message
                self.store.job_waiting(job.job_row, job.reason)
            return
        reason = st.message
        if not reason:
            try:
                reason = self.backend.waiting_reason(handle) or ""
            except BackendUnavailable:
                reason = ""
        job.reason = reason = reason or "the backend gives no reason"
        self.store.job_waiting(job.job_row, reason)
        job.stuck = True
        what = f"waited {format_duration(waited)} for a machine: {reason}"
        self.store.event("stuck", what, competition_id=self.comp.id, submission_id=job.sid, shard=job.shard)
        if self.comp.backend.on_stuck == "cancel":
            job.capacity_cancel = f"cancelled after it {what}"
            try:
                self.backend.cancel(handle)
            except BackendUnavailable as exc:
                job.capacity_cancel = None  # tried again at the next poll
                job.stuck = False
                self._unavailable(exc, f"cancelling {handle}")

    def _settle_job(self, job: WatchedJob, handle: str | None, st: JobStatus, *, recorded: bool = False) -> None:
        """A job reached a final state: record it, tell the hooks, and turn it into an outcome."""
        log_tail: str | None = ""
        if handle is not None and not recorded:
            try:
                log_tail = self.backend.logs(handle, LOG_TAIL_BYTES)
            except BackendUnavailable:  # throttled: read it later rather than store an empty tail
                log_tail = None
                self._late_logs.append(_LateLog(job.sid, job.spec.attempt, handle, at=time.monotonic()
                                                + LATE_LOG_FIRST_S))
            except Exception as exc:  # noqa: BLE001
                log_tail = f"(logs unavailable: {exc})"
        if job.capacity_cancel and st.state != JobState.SUCCEEDED:
            st = _platform_failure(st, job.capacity_cancel)
        output: Path | None = Path(job.spec.output_dir) / job.spec.output_file
        if st.state == JobState.SUCCEEDED and handle is not None and not recorded:
            try:
                output = Path(self.backend.collect(handle, job.spec)) / job.spec.output_file
            except Exception as exc:  # noqa: BLE001
                st = _platform_failure(st, f"collecting output failed: {exc}")
        if not recorded:
            self.store.job_finished(job.job_row, st)
            self.pm.hook.referee_job_finished(job=self.store.job_record(job.job_row), result=st,
                                              competition=self.comp, store=self.store)
        attempt = job.spec.attempt
        if job.shard is not None:
            self.sharded.settle(job, st, output, log_tail or "")
        elif st.state == JobState.SUCCEEDED:
            assert output is not None
            why = unusable_output(output)
            if why:
                self._apply(job.sid, attempt, Outcome(SubmissionStatus.FAILED, FailureReason.NO_OUTPUT,
                                                      f"{job.spec.output_file} {why}", log_tail=log_tail))
            else:
                self._score_later(self.store.get_submission(job.sid), output, attempt=attempt, from_job=True,
                                  log_tail=log_tail)
        elif job.capacity_cancel:  # waited too long for a machine: the platform's failure, final
            self._apply(job.sid, attempt, Outcome(SubmissionStatus.FAILED, FailureReason.PLATFORM_ERROR,
                                                  job.capacity_cancel, charge=False, log_tail=log_tail))
        else:
            sub = self.store.get_submission(job.sid)
            # attempts count from the last host re-run, so a re-run gets its own retries
            decision = self.policy.on_failure(st.reason or FailureReason.EXITED_NONZERO,
                                              attempt - sub.attempt_base, st.message)
            if decision.retry:
                self._apply(job.sid, attempt, Outcome(SubmissionStatus.PENDING, st.reason, st.message,
                                                      charge=False, log_tail=log_tail))
            else:
                self._apply(job.sid, attempt, Outcome(SubmissionStatus.FAILED, decision.reason, decision.message,
                                                      charge=decision.charge, log_tail=log_tail))
        if handle is not None:
            try:
                self.backend.cleanup(handle)
            except Exception:  # noqa: BLE001 - housekeeping only
                pass
        self.on_progress("finished", job.sid)

    def _read_late_logs(self, *, final: bool = False) -> bool:
        """Read the log tails a throttled backend held back (backing off between tries)."""
        if not self._late_logs or not (final or self.breaker.allow()):
            return False
        now, keep, got = time.monotonic(), [], False
        for late in self._late_logs:
            if late.at > now and not final:
                keep.append(late)
                continue
            try:
                tail = self.backend.logs(late.handle, LOG_TAIL_BYTES)
            except BackendUnavailable:
                late.tries += 1
                late.at = now + LATE_LOG_FIRST_S * 2 ** late.tries
                if late.tries < LATE_LOG_TRIES and not final:
                    keep.append(late)
                continue
            except Exception:  # noqa: BLE001 - gone for good: nothing to keep
                continue
            got |= self.store.set_log_tail(late.sid, tail, attempt=late.attempt)
        self._late_logs = keep
        return got

    # -- scoring (a worker pool, off the poll loop) ----------------------------------------------------
    def _score_later(self, sub: SubmissionRow, path: Path, *, attempt: int | None, from_job: bool,
                     log_tail: str | None = None) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._scoring_workers, thread_name_prefix=f"referee-score-{self.comp.id}")
        fut = self._pool.submit(self._score, sub, path, from_job, log_tail)
        self._scoring[fut] = (sub.id, attempt)
        fut.add_done_callback(lambda _f: self._wake.set())

    def _score(self, sub: SubmissionRow, path: Path, from_job: bool, log_tail: str | None) -> Outcome:
        try:
            predictions_sha = sub.sha256
            if from_job and path.stat().st_size <= self.comp.prediction.max_bytes:
                # keep what the container wrote, content-addressed, so `referee verify` can re-score it
                predictions_sha, _ = self.store.put_blob_file(path)
            # scored against the data and metrics of the submission's phase
            with one_blas_thread():
                results = score_file(self.comp.for_phase(sub.phase, strict=False), path, submission_sha256=sub.sha256,
                                     predictions_sha256=predictions_sha, put_blob=self.store.put_blob_bytes,
                                     source=path.name if from_job else (sub.filename or path.name))
        except SubmissionRejected as exc:
            return Outcome(SubmissionStatus.FAILED, FailureReason.INVALID_OUTPUT, str(exc), log_tail=log_tail)
        except ScorerFailed as exc:  # the host's scorer, not the submission: the host gets the traceback
            self.store.event(SCORER_ERROR_EVENT, exc.traceback, competition_id=self.comp.id, submission_id=sub.id,
                             scorer=exc.scorer, metric=exc.metric, error=exc.error)
            return Outcome(SubmissionStatus.FAILED, FailureReason.SCORER_ERROR,
                           f"{SCORER_ERROR_MESSAGE} (metric {exc.metric!r})", charge=False, log_tail=log_tail)
        except Exception as exc:  # noqa: BLE001 - referee's own scoring step failed: the host is told, as above
            self.store.event(SCORER_ERROR_EVENT, traceback.format_exc(), competition_id=self.comp.id,
                             submission_id=sub.id, scorer="referee", metric=None,
                             error=f"{type(exc).__name__}: {exc}")
            return Outcome(SubmissionStatus.FAILED, FailureReason.SCORER_ERROR, SCORER_ERROR_MESSAGE, charge=False,
                           log_tail=log_tail)
        scores = tuple(NewScore(metric=r.metric, split=r.split, value=r.value, n_items=r.n_items,
                                stats_sha256=r.stats_sha256, details=r.details, provenance=r.provenance,
                                ci_low=r.ci_low, ci_high=r.ci_high) for r in results)
        return Outcome(SubmissionStatus.SCORED, log_tail=log_tail, scores=scores)

    def _harvest_scoring(self) -> bool:
        done = [f for f in self._scoring if f.done()]
        for fut in done:
            sid, attempt = self._scoring.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - _score catches everything; belt and braces
                outcome = Outcome(SubmissionStatus.FAILED, FailureReason.PLATFORM_ERROR,
                                  f"scoring failed: {type(exc).__name__}: {exc}", charge=False)
            self._apply(sid, attempt, outcome)
        return bool(done)

    # -- the one outcome path ------------------------------------------------------------------------
    def _apply(self, sid: int, attempt: int | None, outcome: Outcome) -> bool:
        """Move a held submission to its next state. Guarded by claim and attempt: False (and nothing
        changes) when a host cancelled or re-ran it, or another controller took it over, meanwhile."""
        failed = outcome.status is SubmissionStatus.FAILED
        ok = self.store.settle(
            sid, owner=self.owner, attempt=attempt, status=outcome.status,
            failure_reason=outcome.reason.value if failed and outcome.reason else None,
            failure_message=outcome.message if failed else None, log_tail=outcome.log_tail,
            counts_toward_quota=outcome.charge if failed else None, scores=outcome.scores)
        if not ok:
            return False
        if failed and not outcome.charge and attempt:
            # the platform's or the host's failure (a scorer that raised, an attempt given up on): whatever
            # that attempt's job cost (each shard's of a sharded run) is the competition's, never the team's
            for a in outcome.attempts or (attempt,):
                self.store.charge_attempt_to_platform(sid, a)
        if outcome.status is SubmissionStatus.SCORED:
            self.summary.scored += 1
            self.on_progress("scored", sid)
        elif outcome.status is SubmissionStatus.PENDING:
            self.store.event("retry", outcome.message, competition_id=self.comp.id, submission_id=sid, attempt=attempt)
            self.summary.retried += 1
        else:
            reason = (outcome.reason or FailureReason.PLATFORM_ERROR).value
            self.store.event("failed", outcome.message, competition_id=self.comp.id, submission_id=sid, reason=reason)
            self.summary.failed += 1
            self.summary.failures[reason] = self.summary.failures.get(reason, 0) + 1
            self.on_progress("failed", sid)
        return True

