"""AWS Batch backend and artifact stores: real boto3 calls against moto's server, whose Batch runs each
job's container on the local Docker engine. moto neither retries nor enforces resources, so these tests
check referee's own retry accounting and the requests referee sends."""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, need, prepare_example, wait_final

from referee.platform.backends.aws_batch import (
    CANCEL_REASON,
    AwsBatchBackend,
    batch_status,
    ensure_job_queue,
    retry_strategy,
)
from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.errors import BackendError
from referee.platform.core.jobs import FailureReason, JobSpec, JobState, Resources
from referee.platform.runtime.artifacts import (
    LocalArtifactStore,
    S3ArtifactStore,
    blob_key,
)
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = pytest.mark.aws
CODE = EXAMPLES / "deepfake" / "code"
REGION = "us-east-1"


# -- moto's server, once per session -----------------------------------------------------------------
@dataclass
class MotoAws:
    endpoint: str
    session: Any
    role_arn: str
    server: Any
    _queues: int = 0

    def client(self, name: str) -> Any:
        return self.session.client(name, endpoint_url=self.endpoint)

    def backend(self, **options: Any) -> AwsBatchBackend:
        """A backend on a fresh job queue (created through referee's quick start)."""
        self._queues += 1
        queue = options.pop("job_queue", f"referee-q{self._queues}")
        return AwsBatchBackend(job_queue=queue, endpoint_url=self.endpoint, session=self.session,
                               create_queue={"service_role": self.role_arn}, **options)


_MOTO: MotoAws | None = None
_LOCK = threading.Lock()


