"""The control plane against AWS Batch (real boto3 against moto's server, jobs in real containers).

* An endpoint that goes away for 30 s (a TCP proxy in front of moto that stops accepting) and comes back:
  every submission ends scored, none is charged, none "gave up".
* A job Batch never places (RUNNABLE with Batch's capacity reason) is shown with that reason in
  `referee status`, its --json and the web page.
* An operator's terminate-job is a platform failure: retried, and its instance time is the platform's.
* A sharded submission goes out as one array job; each child sees only its shard.
* `create_queue` builds a sandboxed compute environment: checked through boto3's describe calls.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, prepare_example
from test_aws_batch import batch_competition, moto_aws  # noqa: F401 - the session's moto server

from referee.platform.backends.aws_batch import AwsBatchBackend
from referee.platform.controller.backoff import CircuitBreaker
from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = [pytest.mark.control, pytest.mark.aws]
CODE = EXAMPLES / "deepfake" / "code"


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target``; ``down()`` closes the port and every connection
    (callers get "connection refused"), ``up()`` opens it again on the same port."""

    def __init__(self, target: int):
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_an_endpoint_gone_for_30s_costs_no_submission_anything(moto_aws, tmp_path, base_image):  # noqa: F811
    store, comp = batch_competition(tmp_path)
    sids = [submit(store, comp, team, CODE / "good") for team in ("alpha", "bravo", "charlie", "delta")]
    proxy = FlakyProxy(int(moto_aws.endpoint.rsplit(":", 1)[1]))
    backend = AwsBatchBackend(job_queue="flaky", endpoint_url=proxy.url, session=moto_aws.session,
                              create_queue={"service_role": moto_aws.role_arn}, api_timeout_s=3, api_attempts=1)
    outage: dict[str, float] = {}

    def on_progress(event: str, sid: int) -> None:
        if event == "started" and "down" not in outage:  # the first job went out: now the endpoint goes away
            outage["down"] = time.monotonic()
            proxy.down()
            threading.Timer(30.0, lambda: (proxy.up(), outage.setdefault("up", time.monotonic()))).start()

    ctl = Controller(store, comp, backend, poll_interval=0.3, max_poll_interval=2.0, on_progress=on_progress,
                     breaker=CircuitBreaker(base_s=0.5, cap_s=4.0))
    summary = ctl.run()
    assert outage.get("up") and outage["up"] - outage["down"] >= 29.9  # the run rode out the whole outage
    assert (summary.scored, summary.failed, summary.retried) == (4, 0, 0), summary
    assert summary.outages >= 1
    for sid in sids:
        sub = store.get_submission(sid)
        assert sub.status == "scored" and sub.attempts == 1 and sub.failure_reason is None
        assert [j.state.value for j in store.jobs_of(sid)] == ["succeeded"]  # no attempt was spent or lost
    events = store.events(competition_id=comp.id)
    kinds = [e["kind"] for e in events]
    assert "backend_unavailable" in kinds and "backend_recovered" in kinds
    assert not any("gave up" in (e["message"] or "") for e in events) and "retry" not in kinds
    proxy.down()


STUCK_REASON = ("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity requested for "
                "instance type [p3.2xlarge]")


@pytest.fixture
def batch_holds_stuck_jobs(monkeypatch):
    """moto's Batch places every job at once (it has no capacity to run out of): jobs named ``stuck-...`` are
    held RUNNABLE with Batch's capacity statusReason instead, until someone terminates them, as AWS does
    when no instance can be had."""
    from moto.batch.models import Job
    status = Job.status
    run = Job.run

    def held_status(self: Any) -> Any:
        if self.job_name.startswith("stuck-"):
            return "FAILED" if self.job_stopped else "RUNNABLE"
        return status.fget(self)

    def held_run(self: Any) -> None:
        if not self.job_name.startswith("stuck-"):
            return run(self)
        self.job_stopped_reason = STUCK_REASON
        while not self.stop:
            time.sleep(0.1)
        self._mark_stopped(success=False)

    monkeypatch.setattr(Job, "status", property(held_status, status.fset))
    monkeypatch.setattr(Job, "run", held_run)


