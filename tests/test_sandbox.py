"""The sandbox policy, the container config it produces, and single sandboxed runs on the real engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import need

from referee.platform.core.errors import SpecError
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources
from referee.platform.runtime.sandbox import (
    SCRATCH_DIR,
    OutputScratch,
    SandboxPolicy,
    attach_job_in_docker,
    container_config,
    container_name,
    log_path_for,
    run_job_in_docker,
    sweep_stale_outputs,
)


def job_for(tmp: Path, name: str, *, image: str = "img", command: list[str] | None = None, timeout: float = 20,
            memory: int = 256 * 2**20, gpus: int = 0, sandbox: dict | None = None,
            input_dir: Path | None = None) -> JobSpec:
    out = tmp / name / "output"
    out.mkdir(parents=True)
    return JobSpec(job_id=f"t-{name}", submission_id=1, attempt=1, competition_id="t", output_dir=str(out),
                   output_file="predictions.csv", image=image, command=command,
                   input_dir=str(input_dir) if input_dir else None,
                   resources=Resources(cpu=1.0, memory=memory, gpus=gpus), timeout_s=timeout,
                   sandbox=dict(sandbox or {}), labels={"referee.test": "sandbox"})


# -- policy ----------------------------------------------------------------------------------------
def test_policy_defaults_and_overrides():
    default = SandboxPolicy.from_mapping({})
    assert default.network is False and default.read_only_root is True
    p = SandboxPolicy.from_mapping({"tmp_size": "16m", "pids_limit": 64, "max_output_bytes": "2MiB",
                                    "user": "20000:20000", "command": ["python3", "/app/x.py"]})
    assert (p.tmp_size, p.pids_limit, p.max_output_bytes) == (16_000_000, 64, 2 * 2**20)
    assert p.uid_gid() == (20000, 20000)
    assert p.command == ["python3", "/app/x.py"]


@pytest.mark.parametrize("bad, field, words", [
    ({"tmpsize": "1m"}, "sandbox.tmpsize", "unknown sandbox setting"),
    ({"user": "0:0"}, "sandbox.user", "root"),
    ({"user": "nobody"}, "sandbox.user", "numeric"),
    ({"tmp_size": "lots"}, "sandbox.tmp_size", "not a size"),
    ({"output_mount": "/data/input/out"}, "sandbox", "overlap"),
    ({"input_mount": "/etc"}, "sandbox.input_mount", "absolute path of its own"),
    ({"pids_limit": 2}, "sandbox", "at least 8"),
])
def test_policy_errors_name_the_field(bad, field, words):
    with pytest.raises(SpecError) as err:
        SandboxPolicy.from_mapping(bad, where="comp.yaml")
    text = str(err.value)
    assert "comp.yaml" in text and field in text and words in text


# -- container config ------------------------------------------------------------------------------
def test_config_mounts_only_inputs_and_output(tmp_path):
    inputs = tmp_path / "data" / "input"
    inputs.mkdir(parents=True)
    reference = tmp_path / "data" / "reference.csv"
    reference.write_text("id,label\n")
    job = job_for(tmp_path, "cfg", input_dir=inputs, memory=300 * 2**20, sandbox={"tmp_size": "8m"})
    scratch = tmp_path / "cfg" / SCRATCH_DIR
    policy = SandboxPolicy.from_mapping(job.sandbox)
    cfg = container_config(job, policy, output_source=scratch, image_volumes=["/scratch", "/tmp"])
    mounts = sorted((m["Target"], m["Source"], m["ReadOnly"]) for m in cfg["mounts"])
    assert mounts == [("/data/input", str(inputs.resolve()), True), ("/data/output", str(scratch), False)]
    assert str(reference) not in json.dumps(cfg, default=str)  # the reference goes nowhere near a container
    assert cfg["network_mode"] == "none" and cfg["network_disabled"] is True
    assert cfg["read_only"] is True and cfg["cap_drop"] == ["ALL"]
    assert cfg["security_opt"][0] == "no-new-privileges" and cfg["privileged"] is False
    assert len(cfg["security_opt"]) == 2 and cfg["security_opt"][1].startswith('seccomp={"defaultAction":"SCMP_ACT_ERRNO"')
    assert cfg["mem_limit"] == cfg["memswap_limit"] == 300 * 2**20
    assert cfg["nano_cpus"] == 1_000_000_000 and cfg["pids_limit"] == policy.pids_limit
    assert cfg["user"] == "%d:%d" % policy.uid_gid() and not cfg["user"].startswith("0:")
    assert cfg["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=8000000", "/scratch": "rw,nosuid,nodev,size=8000000"}
    assert "device_requests" not in cfg
    assert "fsize" not in {u["Name"] for u in cfg["ulimits"]}
    assert cfg["name"] == container_name(job) and cfg["labels"]["referee.job"] == "t-cfg"
    assert cfg["log_config"]["Config"] == {"max-size": str(policy.max_log_bytes), "max-file": "2"}


def test_config_gpus_and_disk_output(tmp_path):
    job = job_for(tmp_path, "gpu", gpus=2, sandbox={"max_output_bytes": "1m"})
    policy = SandboxPolicy.from_mapping(job.sandbox)
    cfg = container_config(job, policy, output_source=tmp_path, output_on_disk=True)
    (req,) = cfg["device_requests"]
    assert req["Count"] == 2 and req["Capabilities"] == [["gpu", "compute", "utility"]]
    fsize = [u for u in cfg["ulimits"] if u["Name"] == "fsize"]
    assert fsize and fsize[0]["Hard"] == 1_000_001
    job.resources.cpu = 8
    assert container_config(job, policy, output_source=tmp_path, engine_cpus=2)["nano_cpus"] == 2_000_000_000
    job.resources.cpu = 0  # no CPU limit
    assert "nano_cpus" not in container_config(job, policy, output_source=tmp_path)


def test_container_names_differ_across_workspaces(tmp_path):
    a = job_for(tmp_path / "a", "same")
    b = job_for(tmp_path / "b", "same")
    assert a.job_id == b.job_id and container_name(a) != container_name(b)
    assert container_name(a) == container_name(JobSpec.from_dict(a.to_dict()))  # stable: the backend handle


# -- one sandboxed run on the real engine ----------------------------------------------------------
PROBE = r"""
import json, os, socket
out = {"uid": os.getuid(), "gid": os.getgid()}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
out["cap_eff"] = status["CapEff"].strip(); out["no_new_privs"] = status.get("NoNewPrivs", "").strip()
try:
    open("/usr/evil", "w"); out["root_writable"] = True
