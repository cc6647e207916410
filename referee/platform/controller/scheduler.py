"""Scheduler: turns pending submissions into jobs on a backend, then scores their outputs.

All state lives in the store, so a killed scheduler resumes where it stopped: submissions it had
claimed are reclaimed, jobs still running on a remote backend are re-attached by handle, and a score
is written in the same transaction that marks its submission scored (never twice, never half).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from referee.platform.controller.policy import Candidate, SchedulingPolicy
from referee.platform.controller.scoring import score_file
from referee.platform.core.backend import Backend
from referee.platform.core.errors import BackendError, SubmissionRejected
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
)
from referee.platform.core.spec import Competition
from referee.platform.store import FINAL_STATES, Store, SubmissionRow, utcnow
from referee.plugins.manager import get_plugin_manager
from referee.plugins.records import Hold
from referee.scoring.engine import MetricResult

LOG_TAIL_BYTES = 8192
MAX_POLL_ERRORS = 10  # consecutive failed polls before a run gives up (its jobs stay claimed)
HEARTBEAT_S = 60.0  # a running scheduler renews its claims this often ...
LEASE_S = 600.0  # ... and a claim not renewed for this long is taken over


def _status_of(job: Any) -> JobStatus:
    """A final JobStatus rebuilt from a job row."""
    import datetime as dt

    def t(v: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(v) if v else None

    reason = FailureReason(job["failure_reason"]) if job["failure_reason"] else None
    return JobStatus(JobState(job["state"]), reason, job["message"] or "", exit_code=job["exit_code"],
                     started_at=t(job["started_at"]), finished_at=t(job["finished_at"]), node=job["node"])


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


def _owner_alive(owner: str | None, heartbeat: str | None = None) -> bool:
    """A claim is alive while its scheduler renews it (every HEARTBEAT_S) and, on this host, while
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
            return True  # another machine's scheduler: trust its lease
        os.kill(int(pid), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def make_backend(comp: Competition, store: Store, name: str | None = None,
                 options: dict[str, Any] | None = None) -> Backend:
    info = get_plugin_manager().backend(name or comp.backend.name)
    opts = dict(comp.backend.options if name in (None, comp.backend.name) else {})
    opts.update(options or {})
    return info.factory(opts, store)


class Scheduler:
    """Runs one competition's pending submissions to completion on one backend."""

    def __init__(self, store: Store, comp: Competition, backend: Backend | None = None, *,
                 max_in_flight: int | None = None, poll_interval: float = 0.2,
                 on_progress: Callable[[str, int], None] | None = None):
        self.store = store
        self.comp = comp
        self._backend = backend
        self.max_in_flight = max_in_flight or comp.backend.max_in_flight
        self.poll_interval = poll_interval
        self.on_progress = on_progress or (lambda event, sid: None)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pm = get_plugin_manager()
        self.in_flight: dict[str, tuple[int, int, JobSpec]] = {}  # handle -> (submission id, job row id, spec)
        self.policy = SchedulingPolicy(max_in_flight=self.max_in_flight,
                                       max_infra_retries=comp.backend.max_infra_retries)
        self._team_of: dict[int, str] = {}
        self._unsettled: list[tuple[int, int, JobSpec, str, JobStatus]] = []  # finished jobs found by reclaim
        self._poll_errors = 0
        self._last_heartbeat = time.monotonic()
        self.summary = RunSummary()
        self._kinds = self.pm.submission_kinds()
        self._trackers: list[Any] = []

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_backend(self.comp, self.store)
        return self._backend

    # -- claiming ----------------------------------------------------------------------------------
    def reclaim(self) -> int:
        """Take over submissions whose scheduler died. Running jobs are re-attached by handle; a job
        that had already finished has its outcome applied now (never dispatched twice)."""
        n = 0
        for sub in self.store.submissions(self.comp.id, status="running"):
            if sub.claimed_by == self.owner or _owner_alive(sub.claimed_by, sub.updated_at):
                continue
            with self.store.tx() as c:
                took = c.execute("UPDATE submissions SET claimed_by=?, updated_at=? WHERE id=? AND status='running' "
                                 "AND claimed_by IS ?", (self.owner, utcnow(), sub.id, sub.claimed_by)).rowcount
                if not took:
                    continue  # another scheduler took it first
                job = c.execute("SELECT * FROM jobs WHERE submission_id=? AND attempt=?",
                                (sub.id, sub.attempts)).fetchone() if sub.attempts else None
                if job is None or (job["state"] in ("queued", "running") and not job["handle"]):
                    c.execute("UPDATE submissions SET status='pending', claimed_by=NULL WHERE id=?", (sub.id,))
                    if job is not None:
                        c.execute("UPDATE jobs SET state='failed', failure_reason='platform_error', "
                                  "message='scheduler stopped before dispatch', finished_at=? WHERE id=?",
                                  (utcnow(), job["id"]))
            if job is not None and job["handle"]:
                spec = JobSpec.from_dict(json.loads(job["spec_json"]))
                self._team_of[sub.id] = sub.team
                if job["state"] in ("queued", "running"):
                    self.in_flight[job["handle"]] = (sub.id, job["id"], spec)
                else:  # finished, but the scheduler died before applying the outcome
                    self._unsettled.append((sub.id, job["id"], spec, job["handle"], _status_of(job)))
            self.store.event("reclaimed", f"from {sub.claimed_by}", competition_id=self.comp.id,
                             submission_id=sub.id)
            n += 1
        return n

    def _claim_batch(self, at_most: int | None = None) -> list[SubmissionRow]:
        """Claim what the policy picks for the free slots (a window of the oldest pending ones)."""
        free = self.policy.free_slots(len(self.in_flight))
        if at_most is not None:
            free = min(free, at_most)
        if free == 0:
            return []
        held, args = self._held_filter()
        rows = self.store.query("SELECT id, team, created_at FROM submissions WHERE competition_id=? "
                                f"AND status='pending'{held} ORDER BY id LIMIT ?",
                                (self.comp.id, *args, self.policy.claim_window(free)))
        running: dict[str, int] = {}
        for sid, _, _ in self.in_flight.values():
            team = self._team_of.get(sid)
            if team:
                running[team] = running.get(team, 0) + 1
        picked = self.policy.pick([Candidate(r["id"], r["team"], r["created_at"]) for r in rows],
                                  len(self.in_flight), running)[:free]
        out = []
        for cand in picked:
            with self.store.tx() as c:
                n = c.execute("UPDATE submissions SET status='running', claimed_by=?, updated_at=? "
                              "WHERE id=? AND status='pending'", (self.owner, utcnow(), cand.key)).rowcount
            if n:
                self._team_of[cand.key] = cand.team
                out.append(self.store.get_submission(cand.key))
        return out

    # -- main loop ---------------------------------------------------------------------------------
    def run(self, *, limit: int | None = None) -> RunSummary:
        """Score every pending submission (at most ``limit`` new claims); returns a summary."""
        self.reclaim()
        while self._unsettled:
            sid, job_row, spec, handle, st = self._unsettled.pop()
            self._apply_outcome(sid, job_row, spec, handle, st, Path(spec.output_dir) / spec.output_file, "")
        claimed = 0
        paused = False
        try:
            while True:
                progressed = False
                if not paused and (limit is None or claimed < limit):
                    for sub in self._claim_batch(None if limit is None else limit - claimed):
                        claimed += 1
                        progressed = True
                        if paused:  # release what was claimed after a pause
                            self._release(sub.id)
                        elif not self._start_guarded(sub):
                            paused = True
                if self.in_flight:
                    progressed |= self._poll_once()
                    self._heartbeat()
                elif not progressed and (paused or (limit is not None and claimed >= limit)
                                         or not self._has_pending()):
                    break
                if not progressed:
                    time.sleep(self.poll_interval)
        finally:
            if self._backend is not None:
                self._backend.close()
        return self.summary

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self.store.execute("UPDATE submissions SET updated_at=? WHERE claimed_by=? AND status='running'",
                               (utcnow(), self.owner))

    def _release(self, sid: int) -> None:
        self.store.execute("UPDATE submissions SET status='pending', claimed_by=NULL, updated_at=? "
                           "WHERE id=? AND status='running' AND claimed_by=?", (utcnow(), sid, self.owner))

    def _start_guarded(self, sub: SubmissionRow) -> bool:
        """``_start``, but one broken submission fails alone (platform error, not charged)."""
        try:
            return self._start(sub)
        except Exception as exc:
            self.store.event("start_error", traceback.format_exc(), competition_id=self.comp.id,
                             submission_id=sub.id)
            self._fail(sub.id, FailureReason.PLATFORM_ERROR, f"could not start: {type(exc).__name__}: {exc}",
                       attempt=None, charge=False)
            return True

    def _held_filter(self) -> tuple[str, tuple[str, ...]]:
        teams = tuple(self.summary.held_teams)
        return (f" AND team NOT IN ({','.join('?' * len(teams))})", teams) if teams else ("", ())

    def _has_pending(self) -> bool:
        held, args = self._held_filter()
        return bool(self.store.query(f"SELECT 1 FROM submissions WHERE competition_id=? AND status='pending'{held} "
                                     "LIMIT 1", (self.comp.id, *args)))

    def _start(self, sub: SubmissionRow) -> bool:
        """Score a file submission now, or dispatch a job. Returns False when dispatch is paused."""
        kind = self._kinds.get(sub.kind)
        to_job = getattr(kind, "to_job", None) if kind else None
        if kind is None:
            self._fail(sub.id, FailureReason.PLATFORM_ERROR, f"submission kind {sub.kind!r} is not installed",
                       attempt=sub.attempts, charge=False)
            return True
        if to_job is None:
            self._score(sub, self.store.blob_path(sub.sha256), attempt=sub.attempts)
            return True
        attempt = sub.attempts + 1
        job = self._job_spec(sub, attempt, to_job)
        reason = self.pm.hook.referee_dispatch_check(competition=self.comp, job=job, store=self.store,
                                                     backend=self.backend.name)
        if reason:
            hold = reason if isinstance(reason, Hold) else Hold(str(reason))
            self._release(sub.id)
            self.store.event("paused" if hold.team is None else "held", hold.reason, competition_id=self.comp.id,
                             submission_id=sub.id, team=hold.team)
            if hold.team is None:
                self.summary.paused_reason = hold.reason
                return False
            self.summary.held_teams[hold.team] = hold.reason  # the other teams keep running
            return True
        with self.store.tx() as c:
            cur = c.execute("INSERT INTO jobs(submission_id, attempt, backend, state, gpus, cpu, memory, "
                            "instance_type, spec_json, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (sub.id, attempt, self.backend.name, "queued", job.resources.gpus, job.resources.cpu,
                             job.resources.memory, job.resources.instance_type, json.dumps(job.to_dict()),
                             utcnow()))
            job_row = int(cur.lastrowid)
            c.execute("UPDATE submissions SET attempts=? WHERE id=?", (attempt, sub.id))
        try:
            handle = self.backend.submit(job)
        except Exception as exc:  # the backend could not even take the job: infrastructure
            self._finish_job(sub.id, job_row, job, None, JobStatus(
                JobState.FAILED, FailureReason.PLATFORM_ERROR, f"submit failed: {type(exc).__name__}: {exc}"))
            return True
        self.store.execute("UPDATE jobs SET handle=?, state='running', started_at=? WHERE id=?",
                           (handle, utcnow(), job_row))
        self.in_flight[handle] = (sub.id, job_row, job)
        self.pm.hook.referee_job_started(job=self._job_record(job_row), competition=self.comp, store=self.store)
        self.on_progress("started", sub.id)
        return True

    def _job_spec(self, sub: SubmissionRow, attempt: int, to_job: Callable[..., dict]) -> JobSpec:
        r = self.comp.resources
        phase = self.comp.phase(sub.phase)
        gpus = phase.gpus if phase.gpus is not None else r.gpus
        work = self.store.work_dir(self.comp.id, f"s{sub.id}", f"a{attempt}")
        out = work / "output"
        out.mkdir(exist_ok=True)
        extra = to_job(sub, self.comp, self.store) or {}
        return JobSpec(
            job_id=f"{self.comp.id}-s{sub.id}-a{attempt}", submission_id=sub.id, attempt=attempt,
            competition_id=self.comp.id, output_dir=str(out),
            output_file=f"predictions.{self.comp.prediction.format}",
            input_dir=str(self.comp.input_path) if self.comp.input_path else None,
            resources=Resources(cpu=r.cpu, memory=r.memory, gpus=gpus, instance_type=r.instance_type),
            timeout_s=r.timeout, sandbox=dict(self.comp.sandbox), max_infra_retries=self.comp.backend.max_infra_retries,
            labels={"referee.competition": self.comp.id, "referee.submission": str(sub.id)},
            **extra)

    def _poll_once(self) -> bool:
        handles = list(self.in_flight)
        try:
            statuses = self.backend.poll(handles)
            self._poll_errors = 0
        except Exception as exc:
            self._poll_errors += 1
            self.store.event("poll_error", f"{type(exc).__name__}: {exc}", competition_id=self.comp.id)
            if self._poll_errors >= MAX_POLL_ERRORS:  # the jobs stay claimed: the next run re-attaches them
                raise BackendError(f"the {self.backend.name} backend failed {self._poll_errors} polls in a row; "
                                   f"last error: {type(exc).__name__}: {exc}") from exc
            time.sleep(min(30.0, 0.5 * 2 ** self._poll_errors))
            return False
        progressed = False
        for h, st in statuses.items():
            if h not in self.in_flight or not st.state.final:
                continue
            sid, job_row, job = self.in_flight.pop(h)
            self._finish_job(sid, job_row, job, h, st)
            progressed = True
        return progressed

    def _finish_job(self, sid: int, job_row: int, job: JobSpec, handle: str | None, st: JobStatus) -> None:
        log_tail = ""
        if handle is not None:
            try:
                log_tail = self.backend.logs(handle, LOG_TAIL_BYTES)
            except Exception as exc:
                log_tail = f"(logs unavailable: {exc})"
        output_path: Path | None = None
        if st.state == JobState.SUCCEEDED and handle is not None:
            try:
                output_path = Path(self.backend.collect(handle, job)) / job.output_file
            except Exception as exc:
                st = JobStatus(JobState.FAILED, FailureReason.PLATFORM_ERROR, f"collecting output failed: {exc}",
                               started_at=st.started_at, finished_at=st.finished_at, node=st.node)
        self.store.execute("UPDATE jobs SET state=?, failure_reason=?, message=?, exit_code=?, node=?, "
                           "instance_type=COALESCE(?, instance_type), started_at=COALESCE(?, started_at), "
                           "finished_at=? WHERE id=?",
                           (st.state.value, st.reason.value if st.reason else None, st.message, st.exit_code,
                            st.node, st.instance_type, st.started_at.isoformat() if st.started_at else None,
                            (st.finished_at.isoformat() if st.finished_at else utcnow()), job_row))
        self.pm.hook.referee_job_finished(job=self._job_record(job_row), result=st, competition=self.comp,
                                          store=self.store)
        self._apply_outcome(sid, job_row, job, handle, st, output_path, log_tail)

    def _apply_outcome(self, sid: int, job_row: int, job: JobSpec, handle: str | None, st: JobStatus,
                       output_path: Path | None, log_tail: str) -> None:
        """Score, retry or fail a submission from its job's final status (guarded by claim and attempt)."""
        sub = self.store.get_submission(sid)
        if st.state == JobState.SUCCEEDED:
            assert output_path is not None
            if not output_path.is_file() or output_path.is_symlink():
                why = "is a symlink (not followed)" if output_path.is_symlink() else "was not written"
                self._fail(sid, FailureReason.NO_OUTPUT, f"{job.output_file} {why}", attempt=job.attempt,
                           log_tail=log_tail)
            else:
                self._score(sub, output_path, attempt=job.attempt, log_tail=log_tail, from_job=True)
        else:
            # attempts count from the last host re-run, so a re-run gets its own retries
            decision = self.policy.on_failure(st.reason or FailureReason.EXITED_NONZERO,
                                              job.attempt - sub.attempt_base, st.message)
            if decision.retry:
                if self._settle(sid, job.attempt, "status='pending', log_tail=?", (log_tail,)):
                    self.store.event("retry", st.message, competition_id=self.comp.id, submission_id=sid,
                                     job_id=job_row, attempt=job.attempt)
                    self.summary.retried += 1
            else:
                self._fail(sid, decision.reason, decision.message, attempt=job.attempt, log_tail=log_tail,
                           charge=decision.charge)
        if handle is not None:
            try:
                self.backend.cleanup(handle)
            except Exception:
                pass
        self.on_progress("finished", sid)

    def _job_record(self, job_row: int) -> Any:
        from referee.platform.core.jobs import JobRecord
        return JobRecord.load(self.store, job_row)

    # -- outcomes ----------------------------------------------------------------------------------
    def _guard(self, attempt: int | None) -> tuple[str, tuple[Any, ...]]:
        """Outcomes apply only while this scheduler holds the claim, and only for the current attempt
        (a host's cancel or re-run from another process is never overwritten by a stale result)."""
        sql, args = " AND status='running' AND claimed_by=?", (self.owner,)
        if attempt is not None:
            sql, args = sql + " AND attempts=?", (*args, attempt)
        return sql, args

    def _settle(self, sid: int, attempt: int | None, assignments: str, params: tuple[Any, ...]) -> bool:
        guard, args = self._guard(attempt)
        with self.store.tx() as c:
            n = c.execute(f"UPDATE submissions SET {assignments}, claimed_by=NULL, updated_at=? WHERE id=?{guard}",
                          (*params, utcnow(), sid, *args)).rowcount
        return bool(n)

    def _score(self, sub: SubmissionRow, path: Path, *, attempt: int | None, log_tail: str | None = None,
               from_job: bool = False) -> None:
        predictions_sha = sub.sha256
        if from_job and path.stat().st_size <= self.comp.prediction.max_bytes:
            # keep what the container wrote, content-addressed, so `referee verify` can re-score it
            predictions_sha, _ = self.store.put_blob_file(path)
        try:
            results = score_file(self.comp, path, submission_sha256=sub.sha256, predictions_sha256=predictions_sha,
                                 put_blob=self.store.put_blob_bytes,
                                 source=path.name if from_job else (sub.filename or path.name))
        except SubmissionRejected as exc:
            self._fail(sub.id, FailureReason.INVALID_OUTPUT, str(exc), attempt=attempt, log_tail=log_tail)
            return
        except Exception as exc:
            self.store.event("scoring_error", traceback.format_exc(), competition_id=self.comp.id,
                             submission_id=sub.id)
            self._fail(sub.id, FailureReason.PLATFORM_ERROR, f"scoring failed: {type(exc).__name__}: {exc}",
                       attempt=attempt, log_tail=log_tail, charge=False)
            return
        if self._store_scores(sub.id, attempt, results, log_tail):
            self.summary.scored += 1
            self.on_progress("scored", sub.id)

    def _store_scores(self, sid: int, attempt: int | None, results: list[MetricResult],
                      log_tail: str | None) -> bool:
        """Replace the submission's scores and mark it scored, in one transaction; False if not ours."""
        now = utcnow()
        guard, args = self._guard(attempt)
        with self.store.tx() as c:
            if c.execute(f"SELECT 1 FROM submissions WHERE id=?{guard}", (sid, *args)).fetchone() is None:
                return False  # cancelled, re-run or taken over meanwhile: never score twice
            c.execute("DELETE FROM scores WHERE submission_id=?", (sid,))  # a host re-run replaces old scores
            for r in results:
                c.execute("INSERT INTO scores(submission_id, metric, split, value, ci_low, ci_high, n_items, "
                          "stats_sha256, details_json, provenance_json, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          (sid, r.metric, r.split, r.value, r.ci_low, r.ci_high, r.n_items, r.stats_sha256,
                           json.dumps(r.details, default=str), json.dumps(r.provenance, default=str), now))
            c.execute("UPDATE submissions SET status='scored', claimed_by=NULL, failure_reason=NULL, "
                      "failure_message=NULL, log_tail=COALESCE(?, log_tail), updated_at=? WHERE id=?",
                      (log_tail, now, sid))
        return True

    def _fail(self, sid: int, reason: FailureReason, message: str, *, attempt: int | None,
              log_tail: str | None = None, charge: bool = True) -> None:
        if not self._settle(sid, attempt, "status='failed', failure_reason=?, failure_message=?, "
                                          "log_tail=COALESCE(?, log_tail), counts_toward_quota=?",
                            (reason.value, message, log_tail, 1 if charge else 0)):
            return  # a host's cancel or re-run (from another process) stands
        self.store.event("failed", message, competition_id=self.comp.id, submission_id=sid, reason=reason.value)
        self.summary.failed += 1
        self.summary.failures[reason.value] = self.summary.failures.get(reason.value, 0) + 1
        self.on_progress("failed", sid)


