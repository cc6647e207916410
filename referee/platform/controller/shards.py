"""Sharded evaluation: one submission's inputs split into N shards by item id, N jobs, one prediction file.

* **Plan**: the reference's item ids, in reference order, cut into N contiguous runs of near-equal size
  (never more shards than items).
* **Inputs**: each shard gets a directory of its own holding every top-level entry of ``data.input``
  named after one of its items (the id itself, or the id and an extension: ``clip_0001.mp4``,
  ``clip_0001/``), every entry named after no item (shared files such as a label map go to each shard),
  and ``referee-shard.json`` (``{"shard", "shards", "ids"}``). A job sees only its shard's items. Built
  once per input snapshot and N, under ``WORKSPACE/shards/``, with hard links where the file system
  allows.
* **Merge**: the shards' prediction files concatenated in shard order (one header for csv/tsv), then
  validated and scored as one file, exactly like an unsharded submission's.
* **Runs** (``ShardedSubmissions``, part of the controller): each try of each shard is a job row of its
  own; a shard lost to the platform goes out again alone; one that fails by the submission's doing
  fails the submission and stops the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from referee.platform.controller.outcomes import LOG_TAIL_BYTES, Outcome, WatchedJob, unusable_output
from referee.platform.core.errors import BackendUnavailable, RefereeError, SubmissionRejected
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, JobStatus, SubmissionStatus
from referee.platform.core.spec import Competition
from referee.platform.store import JobRow, Store, SubmissionRow
from referee.plugins.records import SubmissionKindInfo

if TYPE_CHECKING:
    from referee.platform.controller.reconcile import Controller

SHARD_FILE = "referee-shard.json"


def plan(ids: list[str], shards: int) -> list[list[str]]:
    """``ids`` cut into ``min(shards, len(ids))`` contiguous runs whose sizes differ by at most one."""
    n = max(1, min(shards, len(ids)))
    base, extra = divmod(len(ids), n)
    out, start = [], 0
    for k in range(n):
        size = base + (1 if k < extra else 0)
        out.append(ids[start:start + size])
        start += size
    return out


def item_of(name: str, index: dict[str, int]) -> str | None:
    """The item a top-level input entry belongs to: its whole name, or its name with one or more trailing
    extensions removed (``a.b.mp4`` tries ``a.b.mp4``, ``a.b``, ``a``); None for a shared entry."""
    candidate = name
    while True:
        if candidate in index:
            return candidate
        if "." not in candidate:
            return None
        candidate = candidate.rsplit(".", 1)[0]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(src, dst)


def _place(src: Path, dest: Path) -> None:
    if src.is_symlink():
        raise RefereeError(f"the competition's input {src} is a symlink; sharding copies only plain files and "
                           "directories (replace the link with what it points to and load the competition again)")
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dest))


def shard_inputs(comp: Competition, store: Store, ids: list[str], shards: int) -> list[Path | None]:
    """Each shard's input directory (see the module docstring); None for every shard when the competition
    has no inputs. Reused while the input snapshot, the ids and N are unchanged."""
    groups = plan(ids, shards)
    source = comp.input_path
    if source is None:
        return [None] * len(groups)
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir())
    key = hashlib.sha256(json.dumps([str(source), listing, groups]).encode()).hexdigest()[:24]
    root = store.work_dir("shards", f"{comp.id}-{key}")
    if (root / "complete").exists():
        return [root / str(k) for k in range(len(groups))]
    index = {i: k for k, group in enumerate(groups) for i in group}
    tmp = store.work_dir("shards", f".{comp.id}-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for k, group in enumerate(groups):
        (tmp / str(k)).mkdir(parents=True)
        (tmp / str(k) / SHARD_FILE).write_text(json.dumps({"shard": k, "shards": len(groups), "ids": group}))
    for entry in sorted(source.iterdir()):
        owner = item_of(entry.name, index)
        targets = range(len(groups)) if owner is None else [index[owner]]
        for k in targets:
            _place(entry, tmp / str(k) / entry.name)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    (root / "complete").touch()
    return [root / str(k) for k in range(len(groups))]


def merge(parts: list[Path], dest: Path, fmt: str) -> Path:
    """Concatenate the shards' prediction files into ``dest`` in shard order; csv/tsv keep the first header
    and every shard must use the same one. Raises SubmissionRejected naming the shard that differs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    header: bytes | None = None
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        for k, part in enumerate(parts):
            data = part.read_bytes()
            if not data:
                continue
            if fmt in ("csv", "tsv"):
                first, _, body = data.partition(b"\n")
                first = first.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
                if header is None:
                    header = first
                    out.write(first + b"\n")
                elif first != header:
                    raise SubmissionRejected(
                        f"shard {k + 1} of {len(parts)} wrote the header {first[:200]!r}, shard 1 wrote "
                        f"{header[:200]!r}; every shard must write the same columns", source=dest.name,
                        code="bad_header")
                data = body
            if data and not data.endswith(b"\n"):
                data += b"\n"
            out.write(data)
    os.replace(tmp, dest)
    return dest