except OSError:
    out["root_writable"] = False
st = os.statvfs("/tmp"); out["tmp_bytes"] = st.f_blocks * st.f_frsize
out["mounts"] = sorted(l.split()[1] for l in open("/proc/mounts") if l.split()[1].startswith("/data"))
out["ifaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
def read(p):
    try: return open(p).read().strip()
    except OSError: return None
out["pids_max"] = read("/sys/fs/cgroup/pids/pids.max") or read("/sys/fs/cgroup/pids.max")
out["mem_max"] = read("/sys/fs/cgroup/memory/memory.limit_in_bytes") or read("/sys/fs/cgroup/memory.max")
out["inputs"] = sorted(os.listdir("/data/input"))
try:
    open("/data/input/x", "w"); out["input_writable"] = True
except OSError:
    out["input_writable"] = False
print("probe done")
open("/data/output/predictions.csv", "w").write(json.dumps(out))
"""




@pytest.mark.docker
def test_sandboxed_runs(tmp_path, docker_client, base_image):
    """Several runs at once: the sandbox as the container sees it, and each way a run can end."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "features.txt").write_text("1 2 3\n")
    py = ["python3", "-c"]
    sleeper_started = threading.Event()
    cancel = threading.Event()
    jobs = {
        "probe": job_for(tmp_path, "probe", image=base_image, command=py + [PROBE], input_dir=inputs,
                         memory=200 * 2**20, sandbox={"tmp_size": "16m", "pids_limit": 77}),
        "timeout": job_for(tmp_path, "timeout", image=base_image, command=py + ["import time; time.sleep(600)"],
                           timeout=2),
        "cancel": job_for(tmp_path, "cancel", image=base_image, command=py + ["import time; time.sleep(600)"]),
        "bad_cmd": job_for(tmp_path, "bad_cmd", image=base_image, command=["/no/such/program"]),
        "no_image": job_for(tmp_path, "no_image", image="referee-test/never-built:none", command=["true"]),
        "logs": job_for(tmp_path, "logs", image=base_image, sandbox={"max_log_bytes": "64k"},
                        command=py + ["import sys\nfor i in range(60000): print('line', i)\nprint('LAST LINE')"]),
        "disk_many": job_for(tmp_path, "disk_many", image=base_image,
                             sandbox={"output_tmpfs": False, "max_output_bytes": "2m"},
                             command=py + ["import time\nfor i in range(1000):\n"
                                           "    open(f'/data/output/f{i}', 'wb').write(b'x' * 200000)\n"
                                           "    time.sleep(0.01)\n"
                                           "time.sleep(30)"]),
        "disk_big": job_for(tmp_path, "disk_big", image=base_image,
                            sandbox={"output_tmpfs": False, "max_output_bytes": "1m"},
                            command=py + ["f = open('/data/output/predictions.csv', 'wb')\n"
                                          "try:\n    f.write(b'x' * 3_000_000); f.flush()\n"
                                          "except OSError as e:\n    print('refused:', e.strerror)"]),
    }

    def run(name: str):
        ev = cancel if name == "cancel" else None
        hook = (lambda cid: sleeper_started.set()) if name == "cancel" else None
        return run_job_in_docker(jobs[name], client=docker_client, cancel_event=ev, on_started=hook)

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        assert sleeper_started.wait(60)
        t_cancel = time.monotonic()
        cancel.set()
        results = {name: f.result(timeout=120) for name, f in futures.items()}
    assert time.monotonic() - t_cancel < 15

    probe = results["probe"]
    assert probe.state == JobState.SUCCEEDED, probe
    seen = json.loads((Path(jobs["probe"].output_dir) / "predictions.csv").read_text())
    uid, gid = SandboxPolicy.from_mapping({}).uid_gid()
    assert (seen["uid"], seen["gid"]) == (uid, gid) and uid != 0
    assert int(seen["cap_eff"], 16) == 0 and seen["no_new_privs"] == "1"
    assert seen["root_writable"] is False and seen["input_writable"] is False
    assert seen["mounts"] == ["/data/input", "/data/output"] and seen["inputs"] == ["features.txt"]
    assert seen["ifaces"] == ["lo"]
    assert seen["pids_max"] == "77" and int(seen["mem_max"]) == 200 * 2**20
    assert 15_000_000 <= seen["tmp_bytes"] <= 16_000_000 + 4096  # rounded up to whole pages
    assert "probe done" in log_path_for(jobs["probe"]).read_text()

    assert results["timeout"].reason == FailureReason.TIMED_OUT and "2s" in results["timeout"].message
    assert results["cancel"].state == JobState.CANCELLED
    assert results["bad_cmd"].reason == FailureReason.IMAGE_INVALID
    assert "/no/such/program" in results["bad_cmd"].message
    assert results["no_image"].reason == FailureReason.PLATFORM_ERROR
    assert results["no_image"].reason.is_infrastructure

    log = log_path_for(jobs["logs"]).read_bytes()
    # it exits 0 but writes no prediction file: a failed run, whatever it printed
    assert (results["logs"].state, results["logs"].reason) == (JobState.FAILED, FailureReason.NO_OUTPUT), \
        results["logs"]
    assert "predictions.csv was not written" in results["logs"].message and results["logs"].exit_code == 0
    assert len(log) <= 64_100 and log.rstrip().endswith(b"LAST LINE")

    many = results["disk_many"]
    assert many.reason == FailureReason.INVALID_OUTPUT and "cap" in many.message, many
    big = results["disk_big"]
    assert big.reason == FailureReason.INVALID_OUTPUT and "larger than the output cap" in big.message, big
    assert "refused: File too large" in log_path_for(jobs["disk_big"]).read_text()

    for name, job in jobs.items():  # nothing left behind: no container, no mount, no scratch dir
        assert not (Path(job.output_dir).parent / SCRATCH_DIR).exists(), name
        assert not docker_client.containers.list(all=True, filters={"name": container_name(job)}), name
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts


@pytest.mark.docker
def test_reattach_judges_containers_that_ended_unwatched(tmp_path, docker_client, base_image):
    """As after a scheduler restart: containers started elsewhere, found by name once their deadline passed."""
    write = "open('/data/output/predictions.csv', 'w').write('id,label\\n')"
    jobs = {"in_time": (job_for(tmp_path, "in_time", image=base_image, command=["python3", "-c", write]), 2),
            "too_long": (job_for(tmp_path, "too_long", image=base_image,
                                 command=["python3", "-c", f"import time; time.sleep(3); {write}"]), 1)}
    for job, limit in jobs.values():
        policy = SandboxPolicy.from_mapping(job.sandbox)
        scratch = OutputScratch(Path(job.output_dir).parent / SCRATCH_DIR, policy)
        scratch.prepare()
        cfg = container_config(job, policy, output_source=scratch.path, deadline=time.time() + limit,
                               output_on_disk=not scratch.on_tmpfs)
        docker_client.containers.create(**cfg).start()
    time.sleep(4.5)  # both have exited; both deadlines have passed
    done = {name: attach_job_in_docker(container_name(job), client=docker_client) for name, (job, _) in jobs.items()}
    assert done["in_time"].state == JobState.SUCCEEDED, done["in_time"]
    assert (Path(jobs["in_time"][0].output_dir) / "predictions.csv").read_text() == "id,label\n"
    assert done["too_long"].reason == FailureReason.TIMED_OUT and "ran past" in done["too_long"].message
    assert attach_job_in_docker(container_name(jobs["in_time"][0]), client=docker_client) is None  # removed


@pytest.mark.docker
def test_sweep_unmounts_outputs_whose_container_is_gone(tmp_path, docker_client):
    if os.geteuid() != 0:
        need(False, "root (output tmpfs mounts)")
    policy = SandboxPolicy.from_mapping({"max_output_bytes": "1m"})
    orphan = OutputScratch(tmp_path / "orphan", policy, owner="referee-test-container-that-is-gone")
    orphan.prepare()
    assert orphan.on_tmpfs and os.path.ismount(orphan.path)
    assert str(orphan.path) not in sweep_stale_outputs(docker_client)  # too young: a run may be starting
    assert str(orphan.path) in sweep_stale_outputs(docker_client, grace_s=0)
    assert not os.path.ismount(orphan.path)


# -- non-root mode: the container runs as referee's own uid and can chmod its output away -----------
NOBODY = 65534


def run_unprivileged(script: str, *args: str) -> dict:
    """Run ``script`` as a non-root user (nobody, via setpriv, when the tests run as root) in a fresh
    directory that user owns; return the JSON its last output line holds."""
    work = Path(tempfile.mkdtemp(prefix="referee-nonroot-"))
    cmd = [sys.executable, "-c", script, str(work), *args]
    try:
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            need(setpriv is not None, "setpriv (to run as a non-root user)")
            sock = Path("/var/run/docker.sock")
            groups = f"--groups={sock.stat().st_gid}" if sock.exists() else "--clear-groups"
            cmd = [str(setpriv), f"--reuid={NOBODY}", f"--regid={NOBODY}", groups, *cmd]
            os.chown(work, NOBODY, NOBODY)
        env = {k: v for k, v in os.environ.items() if k not in ("HOME", "DOCKER_CONFIG")}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**env, "HOME": str(work)})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