def start_moto() -> MotoAws:
    """Start moto's server on 127.0.0.1 once per process (shared by every module that needs it)."""
    global _MOTO
    with _LOCK:
        if _MOTO is None:
            import boto3
            from moto.server import ThreadedMotoServer

            # Batch containers share the host network, so a job reaches moto's S3 at 127.0.0.1 (s3 mode).
            os.environ["MOTO_DOCKER_NETWORK_MODE"] = "host"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            atexit.register(server.stop)
            session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                            region_name=REGION)
            endpoint = f"http://127.0.0.1:{port}"
            trust = '{"Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}}]}'
            role = session.client("iam", endpoint_url=endpoint).create_role(
                RoleName="referee-batch-service", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
            _MOTO = MotoAws(endpoint=endpoint, session=session, role_arn=role, server=server)
        return _MOTO


@pytest.fixture(scope="session")
def moto_aws(docker_client) -> MotoAws:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        need(False, f"moto[server] ({exc})")
    return start_moto()


def job_spec(tmp: Path, name: str, image: str, code: str, *, timeout: float = 60, gpus: int = 0,
             input_dir: Path | None = None) -> JobSpec:
    out = tmp / name / "output"
    out.mkdir(parents=True)
    return JobSpec(job_id=f"t-{name}", submission_id=1, attempt=1, competition_id="t", output_dir=str(out),
                   output_file="predictions.csv", image=image, command=["python3", "-c", code],
                   input_dir=str(input_dir) if input_dir else None,
                   resources=Resources(cpu=2, memory=1024 * 2**20, gpus=gpus), timeout_s=timeout)




# -- Batch states and failures (real describe_jobs shapes) -------------------------------------------
def _desc(status: str, **kw: Any) -> dict:
    d = {"jobId": "j1", "status": status, "startedAt": 1_700_000_000_000, "stoppedAt": 1_700_000_030_000}
    d.update(kw)
    return d


@pytest.mark.parametrize("desc, state, reason", [
    (_desc("RUNNABLE"), JobState.QUEUED, None),
    (_desc("STARTING"), JobState.QUEUED, None),
    (_desc("RUNNING"), JobState.RUNNING, None),
    (_desc("SUCCEEDED", container={"exitCode": 0}), JobState.SUCCEEDED, None),
    (_desc("FAILED", statusReason="Essential container in task exited", container={"exitCode": 3}),
     JobState.FAILED, FailureReason.EXITED_NONZERO),
    (_desc("FAILED", statusReason="Host EC2 (instance i-0abc123) terminated."),
     JobState.FAILED, FailureReason.PLATFORM_ERROR),  # spot reclaim
    (_desc("FAILED", statusReason="Task failed to start",
           attempts=[{"container": {"reason": "CannotPullContainerError: pull access denied"}}]),
     JobState.FAILED, FailureReason.PLATFORM_ERROR),
    (_desc("FAILED", container={"exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory "
                                                            "usage"}), JobState.FAILED, FailureReason.OUT_OF_MEMORY),
    (_desc("FAILED", statusReason="Job attempt duration exceeded timeout"), JobState.FAILED, FailureReason.TIMED_OUT),
    (_desc("FAILED", statusReason=CANCEL_REASON), JobState.CANCELLED, FailureReason.CANCELLED),
    (_desc("FAILED"), JobState.FAILED, FailureReason.EXITED_NONZERO),  # no reason given: never a free retry
    # a broken image (its command does not exist): the image's fault, as on the Docker backend
    (_desc("FAILED", statusReason="Task failed to start", attempts=[{"container": {"reason": (
        'CannotStartContainerError: Error response from daemon: failed to create shim task: OCI runtime create '
        'failed: runc create failed: unable to start container process: exec: "predict": executable file not '
        'found in $PATH: unknown')}}]), JobState.FAILED, FailureReason.IMAGE_INVALID),
    (_desc("FAILED", statusReason="Task failed to start", attempts=[{"container": {"reason": (
        "CannotStartContainerError: Error response from daemon: OCI runtime create failed: exec format "
        "error")}}]), JobState.FAILED, FailureReason.IMAGE_INVALID),
    # any other start error is the platform's (retried, not charged)
    (_desc("FAILED", statusReason="Task failed to start", attempts=[{"container": {"reason": (
        "CannotStartContainerError: Error response from daemon: no space left on device")}}]),
     JobState.FAILED, FailureReason.PLATFORM_ERROR),
    (_desc("FAILED", statusReason="Task failed to start", attempts=[{"container": {"reason": (
        "CannotCreateContainerError: Error response from daemon: devmapper: Thin Pool has 0 free data "
        "blocks")}}]), JobState.FAILED, FailureReason.PLATFORM_ERROR),
    # s3 mode: exit status 97 is the stager's (the inputs could not be staged), the platform's fault
    (_desc("FAILED", container={"exitCode": 97}, tags={"referee.staged": "1"}), JobState.FAILED,
     FailureReason.PLATFORM_ERROR),
    (_desc("FAILED", container={"exitCode": 97}), JobState.FAILED, FailureReason.EXITED_NONZERO),
    # a pull fails by the team's doing only when the image's content cannot be unpacked
    (_desc("FAILED", statusReason="Task failed to start", attempts=[{"container": {"reason": (
        "CannotPullContainerError: failed to register layer: Error processing tar file(exit status 1): "
        "invalid argument")}}]), JobState.FAILED, FailureReason.IMAGE_INVALID),
    (_desc("FAILED", statusReason="Task failed to start", attempts=[{"container": {"reason": (
        "CannotPullContainerError: Error response from daemon: manifest for 1.dkr.ecr.us-east-1.amazonaws.com/"
        "r@sha256:00 not found: manifest unknown")}}]), JobState.FAILED, FailureReason.PLATFORM_ERROR),
])
def test_batch_states_map_to_referee(desc, state, reason):
    st = batch_status(desc)
    assert (st.state, st.reason) == (state, reason)
    assert (st.finished_at is not None) == state.final  # only a final state says when it ended
    # every description here carries Batch's startedAt; a job still waiting for a machine has not started
    assert (st.started_at is not None) == (state is not JobState.QUEUED)


def test_start_errors_use_the_sandboxs_own_list():
    from referee.platform.runtime import sandbox
    from referee.platform.backends import batch_status
    assert batch_status._INVALID_START is sandbox._INVALID_START  # one list for both backends


def test_retry_strategy_retries_infrastructure_only():
    rs = retry_strategy(3)
    assert rs["attempts"] == 3 and len(rs["evaluateOnExit"]) <= 5  # Batch allows five rules
    retry = [r for r in rs["evaluateOnExit"] if r["action"] == "RETRY"]
    assert {"onStatusReason": "Host EC2*", "action": "RETRY"} in retry
    assert all("onExitCode" not in r for r in retry)  # a submission's own exit status is never retried
    assert rs["evaluateOnExit"][-1] == {"onExitCode": "*", "action": "EXIT"}


# -- requests referee sends ---------------------------------------------------------------------------
def test_job_definition_requests_gpu_resources_timeout_retry_and_sandbox(moto_aws, tmp_path, base_image):
    backend = moto_aws.backend(gpu_job_queue=None, batch_attempts=2)
    gpu_queue = ensure_job_queue(moto_aws.session, "referee-gpu", endpoint_url=moto_aws.endpoint,
                                 service_role=moto_aws.role_arn)
    backend.gpu_job_queue = "referee-gpu"
    inp = tmp_path / "in"
    inp.mkdir()
    job = job_spec(tmp_path, "gpu", base_image, "print('hi')", timeout=5, gpus=1, input_dir=inp)
    handle = backend.submit(job)
    batch = moto_aws.client("batch")
    desc = batch.describe_jobs(jobs=[handle])["jobs"][0]
    assert desc["jobQueue"] == gpu_queue
    assert desc["tags"]["referee.job_id"] == "t-gpu"
    jd = batch.describe_job_definitions(jobDefinitions=[desc["jobDefinition"]])["jobDefinitions"][0]
    props = jd["containerProperties"]
    reqs = {r["type"]: r["value"] for r in props["resourceRequirements"]}
    assert reqs == {"VCPU": "2", "MEMORY": "1024", "GPU": "1"}
    assert jd["timeout"] == {"attemptDurationSeconds": 60}  # Batch's minimum; referee stops it at 5 s itself
    assert jd["retryStrategy"]["attempts"] == 2
    assert {"onStatusReason": "Host EC2*", "action": "retry"} in jd["retryStrategy"]["evaluateOnExit"]
    assert props["user"] == "10001:10001" and props["readonlyRootFilesystem"] is True
    assert props["privileged"] is False and props["linuxParameters"]["initProcessEnabled"] is True
    mounts = {m["containerPath"]: m["readOnly"] for m in props["mountPoints"]}
    assert mounts == {"/data/input": True, "/data/output": False}
    volumes = {v["name"]: v["host"]["sourcePath"] for v in props["volumes"]}
    assert volumes["input"] == str(inp) and Path(volumes["output"]).parent == Path(job.output_dir).parent
    assert str(Path(job.output_dir)) not in volumes.values()  # the container never writes the output dir
    wait_final(backend, [handle])
    backend.cleanup(handle)  # a per-job definition (its own mounts) is deregistered
    assert batch.describe_job_definitions(jobDefinitions=[jd["jobDefinitionArn"]])["jobDefinitions"][0][
        "status"] == "INACTIVE"


def test_efs_volumes_and_shared_root(moto_aws, tmp_path):
    shared = tmp_path / "efs"
    (shared / "comp" / "input").mkdir(parents=True)
    backend = moto_aws.backend(shared_root=str(shared), fleet_root="/mnt/efs", efs_file_system_id="fs-0123abcd")
    job = job_spec(shared / "ws", "efs", "referee/base-python:bookworm", "pass", input_dir=shared / "comp" / "input")
    props = backend.container_properties(job)
    efs = {v["name"]: v["efsVolumeConfiguration"] for v in props["volumes"]}
    assert efs["input"] == {"fileSystemId": "fs-0123abcd", "rootDirectory": "/comp/input",
                            "transitEncryption": "ENABLED"}
    assert efs["output"]["rootDirectory"] == "/ws/efs/container-output"
    arn = moto_aws.client("batch").register_job_definition(jobDefinitionName="efs-check", type="container",
                                                           containerProperties=props)["jobDefinitionArn"]
    sent = moto_aws.client("batch").describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"][0]
    assert sent["containerProperties"]["volumes"] == props["volumes"]
    outside = job_spec(tmp_path / "elsewhere", "x", "img", "pass")
    with pytest.raises(BackendError, match="not under shared_root"):
        backend.container_properties(outside)


def test_bad_options_are_typed_errors(moto_aws):
    with pytest.raises(BackendError, match="s3_bucket"):
        AwsBatchBackend(data="s3", endpoint_url=moto_aws.endpoint, session=moto_aws.session)
    with pytest.raises(BackendError, match="shared-fs"):
        AwsBatchBackend(data="ftp", endpoint_url=moto_aws.endpoint, session=moto_aws.session)
    backend = moto_aws.backend()
    job = JobSpec(job_id="t-x", submission_id=1, attempt=1, competition_id="t", output_dir="/tmp/x",
                  output_file="p.csv", command=["true"], sandbox={"user": "0:0"})
    with pytest.raises(BackendError, match="container images"):
        backend.submit(job)
    job.image = "referee/base-python:bookworm"
    with pytest.raises(BackendError, match="sandbox.user"):
        backend.container_properties(job)


# -- the scheduler on Batch: retry accounting -------------------------------------------------------
def batch_competition(root: Path, retries: int = 2) -> tuple[Store, Any]:
    ex = prepare_example("deepfake", root)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc.update(limits={}, backend={"name": "aws-batch", "max_in_flight": 4, "max_infra_retries": retries},
               resources={"cpu": 1, "memory": "512m", "timeout": "120s"})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(root / "ws")
    return store, load_into_store(store, ex / "competition.yaml")


def test_spot_reclaim_is_retried_and_not_charged_a_crash_is_not_retried(moto_aws, tmp_path, base_image):
    store, comp = batch_competition(tmp_path)
    good = submit(store, comp, "alpha", CODE / "good")
    crash = submit(store, comp, "bravo", CODE / "crash")
    backend = moto_aws.backend()
    batch = moto_aws.client("batch")
    reclaimed: list[str] = []

    def on_progress(event: str, sid: int) -> None:
        if event == "started" and sid == good and not reclaimed:  # the first attempt loses its instance
            handle = store._query("SELECT handle FROM jobs WHERE submission_id=? ORDER BY attempt DESC LIMIT 1",
                                 (sid,))[0]["handle"]
            batch.terminate_job(jobId=handle, reason="Host EC2 (instance i-0123456789abcdef0) terminated.")
            reclaimed.append(handle)

    summary = Controller(store, comp, backend, poll_interval=0.2, on_progress=on_progress).run()
    assert (summary.scored, summary.failed, summary.retried) == (1, 1, 1)
    jobs = store._query("SELECT attempt, state, failure_reason, handle FROM jobs WHERE submission_id=? "
                       "ORDER BY attempt", (good,))
    assert [(j["attempt"], j["state"], j["failure_reason"]) for j in jobs] == \
        [(1, "failed", "platform_error"), (2, "succeeded", None)]
    assert jobs[0]["handle"] == reclaimed[0] != jobs[1]["handle"]
    g = store.get_submission(good)
    assert g.status == "scored" and g.attempts == 2 and g.counts_toward_quota == 1
    assert {r.split for r in store.scores(good)} == {"public", "private"}
    c = store.get_submission(crash)
    assert (c.status, c.failure_reason, c.attempts, c.counts_toward_quota) == ("failed", "exited_nonzero", 1, 1)
    assert "ValueError" in (c.log_tail or "")  # read back from CloudWatch Logs
    assert "wrote 2000 predictions" in (g.log_tail or "")


def test_timeout_cancel_logs_and_lost_handle(moto_aws, tmp_path, base_image):
    backend = moto_aws.backend()
    slow = job_spec(tmp_path, "slow", base_image, "import time; print('napping', flush=True); time.sleep(300)",
                    timeout=3)
    victim = job_spec(tmp_path, "victim", base_image, "import time; time.sleep(300)")
    handles = [backend.submit(slow), backend.submit(victim)]
    deadline = time.monotonic() + 60
    while backend.poll([handles[1]])[handles[1]].state != JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    backend.cancel(handles[1])
    backend.cancel(handles[1])  # idempotent
    st = wait_final(backend, handles)
    assert st[handles[0]].reason == FailureReason.TIMED_OUT
    assert st[handles[1]].state == JobState.CANCELLED
    end = time.monotonic() + 30
    while {d["status"] for d in moto_aws.client("batch").describe_jobs(jobs=handles)["jobs"]} != {"FAILED"}:
        assert time.monotonic() < end, "Batch did not stop the jobs"  # both really stop on Batch
        time.sleep(0.3)
    assert "napping" in backend.logs(handles[0])  # CloudWatch Logs, shipped when the container stopped
    lost = backend.poll(["00000000-0000-0000-0000-000000000000"])
    assert lost["00000000-0000-0000-0000-000000000000"].reason == FailureReason.PLATFORM_ERROR


def test_polls_describe_jobs_in_batches_of_100(moto_aws):
    backend = moto_aws.backend()
    sizes: list[int] = []
    backend.batch.meta.events.register("before-parameter-build.batch.DescribeJobs",
                                       lambda params, **_: sizes.append(len(params["jobs"])))
    handles = [f"00000000-0000-0000-0000-{i:012d}" for i in range(250)]
    st = backend.poll(handles)
    assert sizes == [100, 100, 50]
    assert all(s.reason == FailureReason.PLATFORM_ERROR for s in st.values())  # unknown to Batch: lost


# -- s3 mode and artifact stores -----------------------------------------------------------------------
def test_s3_mode_uploads_inputs_once_and_jobs_hold_no_credentials(moto_aws, tmp_path, base_image):
    moto_aws.client("s3").create_bucket(Bucket="referee-art")
    backend = moto_aws.backend(data="s3", s3_bucket="referee-art", s3_prefix="c1",
                               input_cache=str(tmp_path / "instance"))
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "a.txt").write_text("alpha\n")
    (inp / "sub" / "b.txt").write_text("bravo\n")
    code = ("import os; p = os.environ['REFEREE_INPUT']; "
            "txt = open(p + '/a.txt').read() + open(p + '/sub/b.txt').read(); "
            "creds = [k for k in os.environ if k.startswith('AWS_') and k != 'AWS_BATCH_JOB_ID']; "
            "open(os.path.join(os.environ['REFEREE_OUTPUT'], os.environ['REFEREE_OUTPUT_FILE']), 'w')"
            ".write(txt + repr(creds))")
    jobs = [job_spec(tmp_path, f"s3-{i}", base_image, code, input_dir=inp) for i in range(2)]
    handles = [backend.submit(j) for j in jobs]
    st = wait_final(backend, handles)
    for h, job in zip(handles, jobs):
        assert st[h].state == JobState.SUCCEEDED, st[h]
        assert (Path(job.output_dir) / "predictions.csv").read_text() == "alpha\nbravo\n[]"
    keys = [o["Key"] for o in moto_aws.client("s3").list_objects_v2(Bucket="referee-art", Prefix="c1/blobs/")
            .get("Contents", [])]
    assert len(keys) == 3  # two input files and one manifest, uploaded once for both jobs
    props = backend.container_properties(jobs[0])
    assert props["command"][:2] == ["python3", "-c"]
    # the inputs are cached on the instance volume (one fetch for both jobs), never in the sandbox's tmpfs
    assert props["volumes"] == [{"name": "input-cache", "host": {"sourcePath": str(tmp_path / "instance" / "t")}}]
    from referee.platform.runtime.inputcache import fetch_count
    assert fetch_count(tmp_path / "instance" / "t") == 1
    for h in handles:
        backend.cleanup(h)
    left = moto_aws.client("s3").list_objects_v2(Bucket="referee-art", Prefix="c1/jobs/").get("KeyCount", 0)
    assert left == 0


