"""The local backend's jobs die with the process that started them, even when it is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from referee.platform.backends.local import LocalBackend
from referee.platform.core.jobs import JobSpec, JobState

# a job that starts a grandchild, writes both pids, then sleeps
JOB = ("import os, subprocess, sys, time; g = subprocess.Popen(['sleep', '300']); "
       "open(sys.argv[1], 'w').write(f'{os.getpid()} {g.pid}'); time.sleep(300)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_for(predicate, limit: float = 15.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_jobs_die_when_the_scheduler_is_killed(tmp_path):
    pids_file = tmp_path / "pids"
    driver = textwrap.dedent(f"""
        import sys, time
        from referee.platform.backends.local import LocalBackend
        from referee.platform.core.jobs import JobSpec
        b = LocalBackend()
        b.submit(JobSpec(job_id="orphan", submission_id=1, attempt=1, competition_id="t",
                         output_dir={str(tmp_path / 'out')!r}, output_file="p.csv",
                         command=[sys.executable, "-c", {JOB!r}, {str(pids_file)!r}]))
        print("submitted", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "submitted"
        assert _wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
        job, grandchild = map(int, pids_file.read_text().split())
        assert _alive(job) and _alive(grandchild)
        proc.send_signal(signal.SIGKILL)  # no handler, no atexit: only the kernel can tell the job
        proc.wait(10)
        assert _wait_for(lambda: not _alive(job) and not _alive(grandchild)), "the job outlived its scheduler"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in map(int, pids_file.read_text().split()) if pids_file.exists() else ():
            if _alive(pid):  # leave nothing behind, even when the test failed
                os.kill(pid, signal.SIGKILL)


def test_exit_status_and_signals_pass_through_the_supervisor(tmp_path):
    b = LocalBackend()

    def job(name: str, code: str) -> str:
        return b.submit(JobSpec(job_id=name, submission_id=1, attempt=1, competition_id="t",
                                output_dir=str(tmp_path / name), output_file="p.csv",
                                command=[sys.executable, "-c", code]))

    handles = {"ok": job("ok", "pass"), "three": job("three", "raise SystemExit(3)"),
               "killed": job("killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")}
    end = time.monotonic() + 30
    while time.monotonic() < end:
        st = b.poll(list(handles.values()))
        if all(s.state.final for s in st.values()):
            break
        time.sleep(0.05)
    assert st[handles["ok"]].state is JobState.SUCCEEDED
    assert st[handles["three"]].exit_code == 3
    assert st[handles["killed"]].message == "killed by SIGKILL"
    b.close()