def test_a_runnable_forever_job_shows_batchs_reason(moto_aws, tmp_path, base_image,  # noqa: F811
                                                    batch_holds_stuck_jobs):
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from referee.platform.cli.main import cli
    from referee.platform.controller.actions import cancel_submission
    from referee.platform.web import access
    from referee.platform.web.app import create_app
    from referee.platform.web.auth import create_host_token
    ex = prepare_example("deepfake", tmp_path)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc.update(id="stuck", limits={}, resources={"cpu": 1, "memory": "512m", "timeout": "120s"},
               backend={"name": "aws-batch", "max_in_flight": 2, "stuck_after": "2s"})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, ex / "competition.yaml")
    sid = submit(store, comp, "alpha", CODE / "good")
    ctl = Controller(store, comp, moto_aws.backend(), poll_interval=0.2)
    t = threading.Thread(target=ctl.run)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not store.stuck_jobs(comp.id):
            assert time.monotonic() < deadline, "the job was never shown as stuck"
            time.sleep(0.2)
        got = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "status", "stuck", "--json"])
        assert got.exit_code == 0, got.output
        (row,) = json.loads(got.output)
        assert row["status"] == "running" and row["waiting"]["reason"] == f"RUNNABLE: {STUCK_REASON}"
        detail = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "status", "stuck", "--submission", str(sid)])
        assert "waiting for a machine" in detail.output and "INSUFFICIENT_INSTANCE_CAPACITY" in detail.output
        table = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "status", "stuck"], env={"COLUMNS": "300"})
        assert "waiting for a machine: RUNNABLE: CAPACITY" in table.output
        client = TestClient(create_app(store, run_scheduler=False))
        client.cookies.set(access.COOKIE, create_host_token(store))
        page = client.get(f"/submissions/{sid}")
        assert page.status_code == 200 and 'id="waiting"' in page.text and STUCK_REASON in page.text
        listing = client.get("/c/stuck/submissions")
        assert "waiting for a machine" in listing.text
    finally:
        cancel_submission(store, sid)  # the host gives up on it: the controller stops the Batch job
        t.join(60)
    assert not t.is_alive() and store.get_submission(sid).status == "cancelled"


def test_an_operator_terminate_is_retried_and_paid_by_the_platform(moto_aws, tmp_path, base_image):  # noqa: F811
    store, comp = batch_competition(tmp_path)
    doc = yaml.safe_load(Path(comp.source_path).read_text())  # type: ignore[arg-type]
    doc["resources"]["instance_type"] = "c5.large"
    Path(comp.source_path).write_text(yaml.safe_dump(doc))  # type: ignore[arg-type]
    comp = load_into_store(store, comp.source_path)  # type: ignore[arg-type]
    slow = tmp_path / "slow"  # the good model, taking a few seconds: long enough to be stopped midway
    slow.mkdir()
    (slow / "Dockerfile").write_text((CODE / "good" / "Dockerfile").read_text())
    (slow / "predict.py").write_text("import time\ntime.sleep(4)\n" + (CODE / "good" / "predict.py").read_text())
    sid = submit(store, comp, "alpha", slow)
    backend = moto_aws.backend()
    batch = moto_aws.client("batch")
    terminated: list[str] = []

    def on_progress(event: str, s: int) -> None:
        if event == "started" and not terminated:
            handle = store.latest_job(s).handle  # type: ignore[union-attr]
            deadline = time.monotonic() + 60
            while batch.describe_jobs(jobs=[handle])["jobs"][0]["status"] != "RUNNING":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(1.0)  # it held its instance for a while
            batch.terminate_job(jobId=handle, reason="operator: draining the instance for maintenance")
            terminated.append(handle)

    summary = Controller(store, comp, backend, poll_interval=0.2, on_progress=on_progress).run()
    assert (summary.scored, summary.failed, summary.retried) == (1, 0, 1)
    first, second = store.jobs_of(sid)
    assert (first.state.value, first.failure_reason) == ("failed", "platform_error")
    assert "stopped outside referee" in (first.message or "") and "draining" in (first.message or "")
    assert second.state.value == "succeeded"
    sub = store.get_submission(sid)
    assert sub.status == "scored" and sub.counts_toward_quota == 1  # the scored run counts, as any run does
    rows = store._query("SELECT job_id, amount, details_json FROM costs WHERE submission_id=? AND unit='USD' "
                        "AND tracker='instance-time'", (sid,))
    accounts = {r["job_id"]: (json.loads(r["details_json"]).get("account"), r["amount"]) for r in rows}
    assert accounts[first.id][0] == "platform" and accounts[first.id][1] > 0  # the terminated try: the host's
    assert accounts[second.id][0] is None  # the run that scored: the team's
    assert store.cost_spent(comp.id, "USD", team="alpha") == pytest.approx(accounts[second.id][1])