LOCKED_SCRATCH = r"""
import json, os, sys
from pathlib import Path
from referee.platform.runtime.sandbox import OutputScratch, SandboxPolicy
work = Path(sys.argv[1])
assert os.geteuid() != 0
policy = SandboxPolicy.from_mapping({"output_tmpfs": False})
seen = {}
for case, mode, write in [("locked", 0o000, True), ("unlistable", 0o300, False)]:
    s = OutputScratch(work / case / "container-output", policy)
    s.prepare()
    if write:
        (s.path / "predictions.csv").write_text("id,label\n")
    (s.path / "sub").mkdir()
    (s.path / "sub" / "f").write_bytes(b"x" * 10)
    os.chmod(s.path / "sub", 0)  # what the container (the same uid) can do
    os.chmod(s.path, mode)
    reason, message = s.collect("predictions.csv", work / case / "output")
    over = s.over_cap()
    s.release()
    seen[case] = {"reason": reason.value if reason else None, "message": message, "over": over,
                  "left": os.path.lexists(s.path)}
print(json.dumps(seen))
"""


def test_unreadable_output_is_the_runs_failure_not_the_platforms():
    seen = run_unprivileged(LOCKED_SCRATCH)
    locked, unlistable = seen["locked"], seen["unlistable"]
    assert locked["reason"] == FailureReason.NO_OUTPUT.value and "could not be read" in locked["message"], locked
    assert unlistable["reason"] == FailureReason.NO_OUTPUT.value, unlistable
    assert "not written" in unlistable["message"] and "could not be listed" in unlistable["message"], unlistable
    for case in (locked, unlistable):  # its size cannot be checked: as good as over the cap
        assert case["over"] and "unreadable" in case["over"], case
        assert case["left"] is False, "release() left the scratch dir behind"


