"""Local backend: each job is a subprocess on this machine (trusted code only: no sandbox).

Jobs die with referee, even when it is killed with SIGKILL: each job runs under a one-line ``sh``
supervisor that the kernel signals when referee's process dies (``PR_SET_PDEATHSIG``, set by
util-linux's ``setpriv`` so the fast vfork start is kept), and the supervisor then kills the job's
whole process group.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referee.platform.core.backend import Backend, lost_handle
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    now_utc,
)

_PRLIMIT = shutil.which("prlimit")
_SETPRIV = shutil.which("setpriv")
_SH = shutil.which("sh") or "/bin/sh"
# Runs "$@" as its child in its process group. On SIGTERM (the parent-death signal) it kills the
# group; otherwise it exits as the job did: with its status, or by the same signal that ended it.
SUPERVISOR = ('trap "trap - TERM; kill -KILL 0" TERM; "$@" & wait $!; st=$?; '
              'if [ $st -gt 128 ]; then trap - TERM; kill -$((st - 128)) $$; fi; exit $st')
_PR_SET_PDEATHSIG = 1


def _set_limits(address_space: int | None) -> None:
    """In the child before exec (the slow path, without util-linux): parent-death signal and rlimits."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def supervised(command: list[str], address_space: int) -> tuple[list[str], Any]:
    """The command line that runs ``command`` under the supervisor with its rlimits, and the
    ``preexec_fn`` it needs (None when util-linux's setpriv and prlimit do it without one)."""
    if _PRLIMIT:
        command = [_PRLIMIT, f"--as={address_space}", "--core=0", "--", *command]
    wrapped = [_SH, "-c", SUPERVISOR, "referee-job", *command]
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "TERM", "--", *wrapped], None
    return wrapped, functools.partial(_set_limits, None if _PRLIMIT else address_space)


@dataclass
class _Proc:
    popen: subprocess.Popen
    job: JobSpec
    started: Any
    log_path: Path
    deadline: float
    status: JobStatus | None = None


def _tail(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class LocalBackend(Backend):
    """Runs ``job.command`` as a process group with rlimits and a wall-clock timeout."""

    name = "local"

    def __init__(self, workspace: Any = None, max_log_bytes: int = 1 << 20):
        self.max_log_bytes = max_log_bytes
        self._procs: dict[str, _Proc] = {}

    def submit(self, job: JobSpec) -> str:
        if not job.command:
            raise ValueError(f"local backend runs commands; job {job.job_id} has none "
                             "(container images need the docker, ray or aws-batch backend)")
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out.parent / f"{job.job_id}.log"
        env = {**os.environ, **job.env, "REFEREE_INPUT": job.input_dir or "", "REFEREE_OUTPUT": str(out),
               "REFEREE_OUTPUT_FILE": job.output_file}
        address_space = job.resources.memory * 2  # with slack: runtimes reserve more than they touch
        # util-linux's setpriv and prlimit keep the fast (vfork) process start: no preexec_fn
        command, preexec = supervised(list(job.command), address_space)

        log = open(log_path, "wb")
        try:
            popen = subprocess.Popen(command, cwd=str(out.parent), env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec)
        finally:
            log.close()
        import time
        self._procs[job.job_id] = _Proc(popen=popen, job=job, started=now_utc(), log_path=log_path,
                                        deadline=time.monotonic() + job.timeout_s)
        return job.job_id

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        import time
        out: dict[str, JobStatus] = {}
        for h in handles:
            p = self._procs.get(h)
            if p is None:
                out[h] = lost_handle(h, self.name)
                continue
            if p.status is not None:
                out[h] = p.status
                continue
            rc = p.popen.poll()
            if rc is None and time.monotonic() > p.deadline:
                self._kill(p)
                p.status = JobStatus(JobState.FAILED, FailureReason.TIMED_OUT,
                                     f"killed after {p.job.timeout_s:g}s", started_at=p.started,
                                     finished_at=now_utc(), node="localhost")
            elif rc is None:
                out[h] = JobStatus(JobState.RUNNING, started_at=p.started, node="localhost")
                continue
            elif rc == 0:
                p.status = JobStatus(JobState.SUCCEEDED, exit_code=0, started_at=p.started,
                                     finished_at=now_utc(), node="localhost")
            else:
                reason = FailureReason.EXITED_NONZERO
                msg = f"exited with status {rc}"
                if rc < 0 and -rc == signal.SIGKILL:
                    msg = "killed by SIGKILL"
                if "MemoryError" in _tail(p.log_path, 4096):
                    reason, msg = FailureReason.OUT_OF_MEMORY, "ran out of memory (MemoryError)"
                p.status = JobStatus(JobState.FAILED, reason, msg, exit_code=rc, started_at=p.started,
                                     finished_at=now_utc(), node="localhost")
            out[h] = p.status
        return out

    def _kill(self, p: _Proc) -> None:
        try:
            os.killpg(p.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.popen.wait()

    def cancel(self, handle: str) -> None:
        p = self._procs.get(handle)
        if p is None or p.status is not None:
            return
        self._kill(p)
        p.status = JobStatus(JobState.CANCELLED, FailureReason.CANCELLED, "cancelled", started_at=p.started,
                             finished_at=now_utc())

    def logs(self, handle: str, tail: int = 65536) -> str:
        p = self._procs.get(handle)
        return _tail(p.log_path, tail) if p else ""

    def close(self) -> None:
        for p in self._procs.values():
            if p.status is None and p.popen.poll() is None:
                self._kill(p)