SHARD_CODE = """
import json, os, pathlib
inp = pathlib.Path(os.environ.get("REFEREE_INPUT", "/data/input"))
shard = json.loads((inp / "referee-shard.json").read_text())
files = sorted(p.name for p in inp.glob("x*.txt"))
assert files == sorted(f"{i}.txt" for i in shard["ids"]), (files, shard)
rows = "".join(f"{f[:-4]},{float((inp / f).read_text()):.2f}\\n" for f in files)
out = pathlib.Path(os.environ.get("REFEREE_OUTPUT", "/data/output"), os.environ.get("REFEREE_OUTPUT_FILE", "predictions.csv"))
out.write_text("id,label\\n" + rows)
print("shard", os.environ.get("REFEREE_SHARD"), "of", os.environ.get("REFEREE_SHARDS"), "wrote", len(files))
"""


def shard_competition(root: Path, cid: str, backend: dict[str, Any], shards: int, n: int = 12) -> Path:
    """A code competition whose inputs are one file per item (as a video per clip), and a shard-aware
    submission (a Dockerfile directory)."""
    d = root / cid
    (d / "input").mkdir(parents=True)
    value = [(i * 7 % 10 + 0.5) / 10 for i in range(n)]  # 0.05 ... 0.95: a perfect model scores accuracy 1
    for i in range(n):
        (d / "input" / f"x{i}.txt").write_text(f"{value[i]:.2f}\n")
    (d / "ref.csv").write_text("id,label\n" + "".join(f"x{i},{int(value[i] > 0.5)}\n" for i in range(n)))
    (d / "c.yaml").write_text(yaml.safe_dump({
        "id": cid, "title": "Sharded", "data": {"reference": "ref.csv", "input": "input"},
        "split": {"public_fraction": 0.5, "seed": 1}, "metrics": [{"scorer": "log_loss"}, {"scorer": "accuracy"}],
        "resources": {"cpu": 1, "memory": "256m", "timeout": "120s", "shards": shards},
        "backend": {"max_in_flight": 4, **backend}}))
    code = root / f"{cid}-code"
    code.mkdir()
    (code / "predict.py").write_text(SHARD_CODE)
    (code / "Dockerfile").write_text("FROM referee/base-python:bookworm\nCOPY predict.py /app/predict.py\n"
                                     'CMD ["python3", "/app/predict.py"]\n')
    return d


def test_a_sharded_submission_is_one_array_job_on_batch(moto_aws, tmp_path, base_image):  # noqa: F811
    moto_aws.client("s3").create_bucket(Bucket="referee-shards")
    d = shard_competition(tmp_path, "arr", {"name": "aws-batch"}, shards=3)
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, d / "c.yaml")
    sid = submit(store, comp, "alpha", tmp_path / "arr-code")
    backend = moto_aws.backend(data="s3", s3_bucket="referee-shards", input_cache=str(tmp_path / "instance"))
    submitted: list[dict] = []
    backend.batch.meta.events.register("before-parameter-build.batch.SubmitJob",
                                       lambda params, **_: submitted.append(params))
    summary = Controller(store, comp, backend, poll_interval=0.2).run()
    assert summary.scored == 1, store.get_submission(sid).failure_message
    assert len(submitted) == 1 and submitted[0]["arrayProperties"] == {"size": 3}  # one request for 3 shards
    handles = [j.handle for j in store.jobs_of(sid)]
    parent = handles[0].split(":")[0]
    assert handles == [f"{parent}:{i}" for i in range(3)]
    tail = store.get_submission(sid).log_tail or ""
    assert all(f"shard {k} of 3 wrote 4" in tail for k in range(3)), tail
    values = {(r.metric, r.split): r.value for r in store.scores(sid)}
    assert values[("accuracy", "public")] == 1.0 and values[("accuracy", "private")] == 1.0


