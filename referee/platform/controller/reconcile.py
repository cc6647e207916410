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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from referee.platform.controller.policy import Candidate, SchedulingPolicy
from referee.platform.controller.scoring import one_blas_thread, score_file
from referee.platform.core.backend import Backend
from referee.platform.core.errors import BackendError, SubmissionRejected
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
    SubmissionStatus,
)
from referee.platform.core.spec import Competition
from referee.platform.store import NewScore, Store, SubmissionRow
from referee.plugins.manager import get_plugin_manager
from referee.plugins.records import Hold, SubmissionKindInfo
from referee.scoring.engine import (
    SCORER_ERROR_EVENT,
    SCORER_ERROR_MESSAGE,
    ScorerFailed,
)

LOG_TAIL_BYTES = 8192
MAX_POLL_ERRORS = 10  # consecutive failed polls before a run gives up (its jobs stay claimed)
HEARTBEAT_S = 60.0  # a running controller renews its claims this often ...
LEASE_S = 600.0  # ... and a claim not renewed for this long is taken over
RECONCILE_S = 1.0  # how often held claims are compared with the store (a host's cancel, a lost claim)


@dataclass
class RunSummary:
    scored: int = 0
    failed: int = 0
    retried: int = 0
    paused_reason: str | None = None
    held_teams: dict[str, str] = field(default_factory=dict)  # team -> why its submissions wait
    failures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scored": self.scored, "failed": self.failed, "retried": self.retried,
                "paused_reason": self.paused_reason, "held_teams": self.held_teams, "failures": self.failures}


@dataclass(frozen=True)
class Outcome:
    """What happened to one attempt, as the submission's next state."""

    status: SubmissionStatus  # PENDING (a retry), SCORED or FAILED
    reason: FailureReason | None = None
    message: str = ""
    charge: bool = True  # counts toward the team's quota (failures only)
    log_tail: str | None = None
    scores: tuple[NewScore, ...] = ()