@dataclass
class ShardRun:
    """A sharded submission the controller holds: which shards are done, how often each was tried, and
    which wait for (re-)dispatch."""

    sid: int
    team: str
    shards: int
    attempt: int  # the submission's latest job-row attempt (every shard try is a job row of its own)
    done: dict[int, tuple[Path, str]] = field(default_factory=dict)  # shard -> (prediction file, log tail)
    tries: dict[int, int] = field(default_factory=dict)  # shard -> tries in this run
    attempts: list[int] = field(default_factory=list)  # every job-row attempt of this run
    queued: list[int] = field(default_factory=list)  # shards waiting to be dispatched (again)

    def log_tail(self, cap: int) -> str:
        """The shards' log tails, each under its shard's name, cut to the last ``cap`` bytes."""
        text = "".join(f"== shard {k + 1}/{self.shards} ==\n{tail}\n" for k, (_, tail) in sorted(self.done.items()))
        return text.encode()[-cap:].decode("utf-8", "replace")


class ShardedSubmissions:
    """The controller's sharded submissions: dispatching their shards (again, after a loss), settling each
    shard, merging and scoring once, and rebuilding them after a restart. ``runs`` holds each held
    submission's ``ShardRun``."""

    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self.runs: dict[int, ShardRun] = {}
        self._dirs: list[Path | None] | None = None

    def start(self, sub: SubmissionRow, kind: SubmissionKindInfo) -> None:
        """Dispatch every shard of a newly claimed submission."""
        run = ShardRun(sub.id, sub.team, len(self.inputs()), attempt=sub.attempts)
        self.runs[sub.id] = run
        self.dispatch(run, list(range(run.shards)), kind=kind)

    def queued(self) -> int:
        """Shards waiting to go out (again)."""
        return sum(len(r.queued) for r in self.runs.values())

    def adopt(self, sub: SubmissionRow, rows: list[JobRow]) -> None:
        """Rebuild a sharded run from its job rows: finished shards stay finished, running ones are
        re-attached, lost or never-dispatched ones go out again."""
        first = JobSpec.from_dict(rows[0].spec)
        run = ShardRun(sub.id, sub.team, first.shards, attempt=sub.attempts)
        self.runs[sub.id] = run
        latest: dict[int, JobRow] = {}
        for j in rows:
            k = int(j.shard or 0)
            latest[k] = j
            run.tries[k] = run.tries.get(k, 0) + 1
            run.attempts.append(j.attempt)
        for k in range(run.shards):
            last = latest.get(k)
            if last is None or not self.ctl._reattach(sub, last):
                run.queued.append(k)

    def inputs(self) -> list[Path | None]:
        if self._dirs is None:
            from referee.scoring.reference import load_reference
            ids = load_reference(self.ctl.comp).ids
            self._dirs = shard_inputs(self.ctl.comp, self.ctl.store, ids, self.ctl.comp.resources.shards)
        return self._dirs

    def spec(self, sub: SubmissionRow, attempt: int, shard: int, shards: int, fields: dict[str, Any]) -> JobSpec:
        job = self.ctl._job_spec(sub, attempt, fields)
        inputs = self.inputs()[shard]
        job.input_dir = str(inputs) if inputs is not None else None
        job.shard, job.shards = shard, shards
        job.env = {**job.env, "REFEREE_SHARD": str(shard), "REFEREE_SHARDS": str(shards)}
        job.labels = {**job.labels, "referee.shard": str(shard)}
        return job

    def dispatch(self, run: ShardRun, shard_ids: list[int],
                         kind: SubmissionKindInfo | None = None) -> None:
        """Send the given shards of a held submission (all of them at first; one again after it was lost)."""
        sub = self.ctl.store.get_submission(run.sid)
        if sub.status is not SubmissionStatus.RUNNING or sub.claimed_by != self.ctl.owner:
            run.queued.clear()
            return
        kind = kind or self.ctl._kinds[sub.kind]
        assert kind.to_job is not None
        run.queued = [k for k in run.queued if k not in shard_ids]
        added: list[tuple[int, int, JobSpec]] = []  # (shard, job row, spec)
        try:
            fields = self.ctl._kind_fields(sub, kind.to_job)
            for k in shard_ids:
                job = self.spec(sub, run.attempt + 1, k, run.shards, fields)
                if not self.ctl._check_before_dispatch(sub, job):
                    raise _NotNow()
                row = self.ctl._add_job(job)
                run.attempt = job.attempt
                added.append((k, row, job))
            found = [self.ctl._locate(j) if j.job_id in self.ctl._unanswered else None for _, _, j in added]
            todo = [j for (_, _, j), h in zip(added, found) if h is None]
            sent = iter(self.ctl.backend.submit_shards(todo) if todo else [])
            handles = [h if h is not None else next(sent) for h in found]
        except (_NotNow, BackendUnavailable) as exc:
            for _, _, j in added:
                self.ctl._unanswered.add(j.job_id)
            for _, row, _ in reversed(added):  # the backend took none of them: forget those attempts
                self.ctl.store.discard_job(row)
            run.attempt -= len(added)
            run.queued = sorted(set(run.queued) | set(shard_ids))
            if not run.attempts:  # nothing of this run went out yet: back to the queue, unclaimed
                self.runs.pop(run.sid, None)
                self.ctl.store.release(run.sid, self.ctl.owner)
            if isinstance(exc, BackendUnavailable):
                self.ctl._unavailable(exc, f"submitting shards of #{run.sid}")
            return
        except Exception as exc:  # noqa: BLE001 - the backend could not take them: infrastructure
            for k, row, j in added:
                run.attempts.append(j.attempt)
                run.tries[k] = run.tries.get(k, 0) + 1
                self.ctl._settle_job(WatchedJob(sub.id, sub.team, row, j), None, JobStatus(
                    JobState.FAILED, FailureReason.PLATFORM_ERROR, f"submit failed: {type(exc).__name__}: {exc}"))
            return
        self.ctl._answered()
        for (k, row, job), handle in zip(added, handles):
            run.attempts.append(job.attempt)
            run.tries[k] = run.tries.get(k, 0) + 1
            self.ctl._dispatched(WatchedJob(sub.id, sub.team, row, job), handle)
        self.ctl.poll_soon()
        self.ctl.on_progress("started", sub.id)

    def settle(self, job: WatchedJob, st: JobStatus, output: Path | None, log_tail: str) -> None:
        """One shard finished: keep its output, re-run it after a platform failure, or end the submission."""
        run = self.runs.get(job.sid)
        k = int(job.shard or 0)
        if run is None:
            return  # the submission was settled already (another shard failed, or a host cancelled it)
        if st.state == JobState.SUCCEEDED:
            assert output is not None
            why = unusable_output(output)
            if why:
                self.fail(run, Outcome(SubmissionStatus.FAILED, FailureReason.NO_OUTPUT,
                                               f"shard {k + 1} of {run.shards}: {job.spec.output_file} {why}",
                                               log_tail=log_tail))
                return
            run.done[k] = (output, log_tail)
            if len(run.done) == run.shards:
                self.merge_and_score(run, job.spec)
            return
        reason = st.reason or FailureReason.EXITED_NONZERO
        if job.capacity_cancel:
            self.fail(run, Outcome(SubmissionStatus.FAILED, FailureReason.PLATFORM_ERROR,
                                           f"shard {k + 1} of {run.shards}: {job.capacity_cancel}", charge=False,
                                           log_tail=log_tail))
            return
        decision = self.ctl.policy.on_failure(reason, run.tries.get(k, 1), st.message)
        if decision.retry:  # only this shard goes out again; the others keep running
            run.queued.append(k)
            self.ctl.summary.retried += 1
            self.ctl.store.event("retry", f"shard {k + 1} of {run.shards}: {st.message}", competition_id=self.ctl.comp.id,
                             submission_id=job.sid, attempt=job.spec.attempt, shard=k)
            return
        self.fail(run, Outcome(SubmissionStatus.FAILED, decision.reason,
                                       f"shard {k + 1} of {run.shards}: {decision.message}", charge=decision.charge,
                                       log_tail=log_tail))

    def fail(self, run: ShardRun, outcome: Outcome) -> None:
        """One shard failed for good: stop the others and fail the submission (every try's cost goes with
        the outcome: to the platform when it is not charged)."""
        self.runs.pop(run.sid, None)
        for handle, other in list(self.ctl._jobs.items()):
            if other.sid != run.sid:
                continue
            del self.ctl._jobs[handle]
            try:
                self.ctl.backend.cancel(handle)
            except Exception:  # noqa: BLE001 - best effort: its outcome is ignored either way
                pass
            self.ctl.store.job_finished(other.job_row, JobStatus(JobState.CANCELLED, FailureReason.CANCELLED,
                                                             "another shard of the submission failed"))
        self.ctl._apply(run.sid, run.attempt, Outcome(outcome.status, outcome.reason, outcome.message,
                                                  charge=outcome.charge, log_tail=outcome.log_tail,
                                                  attempts=tuple(run.attempts)))

    def merge_and_score(self, run: ShardRun, spec: JobSpec) -> None:
        self.runs.pop(run.sid, None)
        parts = [run.done[k][0] for k in range(run.shards)]
        merged = self.ctl.store.work_dir(self.ctl.comp.id, f"s{run.sid}", f"merged-a{run.attempt}") / spec.output_file
        log_tail = run.log_tail(LOG_TAIL_BYTES)
        try:
            merge(parts, merged, self.ctl.comp.prediction.format)
        except SubmissionRejected as exc:
            self.ctl._apply(run.sid, run.attempt, Outcome(SubmissionStatus.FAILED, FailureReason.INVALID_OUTPUT,
                                                      str(exc), log_tail=log_tail))
            return
        self.ctl._score_later(self.ctl.store.get_submission(run.sid), merged, attempt=run.attempt, from_job=True,
                          log_tail=log_tail)


class _NotNow(Exception):
    """A shard may not go out now (a budget, a hold, a request no machine can run)."""