def test_a_staging_failure_is_the_platforms_and_a_submissions_97_is_its_own(moto_aws, tmp_path, base_image):
    """An input blob that arrives corrupt makes the stager exit 97: a platform error (retried, never
    charged); a submission that exits 97 itself is reported as exiting 1, its own failure."""
    moto_aws.client("s3").create_bucket(Bucket="referee-stage")
    backend = moto_aws.backend(data="s3", s3_bucket="referee-stage", s3_prefix="c1",
                               input_cache=str(tmp_path / "instance"))
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.txt").write_text("alpha\n")
    assert backend.artifacts is not None
    backend.artifacts.put_tree(inp)
    from referee.platform.core.hashing import file_sha256
    key = backend.artifacts.key(blob_key(file_sha256(inp / "a.txt")))
    moto_aws.client("s3").put_object(Bucket="referee-stage", Key=key, Body=b"ALPHA\n")  # same size, other bytes
    corrupt = job_spec(tmp_path, "corrupt", base_image, "print('never runs')", input_dir=inp)
    own97 = job_spec(tmp_path, "own97", base_image, "import sys; sys.exit(97)")
    handles = [backend.submit(corrupt), backend.submit(own97)]
    st = wait_final(backend, handles)
    assert all(s.state == JobState.FAILED for s in st.values()), st
    assert "referee stager: staging the inputs failed" in backend.logs(handles[0])
    assert "arrived corrupt" in backend.logs(handles[0])
    assert not list((tmp_path / "instance").rglob("a.txt"))  # nothing half-fetched is left to reuse
    assert "exited with 97, reported as 1" in backend.logs(handles[1])
    # moto's describe_jobs leaves out the exit code that AWS Batch reports (its list_jobs has it): put it
    # back where AWS puts it and map what AWS would say
    batch = moto_aws.client("batch")
    codes = {j["jobId"]: (j.get("container") or {}).get("exitCode")
             for j in batch.list_jobs(jobQueue=backend.job_queue, jobStatus="FAILED")["jobSummaryList"]}
    assert [codes[h] for h in handles] == [97, 1]
    descs = {d["jobId"]: d for d in batch.describe_jobs(jobs=handles)["jobs"]}
    for h, reason in zip(handles, (FailureReason.PLATFORM_ERROR, FailureReason.EXITED_NONZERO)):
        descs[h].setdefault("container", {})["exitCode"] = codes[h]
        assert batch_status(descs[h]).reason is reason, descs[h]
    for h in handles:
        backend.cleanup(h)