def rerun_submission(store: Store, sid: int, *, by: str = "host") -> None:
    """Put a finished submission back in the queue. Its old scores stay until the new ones replace
    them (in the transaction that marks it scored); a re-run counts toward the quota like a run."""
    from referee.platform.core.errors import RefereeError
    with store.tx() as c:
        row = c.execute("SELECT status, competition_id, attempts FROM submissions WHERE id=?", (sid,)).fetchone()
        if row is None:
            from referee.platform.core.errors import NotFound
            raise NotFound(f"no submission #{sid}")
        if row["status"] not in FINAL_STATES:
            raise RefereeError(f"submission #{sid} is {row['status']}; only a scored, failed or cancelled "
                               "submission can be re-run (cancel it first)")
        c.execute("UPDATE submissions SET status='pending', claimed_by=NULL, failure_reason=NULL, "
                  "failure_message=NULL, log_tail=NULL, attempt_base=attempts, counts_toward_quota=1, "
                  "updated_at=? WHERE id=?", (utcnow(), sid))
        store.event("rerun", f"re-run requested by {by}", competition_id=row["competition_id"], submission_id=sid,
                    previous_status=row["status"])


def cancel_submission(store: Store, sid: int, backend: Backend | None = None) -> str:
    """Cancel from outside a running scheduler: pending ones at once, running ones on their backend."""
    sub = store.get_submission(sid)
    if sub.status in FINAL_STATES:
        return sub.status
    if sub.status == "pending":
        store.set_submission(sid, status="cancelled", failure_reason="cancelled",
                             failure_message="cancelled by the host", counts_toward_quota=0)
        return "cancelled"
    job = store.query("SELECT * FROM jobs WHERE submission_id=? ORDER BY attempt DESC LIMIT 1", (sid,))
    if job and job[0]["handle"]:
        comp = store.get_competition(sub.competition_id)
        b = backend or make_backend(comp, store, job[0]["backend"])
        b.cancel(job[0]["handle"])
    store.set_submission(sid, status="cancelled", failure_reason="cancelled", claimed_by=None,
                         failure_message="cancelled by the host", counts_toward_quota=0)
    return "cancelled"