def test_create_queue_builds_a_sandboxed_compute_environment(moto_aws, tmp_path):  # noqa: F811
    ec2 = moto_aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    iam = moto_aws.client("iam")
    trust = '{"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}]}'
    role = iam.create_role(RoleName="sandbox-instance", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="sandbox-instance")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="sandbox-instance", RoleName="sandbox-instance")
    assert role
    backend = AwsBatchBackend(job_queue="sandboxed", endpoint_url=moto_aws.endpoint, session=moto_aws.session,
                              create_queue={"service_role": moto_aws.role_arn, "egress_to": ["pl-63a5400a"],
                                            "pids_limit": 512, "compute_resources": {
                                                "type": "EC2", "instanceTypes": ["g4dn.xlarge"], "minvCpus": 0,
                                                "maxvCpus": 16, "subnets": [subnet], "instanceRole": profile}})
    batch = moto_aws.client("batch")
    env = batch.describe_compute_environments(computeEnvironments=["sandboxed-env"])["computeEnvironments"][0]
    cr = env["computeResources"]
    (sg_id,) = cr["securityGroupIds"]
    sg = ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]
    assert sg["VpcId"] == vpc
    egress = sg["IpPermissionsEgress"]  # nothing but TCP 443 to the listed prefix list (an S3 endpoint)
    assert len(egress) == 1 and egress[0]["FromPort"] == egress[0]["ToPort"] == 443
    assert [p["PrefixListId"] for p in egress[0]["PrefixListIds"]] == ["pl-63a5400a"]
    assert not egress[0].get("IpRanges") and not egress[0].get("Ipv6Ranges")
    lt_id = cr["launchTemplate"]["launchTemplateId"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"][0][
        "LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1  # a container is one hop too far for IMDS
    user_data = base64.b64decode(data["UserData"]).decode()
    assert "ECS_TASK_PIDS_LIMIT=512" in user_data and "install -d -m 1777 /var/lib/referee/input-cache" in user_data
    from referee.platform.core.jobs import JobSpec, Resources
    gpu = JobSpec(job_id="sb-gpu", submission_id=1, attempt=1, competition_id="sb", output_dir=str(tmp_path / "o"),
                  output_file="p.csv", image="referee/base-python:bookworm", command=["true"],
                  resources=Resources(cpu=4, memory=16 * 2**30, gpus=1))
    arn, _ = backend._job_definition(gpu)
    jd = batch.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"][0]["containerProperties"]
    assert jd["linuxParameters"]["sharedMemorySize"] == 8192  # room for PyTorch data loaders on a GPU job
    assert {u["name"] for u in jd["ulimits"]} == {"nofile", "core"}  # no per-uid nproc shared across jobs
    assert jd["user"] == "10001:10001" and jd["readonlyRootFilesystem"] and not jd["privileged"]
    cpu_job = JobSpec(job_id="sb-cpu", submission_id=1, attempt=1, competition_id="sb", output_dir=str(tmp_path / "o"),
                      output_file="p.csv", image="referee/base-python:bookworm", command=["true"],
                      sandbox={"shm_size": "1GiB"})
    assert backend.container_properties(cpu_job)["linuxParameters"]["sharedMemorySize"] == 1024
    # a request no instance type of the queue can meet is refused before dispatch, with the reason
    huge = JobSpec(job_id="sb-huge", submission_id=1, attempt=1, competition_id="sb", output_dir=str(tmp_path / "o"),
                   output_file="p.csv", image="referee/base-python:bookworm", resources=Resources(cpu=4, gpus=8))
    why = backend.unsatisfiable(huge)
    assert why and "g4dn.xlarge (4 vCPU, 16 GiB, 1 GPU)" in why and "8 GPU" in why
    assert backend.unsatisfiable(gpu) is None