def test_artifact_stores_round_trip_and_refuse_corruption(moto_aws, tmp_path):
    src = tmp_path / "tree"
    (src / "d").mkdir(parents=True)
    (src / "x.bin").write_bytes(os.urandom(4096))
    (src / "d" / "y.txt").write_text("why\n")
    moto_aws.client("s3").create_bucket(Bucket="referee-rt")
    stores = [LocalArtifactStore(tmp_path / "art"), S3ArtifactStore("referee-rt", "p", client=moto_aws.client("s3"))]
    for store in stores:
        sha = store.put_tree(src)
        assert store.put_tree(src) == sha  # content-addressed: the same tree, the same id
        dest = store.get_tree(sha, tmp_path / f"out-{type(store).__name__}")
        assert (dest / "x.bin").read_bytes() == (src / "x.bin").read_bytes()
        assert (dest / "d" / "y.txt").read_text() == "why\n"
        store.put_output("job-1", "predictions.csv", src / "d" / "y.txt")
        assert store.output_size("job-1", "predictions.csv") == 4
        store.delete_outputs("job-1")
        assert store.output_size("job-1", "predictions.csv") is None
    local = stores[0]
    entry = local.manifest(local.put_tree(src))["files"]["d/y.txt"]
    Path(local.location(blob_key(entry["sha256"]))).write_text("tampered")
    with pytest.raises(BackendError, match="corrupt"):
        local.get_file(entry["sha256"], tmp_path / "again.txt")
    (src / "link").symlink_to(src / "x.bin")
    with pytest.raises(BackendError, match="symlinks"):
        local.put_tree(src)
    with pytest.raises(BackendError, match="unsafe path"):
        local.get_output("../../etc", "passwd", tmp_path / "nope")