LOCKING_RUN = r"""
import json, os, sys
from pathlib import Path
import docker
from referee.platform.core.jobs import JobSpec, Resources
from referee.platform.runtime.sandbox import SCRATCH_DIR, run_job_in_docker
work, image = Path(sys.argv[1]), sys.argv[2]
out = work / "job" / "output"
out.mkdir(parents=True)
code = ("import os\n"
        "open('/data/output/predictions.csv', 'w').write('id,label\\n')\n"
        "os.mkdir('/data/output/d'); os.chmod('/data/output/d', 0)\n"
        "os.chmod('/data/output', 0)\n")
job = JobSpec(job_id="t-nonroot-lock", submission_id=1, attempt=1, competition_id="t", output_dir=str(out),
              output_file="predictions.csv", image=image, command=["python3", "-c", code],
              resources=Resources(cpu=1.0, memory=256 * 2**20), timeout_s=60, sandbox={},
              labels={"referee.test": "sandbox"})
st = run_job_in_docker(job, client=docker.from_env())
print(json.dumps({"state": st.state.value, "reason": st.reason.value if st.reason else None,
                  "message": st.message, "left": os.path.lexists(work / "job" / SCRATCH_DIR)}))
"""


@pytest.mark.docker
def test_container_that_locks_its_output_dir_is_not_a_platform_error(docker_client, base_image):
    """Without root the container runs as referee's own uid: chmod 000 on /data/output must not make
    the run a platform error (a free retry), nor leave the scratch dir behind."""
    seen = run_unprivileged(LOCKING_RUN, base_image)
    assert seen["state"] == "failed" and seen["reason"] != FailureReason.PLATFORM_ERROR.value, seen
    assert seen["reason"] in (FailureReason.NO_OUTPUT.value, FailureReason.INVALID_OUTPUT.value), seen
    assert "/data/output" in seen["message"], seen
    assert seen["left"] is False, seen

