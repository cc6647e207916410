"""Hostile container submissions on the real Docker engine, all in one scheduler run.

Each must be contained and recorded with the right failure reason, while a good submission in the
same batch scores exactly as it does alone, and the platform is left as it was.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, prepare_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.jobs import FailureReason, JobSpec
from referee.platform.runtime.sandbox import container_name
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = [pytest.mark.docker, pytest.mark.hostile]

TIMEOUT_S = 12  # generous: 14 containers share 2 busy cores, and the good one must finish
TMP_CAP = 16 * 2**20
OUTPUT_CAP = 4 * 2**20
LOG_CAP = 256 * 1024
GOOD = EXAMPLES / "deepfake" / "code" / "good"

SCRIPTS = {
    # Egress to the host (docker0 gateway), to the internet, and DNS: all must fail.
    "network": """
import socket, sys
reached = []
for host, port in [("{gateway}", {port}), ("8.8.8.8", 53), ("1.1.1.1", 443)]:
    try:
        socket.create_connection((host, port), timeout=1).close()
        reached.append(host)
    except OSError as e:
        print("blocked", host, port, e)
try:
    socket.getaddrinfo("deb.debian.org", 80)
    reached.append("dns")
except OSError as e:
    print("no dns:", e)
print("reached", reached)
sys.exit(0 if reached else 5)
""",
    # Guess the host path of the references, then search the whole filesystem for them.
    "references": """
import os, sys
found = []
for guess in ["{reference}", "{reference_dir}/reference.csv", "/data/reference.csv", "/data/input/../reference.csv"]:
    try:
        open(guess).read(1)
        found.append(guess)
    except OSError:
        pass
for root, dirs, files in os.walk("/"):
    if root.startswith(("/proc", "/sys", "/dev")):
        dirs[:] = []
        continue
    for f in files:
        try:
            with open(os.path.join(root, f), "rb") as fh:
                if fh.read(32).startswith(b"id,label,split"):
                    found.append(os.path.join(root, f))
        except OSError:
            pass
print("found", found)
sys.exit(0 if found else 3)
""",
    "fork_bomb": """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.05)
""",
    "memory_bomb": """
hoard = []
while True:
    hoard.append(b"\\x01" * (16 << 20))
""",
    # Fill /tmp, the output directory and a VOLUME the image declares; report what fitted.
    "fill_disk": """
def fill(prefix):
    total, block, i = 0, b"x" * (1 << 20), 0
    while True:
        try:
            with open(f"{{prefix}}{{i}}", "wb", buffering=0) as f:
                for _ in range(4):
                    f.write(block)
                    total += len(block)
        except OSError as e:
            return total, e.strerror
        i += 1
(t, te), (o, oe), (s, se) = fill("/tmp/fill"), fill("/data/output/fill"), fill("/scratch/fill")
print(f"FILLED tmp={{t}} output={{o}} scratch={{s}} ({{te}}; {{oe}}; {{se}})")
""",
    "write_outside": """
import os, sys
wrote = []
for target in ["/evil", "/etc/evil", "/usr/lib/evil", "/data/evil", "/data/input/evil", "/root/evil",
               "/var/tmp/evil", "/app/evil", "/data/input/features.npy"]:
    try:
        with open(target, "a") as f:
            f.write("x")
        wrote.append(target)
    except OSError as e:
        print("refused", target, e.strerror)
for attempt in (lambda: os.chmod("/data/input/ids.csv", 0o777), lambda: os.mkdir("/data/input/sub"),
                lambda: os.rename("/data/input/ids.csv", "/data/input/x.csv")):
    try:
        attempt()
        wrote.append("input changed")
    except OSError as e:
        print("refused:", e.strerror)
print("wrote", wrote)
sys.exit(0 if wrote else 4)
""",
    "symlink_output": """
import os
os.symlink("{reference}", "/data/output/predictions.csv")
print("linked")
""",
    "sleep_forever": """
import time
time.sleep(10 ** 6)
""",
    "log_flood": """