# -- re-attached jobs, capped downloads, short-lived URLs ----------------------------------------------
def test_reattached_job_keeps_its_output_reason(moto_aws, tmp_path, base_image):
    """A restarted scheduler's backend settles a finished job it did not submit exactly like its own: an
    oversize or symlinked prediction file keeps its reason, instead of reading as a missing file."""
    first = moto_aws.backend()
    write = "import os; p = os.path.join(os.environ['REFEREE_OUTPUT'], os.environ['REFEREE_OUTPUT_FILE']); "
    big = job_spec(tmp_path, "big", base_image, write + "open(p, 'w').write('x' * 5000)")
    link = job_spec(tmp_path, "link", base_image, write + "os.symlink('/etc/hostname', p)")
    good = job_spec(tmp_path, "good", base_image, write + "open(p, 'w').write('id,p\\n')")
    for job in (big, link, good):
        job.sandbox = {"max_output_bytes": 4096}
    handles = [first.submit(j) for j in (big, link, good)]
    again = moto_aws.backend(job_queue=first.job_queue)  # a new process: it knows none of these jobs
    st = wait_final(again, handles)
    assert (st[handles[0]].state, st[handles[0]].reason) == (JobState.FAILED, FailureReason.INVALID_OUTPUT)
    assert "larger than the output cap of 4096 bytes" in st[handles[0]].message
    assert (st[handles[1]].state, st[handles[1]].reason) == (JobState.FAILED, FailureReason.NO_OUTPUT)
    assert "symlink" in st[handles[1]].message
    assert st[handles[2]].state == JobState.SUCCEEDED
    out = again.collect(handles[2], good)
    assert (out / "predictions.csv").read_text() == "id,p\n"
    for h, job in zip(handles, (big, link, good)):
        again.cleanup(h)
        assert not (Path(job.output_dir).parent / ".aws-batch-job.json").exists()