@dataclass
class _Job:
    """A dispatched attempt this controller watches."""

    sid: int
    team: str
    job_row: int
    spec: JobSpec


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
    """Runs one competition's pending submissions to a final state on one backend."""

    def __init__(self, store: Store, comp: Competition, backend: Backend | None = None, *,
                 max_in_flight: int | None = None, poll_interval: float = 0.2,
                 on_progress: Callable[[str, int], None] | None = None, scoring_workers: int = 1):
        self.store = store
        self.comp = comp
        self._backend = backend
        self.max_in_flight = max_in_flight or comp.backend.max_in_flight
        self.poll_interval = poll_interval
        self.on_progress = on_progress or (lambda event, sid: None)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pm = get_plugin_manager()
        self.policy = SchedulingPolicy(max_in_flight=self.max_in_flight,
                                       max_infra_retries=comp.backend.max_infra_retries)
        self.summary = RunSummary()
        self._jobs: dict[str, _Job] = {}  # backend handle -> the attempt it runs
        self._scoring: dict[Future[Outcome], tuple[int, int | None]] = {}  # -> (submission id, attempt)
        self._scoring_workers = max(1, scoring_workers)
        self._pool: ThreadPoolExecutor | None = None
        self._wake = threading.Event()  # set by finished scoring and by backends that can tell (notify)
        self._kinds: dict[str, SubmissionKindInfo] = self.pm.submission_kinds()
        self._poll_errors = 0
        self._last_heartbeat = self._last_reconcile = time.monotonic()
        if backend is not None:
            backend.notify(self._wake.set)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_backend(self.comp, self.store)
            self._backend.notify(self._wake.set)  # a finished job wakes the loop: no poll_interval lag
        return self._backend

    @property
    def in_flight(self) -> int:
        """Attempts this controller holds: dispatched jobs and submissions being scored."""
        return len(self._jobs) + len(self._scoring)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, *, limit: int | None = None) -> RunSummary:
        """Bring every pending submission (at most ``limit`` new claims) to a final state."""
        self.adopt()
        claimed = 0
        try:
            while True:
                progressed = self._harvest_scoring()
                if self.summary.paused_reason is None and (limit is None or claimed < limit):
                    n = self._dispatch(None if limit is None else limit - claimed)
                    claimed += n
                    progressed |= n > 0
                if self._jobs:
                    progressed |= self._poll()
                self._housekeeping()
                if not self.in_flight and not progressed and (
                        self.summary.paused_reason is not None or (limit is not None and claimed >= limit)
                        or not self.store.has_pending(self.comp.id, exclude_teams=tuple(self.summary.held_teams))):
                    break
                if not progressed:
                    self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._harvest_scoring()
                self._pool = None
            if self._backend is not None:
                self._backend.close()
        return self.summary

    def _wait(self) -> None:
        """Sleep until a job or a scoring task may have finished: woken at once by the scoring pool and
        by a backend that notifies; ``poll_interval`` bounds the wait for one that cannot."""
        timeout = self.poll_interval
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
        if self._jobs and now - self._last_reconcile >= RECONCILE_S:
            self._last_reconcile = now
            self._drop_lost_claims()

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

    def _reconcile_adopted(self, sub: SubmissionRow) -> None:
        job = self.store.job(sub.id, sub.attempts) if sub.attempts else None
        if job is None:  # claimed, never dispatched: back to the queue
            self.store.release(sub.id, self.owner)
            return
        spec = JobSpec.from_dict(job.spec)
        if not job.state.final and not job.handle:  # the controller died between recording and dispatching
            self.store.job_finished(job.id, JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                                      "controller stopped before dispatch"))
            self.store.release(sub.id, self.owner)
        elif not job.state.final:
            assert job.handle is not None
            self._jobs[job.handle] = _Job(sub.id, sub.team, job.id, spec)  # re-attached by handle
        else:  # it finished, but its controller died before applying the outcome
            self._settle_job(_Job(sub.id, sub.team, job.id, spec), job.handle, job.status(), recorded=True)

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

    # -- dispatching ---------------------------------------------------------------------------------
    def _dispatch(self, at_most: int | None) -> int:
        """Claim what the policy picks for the free slots and start each; returns how many were claimed."""
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
            else:
                self._dispatch_job(sub, kind)
        except Exception as exc:  # noqa: BLE001
            self.store.event("start_error", traceback.format_exc(), competition_id=self.comp.id,
                             submission_id=sub.id)
            self._apply(sub.id, None, Outcome(SubmissionStatus.FAILED, FailureReason.PLATFORM_ERROR,
                                              f"could not start: {type(exc).__name__}: {exc}", charge=False))

    def _dispatch_job(self, sub: SubmissionRow, kind: SubmissionKindInfo) -> None:
        assert kind.to_job is not None
        attempt = sub.attempts + 1
        job = self._job_spec(sub, attempt, kind.to_job)
        reason = self.pm.hook.referee_dispatch_check(competition=self.comp, job_spec=job, store=self.store,
                                                     backend=self.backend.name)
        if reason:
            hold = reason if isinstance(reason, Hold) else Hold(str(reason))
            self.store.release(sub.id, self.owner)
            self.store.event("paused" if hold.team is None else "held", hold.reason, competition_id=self.comp.id,
                             submission_id=sub.id, team=hold.team)
            if hold.team is None:
                self.summary.paused_reason = hold.reason
            else:
                self.summary.held_teams[hold.team] = hold.reason  # the other teams keep running
            return
        r = job.resources
        job_row = self.store.add_job(sub.id, attempt, self.backend.name, job.to_dict(), gpus=r.gpus, cpu=r.cpu,
                                     memory=r.memory, instance_type=r.instance_type)
        watched = _Job(sub.id, sub.team, job_row, job)
        try:
            handle = self.backend.submit(job)
        except Exception as exc:  # noqa: BLE001 - the backend could not even take the job: infrastructure
            self._settle_job(watched, None, JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR,
                                                      f"submit failed: {type(exc).__name__}: {exc}"))
            return
        self.store.job_dispatched(job_row, handle)
        self._jobs[handle] = watched
        self.pm.hook.referee_job_started(job=self.store.job_record(job_row), competition=self.comp, store=self.store)
        self.on_progress("started", sub.id)

    def _job_spec(self, sub: SubmissionRow, attempt: int, to_job: Callable[..., dict[str, Any]]) -> JobSpec:
        r = self.comp.resources
        comp = self.comp.for_phase(sub.phase, strict=False)  # the inputs of the submission's phase
        phase = self.comp.phase(comp.phase_name) if comp.phase_name else None
        gpus = phase.gpus if phase is not None and phase.gpus is not None else r.gpus
        out = self.store.work_dir(self.comp.id, f"s{sub.id}", f"a{attempt}") / "output"
        out.mkdir(exist_ok=True)
        extra = to_job(sub, comp, self.store) or {}
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
        except Exception as exc:  # noqa: BLE001
            self._poll_errors += 1
            self.store.event("poll_error", f"{type(exc).__name__}: {exc}", competition_id=self.comp.id)
            if self._poll_errors >= MAX_POLL_ERRORS:  # the jobs stay claimed: the next run re-attaches them
                raise BackendError(f"the {self.backend.name} backend failed {self._poll_errors} polls in a row; "
                                   f"last error: {type(exc).__name__}: {exc}") from exc
            time.sleep(min(30.0, 0.5 * 2 ** self._poll_errors))
            return False
        progressed = False
        for handle, st in statuses.items():
            job = self._jobs.get(handle)
            if job is None or not st.state.final:
                continue
            del self._jobs[handle]
            self._settle_job(job, handle, st)
            progressed = True
        return progressed

    def _settle_job(self, job: _Job, handle: str | None, st: JobStatus, *, recorded: bool = False) -> None:
        """A job reached a final state: record it, tell the hooks, and turn it into an outcome."""
        log_tail = ""
        if handle is not None and not recorded:
            try:
                log_tail = self.backend.logs(handle, LOG_TAIL_BYTES)
            except Exception as exc:  # noqa: BLE001
                log_tail = f"(logs unavailable: {exc})"
        output: Path | None = Path(job.spec.output_dir) / job.spec.output_file
        if st.state == JobState.SUCCEEDED and handle is not None and not recorded:
            try:
                output = Path(self.backend.collect(handle, job.spec)) / job.spec.output_file
            except Exception as exc:  # noqa: BLE001
                st = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR, f"collecting output failed: {exc}",
                               started_at=st.started_at, finished_at=st.finished_at, node=st.node)
        if not recorded:
            self.store.job_finished(job.job_row, st)
            self.pm.hook.referee_job_finished(job=self.store.job_record(job.job_row), result=st,
                                              competition=self.comp, store=self.store)
        attempt = job.spec.attempt
        if st.state == JobState.SUCCEEDED:
            assert output is not None
            if output.is_symlink() or not output.is_file():
                why = "is a symlink (not followed)" if output.is_symlink() else "was not written"
                self._apply(job.sid, attempt, Outcome(SubmissionStatus.FAILED, FailureReason.NO_OUTPUT,
                                                      f"{job.spec.output_file} {why}", log_tail=log_tail))
            else:
                self._score_later(self.store.get_submission(job.sid), output, attempt=attempt, from_job=True,
                                  log_tail=log_tail)
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
            # that attempt's job cost is the competition's, never the team's
            self.store.charge_attempt_to_platform(sid, attempt)
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