import sys, time
block = ("y" * 1023 + "\\n") * 1024
start, n = time.time(), 0
while time.time() - start < 1.5 and n < (2 << 30):
    sys.stdout.write(block)
    n += len(block)
sys.stdout.flush()
print(f"FLOOD-END bytes={{n}}", flush=True)
sys.exit(6)
""",
    # Leave processes behind (a new session and a double-forked daemon), then do the job properly.
    "outlive": """
import os, runpy, subprocess, sys
code = "import time\\nwhile True:\\n    time.sleep(0.2)  # {marker}"
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    os._exit(0)
runpy.run_path("/app/predict.py", run_name="__main__")
""",
    "huge_predictions": """
with open("/data/output/predictions.csv", "wb", buffering=0) as f:
    f.write(b"id,label\\n")
    try:
        for i in range(10 ** 6):
            f.write(("".join(f"clip_{{i:05d}}{{k}},0.5\\n" for k in range(1000))).encode())
    except OSError as e:
        print("stopped:", e.strerror)
""",
    "binary_predictions": """
import os
open("/data/output/predictions.csv", "wb").write(os.urandom(65536))
""",
}

EXPECTED = {
    "network": FailureReason.EXITED_NONZERO, "references": FailureReason.EXITED_NONZERO,
    "fork_bomb": FailureReason.TIMED_OUT, "memory_bomb": FailureReason.OUT_OF_MEMORY,
    "fill_disk": FailureReason.NO_OUTPUT, "write_outside": FailureReason.EXITED_NONZERO,
    "symlink_output": FailureReason.NO_OUTPUT, "sleep_forever": FailureReason.TIMED_OUT,
    "log_flood": FailureReason.EXITED_NONZERO, "outlive": None, "huge_predictions": FailureReason.INVALID_OUTPUT,
    "binary_predictions": FailureReason.INVALID_OUTPUT, "bad_command": FailureReason.IMAGE_INVALID,
}


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)}|{st.st_mode}|{st.st_size}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def submission_dir(root: Path, name: str, script: str, base_image: str) -> Path:
    d = root / "subs" / name
    d.mkdir(parents=True)
    shutil.copy(GOOD / "predict.py", d / "predict.py")
    (d / "run.py").write_text(script)
    extra = "VOLUME /scratch\n" if name == "fill_disk" else ""
    cmd = '["/app/missing-program"]' if name == "bad_command" else '["python3", "/app/run.py"]'
    (d / "Dockerfile").write_text(f"FROM {base_image}\nCOPY run.py predict.py /app/\n{extra}CMD {cmd}\n")
    return d




@pytest.fixture
def listener():
    """A TCP server on every host address, counting connections (there must be none)."""
    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    hits: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
                hits.append(addr[0])
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


def test_hostile_submissions_are_contained(tmp_path, docker_client, base_image, listener):
    port, hits = listener
    ex = prepare_example("deepfake", tmp_path)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc.update(limits={}, backend={"name": "docker", "max_in_flight": 16, "options": {"slots": 16}},
               resources={"cpu": 1, "memory": "256m", "timeout": f"{TIMEOUT_S}s"},
               sandbox={"tmp_size": TMP_CAP, "max_output_bytes": OUTPUT_CAP, "pids_limit": 32,
                        "max_log_bytes": LOG_CAP})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, ex / "competition.yaml")
    reference = comp.reference_path
    inputs_before, reference_before = tree_hash(comp.input_path), tree_hash(reference.parent)

    alone = submit(store, comp, "good-alone", GOOD)
    Controller(store, comp, poll_interval=0.05).run()
    alone_scores = {(r.metric, r.split): r.value for r in store.scores(alone)}
    assert store.get_submission(alone).status == "scored" and alone_scores

    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])  # the host, seen from docker0
    marker = f"referee-outlive-{uuid.uuid4().hex}"
    fill = {"gateway": gateway, "port": port, "reference": reference, "reference_dir": reference.parent,
            "marker": marker}
    dirs = {name: submission_dir(tmp_path, name, script.format(**fill), base_image) for name, script in
            {**SCRIPTS, "bad_command": ""}.items()}
    dirs["good"] = GOOD
    with ThreadPoolExecutor(4) as pool:
        ids = dict(zip(dirs, pool.map(lambda name: submit(store, comp, name, dirs[name]), dirs)))
    try:
        summary = Controller(store, comp, poll_interval=0.05).run()
        check_outcomes(store, comp, docker_client, ids, alone_scores, hits, marker)
    finally:
        for name, sid in ids.items():
            if name != "good":  # each run bakes fresh paths into these images: do not let them pile up
                _remove_image(docker_client, store.get_submission(sid).metadata.get("image"))
    assert tree_hash(comp.input_path) == inputs_before and tree_hash(reference.parent) == reference_before
    assert summary.retried == 0 and "platform_error" not in summary.failures


def _remove_image(client, image: str | None) -> None:
    try:
        client.images.remove(image, force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def check_outcomes(store, comp, docker_client, ids, alone_scores, hits, marker) -> None:
    """Each hostile case got its reason; the good ones scored as alone; nothing escaped or stayed behind."""
    subs = {name: store.get_submission(sid) for name, sid in ids.items()}
    report = {n: (s.status, s.failure_reason, s.failure_message) for n, s in subs.items()}
    for name, want in EXPECTED.items():
        got = subs[name]
        if want is None:
            assert got.status == "scored", (name, report[name])
        else:
            assert (got.status, got.failure_reason) == ("failed", want.value), (name, report[name], got.log_tail)
            assert got.counts_toward_quota == 1, name  # the submission's fault, charged

    # The good submission scores exactly as it did alone; so does the one that left processes behind.
    for name in ("good", "outlive"):
        assert {(r.metric, r.split): r.value for r in store.scores(ids[name])} == alone_scores, name

    # Reasons come with the detail a team needs.
    assert "status 5" in subs["network"].failure_message and "reached []" in subs["network"].log_tail
    assert not hits, f"a container reached the host listener from {hits}"
    assert "status 3" in subs["references"].failure_message and "found []" in subs["references"].log_tail
    assert "status 4" in subs["write_outside"].failure_message and "wrote []" in subs["write_outside"].log_tail
    assert "time limit" in subs["fork_bomb"].failure_message
    assert "out-of-memory" in subs["memory_bomb"].failure_message
    assert "symlink" in subs["symlink_output"].failure_message
    assert "larger than the output cap" in subs["huge_predictions"].failure_message
    assert "binary data" in subs["binary_predictions"].failure_message  # the intake message
    assert "missing-program" in subs["bad_command"].failure_message
    filled = subs["fill_disk"].log_tail.split("FILLED ")[1].split()
    sizes = dict(kv.split("=") for kv in filled[:3])
    assert 0 < int(sizes["tmp"]) <= TMP_CAP and 0 < int(sizes["scratch"]) <= TMP_CAP
    assert 0 < int(sizes["output"]) <= OUTPUT_CAP + 2**20
    flood_log = subs["log_flood"].log_tail
    assert flood_log.rstrip().splitlines()[-1].startswith("FLOOD-END bytes=")
    flood_job = store._query("SELECT spec_json FROM jobs WHERE submission_id=?", (ids["log_flood"],))[0]
    flood_spec = JobSpec.from_dict(json.loads(flood_job["spec_json"]))
    flood_file = Path(flood_spec.output_dir).parent / f"{flood_spec.job_id}.log"
    assert flood_file.stat().st_size <= LOG_CAP + 100

    # The platform is as it was: nothing left running or mounted (inputs and references: checked by the caller).
    for row in store._query("SELECT j.spec_json FROM jobs j JOIN submissions s ON s.id=j.submission_id "
                           "WHERE s.competition_id=?", (comp.id,)):
        spec = JobSpec.from_dict(json.loads(row["spec_json"]))
        assert not docker_client.containers.list(all=True, filters={"name": container_name(spec)})
        out = Path(spec.output_dir)
        assert not any(p.is_symlink() for p in out.iterdir()), out
    assert str(store.root) not in Path("/proc/self/mounts").read_text()
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, marker)]
    assert not leftovers, f"processes outlived their job: {leftovers}"
    assert docker_client.ping()


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