def test_s3_urls_expire_with_the_job(moto_aws, tmp_path):
    from urllib.parse import parse_qs, urlparse
    from urllib.request import urlopen

    moto_aws.client("s3").create_bucket(Bucket="referee-exp")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.txt").write_text("alpha\n")
    sent: list[dict] = []

    def lifetime(url: str) -> float:
        """Seconds a presigned URL stays valid (SigV4: X-Amz-Expires; SigV2: Expires, an epoch time)."""
        q = parse_qs(urlparse(url).query)
        if "X-Amz-Expires" in q:
            return float(q["X-Amz-Expires"][0])
        return float(q["Expires"][0]) - time.time()

    class Stop(Exception):
        pass

    def capture(params, **_):
        sent.append(params)
        raise Stop  # the request is all this test needs; no job runs

    for options, expected in (({}, 600 + 3600), ({"url_margin_s": 120}, 600 + 120), ({"url_expiry_s": 900}, 900)):
        backend = moto_aws.backend(data="s3", s3_bucket="referee-exp", **options)
        backend.batch.meta.events.register("before-parameter-build.batch.SubmitJob", capture)
        job = job_spec(tmp_path / str(expected), "exp", "referee/base-python:bookworm", "pass", timeout=600,
                       input_dir=inp)
        assert backend.url_expiry(job) == expected
        with pytest.raises(Stop):
            backend.submit(job)
        env = {e["name"]: e["value"] for e in sent[-1]["containerOverrides"]["environment"]}
        stage_url = env["REFEREE_STAGE_URL"]
        assert lifetime(stage_url) == pytest.approx(expected, abs=30)
        doc = __import__("json").load(urlopen(stage_url, timeout=30))
        assert len(doc["files"]) == 1
        for url in [*(f["url"] for f in doc["files"].values()), doc["output_url"]]:
            assert lifetime(url) == pytest.approx(expected, abs=30)
    with pytest.raises(BackendError, match="url_expiry_s"):
        moto_aws.backend(data="s3", s3_bucket="referee-exp", url_expiry_s=0)


