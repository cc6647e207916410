"""referee's seccomp profile on the real engine: the calls it blocks fail inside the sandbox, while
an honest job, in the same run, still scores exactly as it does under the engine's default profile."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import EXAMPLES, prepare_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.runtime.sandbox import SandboxPolicy, seccomp_options
from referee.platform.runtime.seccomp import BLOCKED_EXAMPLES, allowed_syscalls
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = [pytest.mark.docker, pytest.mark.hostile]
GOOD = EXAMPLES / "deepfake" / "code" / "good"

# x86_64 numbers; the probe reports errno names. It writes the good predictions only when every
# blocked call failed with EPERM (so "scored" means: blocked, and nothing else broke).
PROBE = """
import ctypes, errno, json, os, platform, runpy, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
CALLS = {"io_uring_setup": (425, 1, 0), "userfaultfd": (323, 0), "perf_event_open": (298, 0, 0, -1, -1, 0),
         "bpf": (321, 0, 0, 0), "keyctl": (250, 0, 0, 0), "add_key": (248, 0, 0, 0, 0, 0),
         "unshare": (272, 0x20000), "mount": (165, 0, 0, 0, 0, 0), "ptrace": (101, 0, 0, 0, 0)}
seen = {}
for name, (nr, *args) in CALLS.items():
    rc = libc.syscall(nr, *args)
    seen[name] = "ok" if rc != -1 else errno.errorcode.get(ctypes.get_errno(), "?")
t = threading.Thread(target=lambda: None); t.start(); t.join()  # clone3 -> ENOSYS -> clone: threads work
print("SYSCALLS " + json.dumps(seen), flush=True)
if platform.machine() != "x86_64" or all(v == "EPERM" for v in seen.values()):
    runpy.run_path("/app/predict.py", run_name="__main__")
else:
    sys.exit(7)
"""


def probe_dir(root, base_image):
    d = root / "probe"
    d.mkdir()
    shutil.copy(GOOD / "predict.py", d / "predict.py")
    (d / "probe.py").write_text(PROBE)
    (d / "Dockerfile").write_text(f"FROM {base_image}\nCOPY predict.py probe.py /app/\n"
                                  'CMD ["python3", "/app/probe.py"]\n')
    return d


def competition(root, seccomp: str):
    ex = prepare_example("deepfake", root)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc.update(limits={}, sandbox={"seccomp": seccomp})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(root / "ws")
    return store, load_into_store(store, ex / "competition.yaml")


def test_the_profile_blocks_what_no_submission_needs():
    allowed = allowed_syscalls()
    assert not set(BLOCKED_EXAMPLES) & allowed
    assert {"read", "openat", "mmap", "futex", "clone", "execve", "socket", "epoll_wait"} <= allowed
    assert seccomp_options(SandboxPolicy()) and seccomp_options(SandboxPolicy(seccomp="docker-default")) == []
    with pytest.raises(ValueError):
        SandboxPolicy(seccomp="unconfined")


def test_blocked_calls_fail_inside_the_sandbox_and_honest_jobs_score(tmp_path, docker_client, base_image):
    store, comp = competition(tmp_path / "referee", "referee")
    ids = {"probe": submit(store, comp, "probe", probe_dir(tmp_path, base_image)), "good": submit(store, comp, "good", GOOD)}
    Controller(store, comp, poll_interval=0.05).run()
    probe, good = store.get_submission(ids["probe"]), store.get_submission(ids["good"])
    assert '"io_uring_setup": "EPERM"' in (probe.log_tail or ""), probe.log_tail
    assert probe.status == "scored", (probe.failure_reason, probe.failure_message, probe.log_tail)
    assert good.status == "scored"
    ours = {(r.metric, r.split): r.value for r in store.scores(ids["good"])}

    # Under the engine's default profile the same calls reach the kernel (io_uring_setup is allowed
    # there), and the honest job's scores are the same: the profile changes nothing it needs.
    store2, comp2 = competition(tmp_path / "default", "docker-default")
    ids2 = {"probe": submit(store2, comp2, "probe", probe_dir(tmp_path / "default", base_image)),
            "good": submit(store2, comp2, "good", GOOD)}
    Controller(store2, comp2, poll_interval=0.05).run()
    probe2 = store2.get_submission(ids2["probe"])
    assert probe2.status == "failed" and '"io_uring_setup": "EPERM"' not in (probe2.log_tail or ""), probe2.log_tail
    assert {(r.metric, r.split): r.value for r in store2.scores(ids2["good"])} == ours