def test_output_downloads_are_capped(moto_aws, tmp_path):
    from referee.platform.runtime.artifacts import OutputTooLarge
    src = tmp_path / "pred.csv"
    src.write_bytes(b"x" * 2000)
    moto_aws.client("s3").create_bucket(Bucket="referee-cap")
    s3 = S3ArtifactStore("referee-cap", "p", client=moto_aws.client("s3"))
    for store in (LocalArtifactStore(tmp_path / "art"), s3):
        store.put_output("job-1", "pred.csv", src)
        dest = tmp_path / f"got-{type(store).__name__}" / "pred.csv"
        with pytest.raises(OutputTooLarge, match="cap of 1999 bytes"):
            store.get_output("job-1", "pred.csv", dest, max_bytes=1999)
        assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written
        assert store.get_output("job-1", "pred.csv", dest, max_bytes=2000).read_bytes() == src.read_bytes()

    # the size an object claims is not trusted: what streams in is counted
    class Lying:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def get_object(self, **kw):
            obj = self._client.get_object(**kw)
            obj["ContentLength"] = 10
            return obj

    liar = S3ArtifactStore("referee-cap", "p", client=Lying(moto_aws.client("s3")))
    dest = tmp_path / "liar" / "pred.csv"
    with pytest.raises(OutputTooLarge):
        liar.get_output("job-1", "pred.csv", dest, max_bytes=1000)
    assert not dest.exists() and not list(dest.parent.iterdir())
