"""AWS Batch backend (boto3): each job is a Batch job on a configured job queue.

A job definition carries the image, the resource requests (VCPU, MEMORY, GPU), the attempt timeout,
a retryStrategy that retries infrastructure failures only (evaluateOnExit), and the sandbox settings
Batch understands (non-root user, read-only root file system, no privileges, tmpfs, ulimits).

Data moves one of two ways (option ``data``):

* ``shared-fs`` (default): the job's input and output directories live on a file system that the fleet
  mounts too (EFS, NFS, or this machine for moto); the job definition mounts the input read-only at
  ``/input`` and the job's own output directory at ``/output``. No network is needed by the job.
* ``s3``: inputs are uploaded once, content-addressed, to an S3 artifact store; the job receives one
  presigned URL to a staging manifest, and a small stager (``python3`` in the image) downloads the inputs,
  runs the submission and uploads its prediction file. The job holds no AWS credentials.

The handle is the Batch ``jobId``; everything poll needs (timeout, instance type) travels as job tags,
so a restarted scheduler re-attaches to running jobs. The job's spec is also written next to its output
directory (named by a tag), so a re-attached job's output is checked and copied out in ``poll`` exactly
as for a job this process submitted: an oversize or symlinked prediction file keeps its own reason.

Presigned URLs (s3 mode) expire with the job: its timeout plus ``url_margin_s`` (queueing), not after
the 7-day maximum; ``url_expiry_s`` fixes another expiry.

The shards of a sharded submission go out as one array job (s3 mode): child ``i`` stages shard ``i``'s
inputs through its own manifest and writes its own output; a shard that is lost later is submitted again
as a job of its own. Control-plane errors become ``BackendUnavailable`` (``aws_errors.py``); the queue
``create_queue`` builds and the capacity check live in ``batch_queue.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from referee.platform.backends.aws_errors import aws_call, client_config
from referee.platform.backends.batch_queue import INPUT_CACHE_DIR, QueueCapacity, ensure_job_queue
from referee.platform.core.backend import Backend, lost_handle
from referee.platform.core.errors import BackendError
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    JobState,
    JobStatus,
    now_utc,
)
from referee.platform.backends.batch_status import (  # noqa: F401 - part of this module's interface
    CANCEL_REASON,
    INFRA_RULES,
    STAGE_FAILED_EXIT,
    TAG_INSTANCE,
    TAG_STAGED,
    TIMEOUT_REASON,
    batch_status,
    retry_strategy,
)

DESCRIBE_BATCH = 100  # describe_jobs takes at most 100 job ids
MIN_ATTEMPT_SECONDS = 60  # Batch refuses shorter attempt timeouts; referee enforces shorter ones itself
TAG_TIMEOUT = "referee.timeout_s"
TAG_JOB = "referee.job_id"
TAG_OUTPUT_DIR = "referee.output_dir"  # where the job's spec file lies (see job_spec_file)
MAX_TAG_VALUE = 256  # Batch's limit on a tag value
MAX_URL_EXPIRY_S = 7 * 24 * 3600  # SigV4's limit on a presigned URL
SPEC_FILE = ".aws-batch-job.json"
ARRAY_SPEC_FILE = ".aws-batch-array.json"  # an array job's shard specs, next to its first shard's output

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")

# Runs inside the job container in s3 mode: stdlib only, so any image with python3 works. The input tree
# is materialised once per instance into the instance volume mounted at CACHE_MOUNT (inputcache.py, the
# same code a Ray node runs, is prepended), re-checked file by file before each reuse (an earlier job on
# the instance could write the cache), and never lands in the sandbox's tmpfs. Exit status 97 with
# "referee stager:" on stderr says staging failed: the platform's fault, retried, never charged.
CACHE_MOUNT = "/referee-cache"
STAGER_MAIN = r"""
import json, os, shutil, subprocess, sys, urllib.request
from pathlib import Path
def _get(url):
    return urllib.request.urlopen(url, timeout=600)
try:
    stage = json.load(_get(os.environ.pop("REFEREE_STAGE_URL")))
    if "stages" in stage:  # an array job: each child stages its own shard (its index, or its job id's suffix)
        index = os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX") or os.environ.get("AWS_BATCH_JOB_ID", ":0").rsplit(":", 1)[1]
        stage = json.load(_get(stage["stages"][int(index)]))
    out = Path(os.environ.get("REFEREE_STAGE_DIR", "/tmp/referee")) / "output"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, REFEREE_OUTPUT=str(out))
    env.update(stage.get("env") or {})
    if stage.get("tree"):
        cache = InputCache(os.environ.get("REFEREE_CACHE_DIR", "/referee-cache"),
                           int(os.environ.get("REFEREE_CACHE_MAX_BYTES", str(100 * 2**30))))
        inp = cache.materialise(stage["tree"], stage["files"], url_fetcher, verify=True)
        env["REFEREE_INPUT"] = str(inp)
        hold = cache.use(stage["tree"])
        hold.__enter__()
except Exception as exc:
    sys.stderr.write("referee stager: staging the inputs failed: %s: %s\n" % (type(exc).__name__, exc))
    sys.exit(97)
rc = subprocess.call(sys.argv[1:], env=env)
if rc == 97:
    sys.stderr.write("referee stager: the submission exited with 97, reported as 1 (97 means staging failed)\n")
    rc = 1
result = out / stage["output_name"]
if rc == 0 and result.is_file() and not result.is_symlink():
    with open(result, "rb") as f:
        req = urllib.request.Request(stage["output_url"], data=f.read(), method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req, timeout=600).close()
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def stager_script() -> str:
    """The s3-mode stager: the input cache (stdlib only) followed by the staging main."""
    from referee.platform.runtime import inputcache
    source = Path(inputcache.__file__).read_text(encoding="utf-8").replace("from __future__ import annotations\n", "")
    return source + "\n" + STAGER_MAIN


def resource_requirements(job: JobSpec) -> list[dict[str, str]]:
    """VCPU (whole vCPUs on EC2), MEMORY (MiB) and GPU, as Batch's resourceRequirements."""
    r = job.resources
    reqs = [{"type": "VCPU", "value": str(max(1, math.ceil(r.cpu)))},
            {"type": "MEMORY", "value": str(max(4, r.memory_mib))}]
    if r.gpus:
        reqs.append({"type": "GPU", "value": str(int(r.gpus))})
    return reqs


def sandbox_policy(job: JobSpec) -> Any:
    """The job's sandbox settings (validated); a bad setting is a BackendError naming the field."""
    from referee.platform.core.errors import SpecError
    from referee.platform.runtime.sandbox import SandboxPolicy
    try:
        return SandboxPolicy.from_mapping(job.sandbox, where=f"job {job.job_id}")
    except SpecError as exc:
        raise BackendError(str(exc)) from None


def batch_user(policy: Any) -> str:
    """A numeric uid:gid for Batch (``auto`` is the sandbox user the base images create)."""
    if policy.user != "auto":
        return str(policy.user)
    from referee.platform.runtime.images import SANDBOX_UID
    return f"{SANDBOX_UID}:{SANDBOX_UID}"


def scratch_dir(job: JobSpec) -> Path:
    """What the container writes (shared-fs mode): next to the job's output directory, as in the sandbox."""
    from referee.platform.runtime.sandbox import SCRATCH_DIR
    return Path(job.output_dir).parent / SCRATCH_DIR


def job_spec_file(output_dir: str | Path) -> Path:
    """Where ``submit`` leaves a job's spec for re-attach: next to its output directory (on the host,
    never mounted into the container)."""
    return Path(output_dir).parent / SPEC_FILE


class AwsBatchBackend(Backend):
    """Submit jobs to an AWS Batch job queue; poll, cancel and read logs through boto3.

    Every call that reaches AWS raises ``BackendUnavailable`` on control-plane trouble (see
    ``aws_errors.py``). ``DescribeJobs`` is budgeted: at most ``describe_rate`` calls per second on
    average (the least recently described jobs go first; the others keep their last known status)."""

    name = "aws-batch"
    poll_interval_s = 1.0
    max_poll_interval_s = 15.0

    def __init__(self, workspace: Any = None, *, job_queue: str = "referee", gpu_job_queue: str | None = None,
                 region: str | None = None, endpoint_url: str | None = None, data: str = "shared-fs",
                 shared_root: str | None = None, fleet_root: str | None = None,
                 efs_file_system_id: str | None = None, s3_bucket: str | None = None,
                 s3_prefix: str = "referee", log_group: str = "/aws/batch/job", batch_attempts: int = 2,
                 create_queue: bool | dict[str, Any] = False,
                 url_expiry_s: int | None = None, url_margin_s: int = 3600, session: Any = None,
                 input_cache: str | None = None, input_cache_bytes: int | str = "100g",
                 describe_rate: float = 1.0, api_timeout_s: float = 30.0, api_attempts: int = 3,
                 capacity_check: bool = True, array_jobs: bool = True):
        if data not in ("shared-fs", "s3"):
            raise BackendError(f"aws-batch backend: option data must be 'shared-fs' or 's3', not {data!r}")
        if data == "s3" and not s3_bucket:
            raise BackendError("aws-batch backend: data: s3 needs option s3_bucket (the artifact bucket)")
        if describe_rate <= 0:
            raise BackendError("aws-batch backend: describe_rate (DescribeJobs calls per second) must be positive")
        import boto3
        self.session = session or boto3.session.Session(region_name=region)
        kw: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
        kw["config"] = client_config(connect_timeout=min(5.0, api_timeout_s), read_timeout=api_timeout_s,
                                     max_attempts=api_attempts)
        self.endpoint_url = endpoint_url
        self.batch = self.session.client("batch", **kw)
        self.logs_client = self.session.client("logs", **kw)
        self.job_queue, self.gpu_job_queue = job_queue, gpu_job_queue
        self.data, self.log_group = data, log_group
        self.batch_attempts = batch_attempts
        self.shared_root = Path(shared_root).resolve() if shared_root else None
        self.fleet_root = fleet_root or (str(self.shared_root) if self.shared_root else None)
        self.efs_file_system_id = efs_file_system_id
        if (url_expiry_s is not None and int(url_expiry_s) < 1) or int(url_margin_s) < 0:
            raise BackendError("aws-batch backend: url_expiry_s must be positive and url_margin_s not negative")
        self.url_expiry_s = None if url_expiry_s is None else min(int(url_expiry_s), MAX_URL_EXPIRY_S)
        self.url_margin_s = int(url_margin_s)
        from referee.platform.core.units import parse_size
        self.input_cache_bytes = parse_size(input_cache_bytes)
        # The instance volume for the input cache (s3 mode). Against a Batch on this machine (moto, an
        # endpoint on 127.0.0.1) the "instances" are this machine: a temporary directory then.
        self.simulated = bool(endpoint_url and re.match(r"^https?://(127\.|localhost[:/]|\[::1\])", endpoint_url))
        self.input_cache = input_cache or (f"{tempfile.gettempdir()}/referee-instance-cache" if self.simulated
                                           else INPUT_CACHE_DIR)
        self.artifacts = None
        if data == "s3":
            from referee.platform.runtime.artifacts import S3ArtifactStore
            self.artifacts = S3ArtifactStore(s3_bucket, s3_prefix,  # type: ignore[arg-type]
                                             client=self.session.client("s3", **kw))
        self.capacity = QueueCapacity(self.batch, self.session.client("ec2", **kw)) if capacity_check else None
        self.array_jobs = array_jobs
        self._describe_budget = TokenBucket(describe_rate, burst=max(1.0, 2 * describe_rate))
        self._described: dict[str, float] = {}  # handle -> when it was last described (monotonic)
        self._seen: dict[str, JobStatus] = {}  # handle -> its last described (unsettled) status
        self._parent_tags: dict[str, dict[str, str]] = {}  # array job id -> its tags (children carry none)
        self._trees: dict[str, str] = {}  # input dir -> uploaded tree sha
        self._defs: dict[str, str] = {}  # job definition name -> arn
        self._log_streams: dict[str, str] = {}
        self._per_job_defs: dict[str, str] = {}  # handle -> job definition arn to deregister on cleanup
        self._jobs: dict[str, JobSpec] = {}  # handle -> spec, for jobs submitted by this process
        self._final: dict[str, JobStatus] = {}  # settled final statuses (output copied out)
        if create_queue:
            opts = create_queue if isinstance(create_queue, dict) else {}
            ensure_job_queue(self.session, job_queue, endpoint_url=endpoint_url, **opts)

    # -- job definitions ---------------------------------------------------------------------------
    def _fleet_path(self, local: str) -> str:
        """The path of a local directory as the fleet's instances see it (shared file system)."""
        p = Path(local).resolve()
        if self.shared_root is None:
            return str(p)
        try:
            rel = p.relative_to(self.shared_root)
        except ValueError:
            raise BackendError(f"aws-batch backend: {p} is not under shared_root {self.shared_root}; put "
                               "the workspace and the competition's input on the shared file system") from None
        return str(Path(self.fleet_root or "/") / rel)

    def _volume(self, name: str, local: str) -> dict[str, Any]:
        if self.efs_file_system_id:
            rel = Path(self._fleet_path(local)).relative_to(self.fleet_root or "/")
            return {"name": name, "efsVolumeConfiguration": {"fileSystemId": self.efs_file_system_id,
                                                             "rootDirectory": "/" + rel.as_posix(),
                                                             "transitEncryption": "ENABLED"}}
        return {"name": name, "host": {"sourcePath": self._fleet_path(local)}}

    def container_properties(self, job: JobSpec) -> dict[str, Any]:
        """The containerProperties of the job definition for ``job``: the sandbox, as far as Batch goes.

        Batch carries the non-root user, read-only root, no privileges, a tmpfs scratch, shared memory
        (``sandbox.shm_size``; GPU jobs get room for PyTorch data loaders by default) and ulimits. The
        process limit is not a ``nproc`` ulimit (that counts every job of the uid on the instance together)
        but the ECS agent's per-task pids cgroup, which the launch template of ``create_queue`` sets. Batch
        cannot take a container off the network: the instances' security group decides what it reaches.
        """
        if not job.image:
            raise BackendError(f"aws-batch backend runs container images; job {job.job_id} has none "
                               "(submit a container submission, or use the local backend for commands)")
        policy = sandbox_policy(job)
        mib = 2**20
        props: dict[str, Any] = {
            "image": job.image,
            "resourceRequirements": resource_requirements(job),
            "readonlyRootFilesystem": policy.read_only_root,
            "privileged": False,
            "user": batch_user(policy),
            "linuxParameters": {"initProcessEnabled": True,
                                "sharedMemorySize": max(1, policy.shm_bytes(job.resources) // mib),
                                "tmpfs": [{"containerPath": "/tmp", "size": max(1, policy.tmp_size // mib),
                                           "mountOptions": ["rw", "nosuid", "nodev", "mode=1777"]}]},
            "ulimits": [{"name": "nofile", "softLimit": policy.nofile, "hardLimit": policy.nofile},
                        {"name": "core", "softLimit": 0, "hardLimit": 0}],
        }
        command = list(job.command or policy.command or [])
        if self.data == "s3":
            props["command"] = ["python3", "-c", stager_script(), *(command or image_command(job.image))]
            # The input cache: a volume of the instance (one directory per competition), never the tmpfs.
            props["volumes"] = [{"name": "input-cache", "host": {"sourcePath": self._cache_dir(job)}}]
            props["mountPoints"] = [{"sourceVolume": "input-cache", "containerPath": CACHE_MOUNT, "readOnly": False}]
            return props
        if command:
            props["command"] = command
        props["volumes"] = [self._volume("output", str(scratch_dir(job)))]
        props["mountPoints"] = [{"sourceVolume": "output", "containerPath": policy.output_mount, "readOnly": False}]
        if job.input_dir:
            props["volumes"].append(self._volume("input", job.input_dir))
            props["mountPoints"].append({"sourceVolume": "input", "containerPath": policy.input_mount,
                                         "readOnly": True})
        return props

    def _cache_dir(self, job: JobSpec) -> str:
        """The instance directory of a competition's input cache. Instances make it (the launch template
        of ``create_queue`` does); against a Batch on this machine (moto, an endpoint on 127.0.0.1) the
        instances are this machine, and it is made here."""
        path = f"{self.input_cache.rstrip('/')}/{_SAFE_NAME.sub('-', job.competition_id)}"
        if self.simulated:
            Path(path).mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o1777)
        return path

    def _job_definition(self, job: JobSpec) -> tuple[str, bool]:
        """Register (or reuse) the job definition; returns (arn, whether it is specific to this job)."""
        props = self.container_properties(job)
        body = {"containerProperties": props, "retryStrategy": retry_strategy(self.batch_attempts),
                "timeout": {"attemptDurationSeconds": max(MIN_ATTEMPT_SECONDS, math.ceil(job.timeout_s))}}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        name = f"referee-{_SAFE_NAME.sub('-', job.competition_id)[:80]}-{digest}"
        arn = self._defs.get(name)
        if arn is None:
            found = self.batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]
            if found:
                arn = max(found, key=lambda d: d["revision"])["jobDefinitionArn"]
            else:
                arn = self.batch.register_job_definition(
                    jobDefinitionName=name, type="container", platformCapabilities=["EC2"],
                    tags={"referee.competition": job.competition_id}, propagateTags=True,
                    **body)["jobDefinitionArn"]
            self._defs[name] = arn
        return arn, self.data == "shared-fs" and "volumes" in props  # shared-fs mounts this job's own directory

    def url_expiry(self, job: JobSpec) -> int:
        """Seconds a job's presigned URLs stay valid: its timeout plus the queueing margin (or the fixed
        ``url_expiry_s``), at most SigV4's 7 days."""
        if self.url_expiry_s is not None:
            return self.url_expiry_s
        return min(MAX_URL_EXPIRY_S, math.ceil(job.timeout_s) + self.url_margin_s)

    # -- Backend interface -------------------------------------------------------------------------
    def _environment(self, job: JobSpec) -> dict[str, str]:
        """The job's environment (s3 mode: its staging URL; shared-fs: a fresh scratch directory)."""
        env = {**job.env, "REFEREE_OUTPUT_FILE": job.output_file}
        if job.resources.gpus:
            env["NVIDIA_DRIVER_CAPABILITIES"] = ",".join(sandbox_policy(job).gpu_capabilities)
        if self.data == "s3":
            env["REFEREE_STAGE_URL"] = self._stage(job)
            env["REFEREE_CACHE_DIR"] = CACHE_MOUNT
            env["REFEREE_CACHE_MAX_BYTES"] = str(self.input_cache_bytes)
        else:  # the container writes a scratch directory; only the prediction file is copied out
            policy = sandbox_policy(job)
            scratch = scratch_dir(job)
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            os.chmod(scratch, 0o777)  # the job runs as an unprivileged user the host does not know
            env.update(REFEREE_INPUT=policy.input_mount, REFEREE_OUTPUT=policy.output_mount)
        env["HOME"] = "/tmp"
        return env

    def _stage(self, job: JobSpec) -> str:
        """s3 mode: upload the job's input tree (once per tree) and return its staging manifest's URL."""
        assert self.artifacts is not None
        tree = None
        if job.input_dir:
            tree = self._trees.get(job.input_dir)
            if tree is None:
                tree = self._trees[job.input_dir] = self.artifacts.put_tree(Path(job.input_dir))
        env = {k: v for k, v in job.env.items() if k in ("REFEREE_SHARD", "REFEREE_SHARDS")}
        return self.artifacts.stage_manifest(job.job_id, tree, job.output_file, self.url_expiry(job), env=env)

    def _tags(self, job: JobSpec) -> dict[str, str]:
        tags = {TAG_JOB: job.job_id, TAG_TIMEOUT: f"{job.timeout_s:g}",
                TAG_INSTANCE: job.resources.instance_type or "", **job.labels}
        if self.data == "s3":
            tags[TAG_STAGED] = "1"
        out_dir = str(Path(job.output_dir).resolve())
        if len(out_dir) <= MAX_TAG_VALUE:  # lets a restarted scheduler's poll find the spec (re-attach)
            tags[TAG_OUTPUT_DIR] = out_dir
        return tags

    def _queue(self, job: JobSpec) -> str:
        return self.gpu_job_queue if job.resources.gpus and self.gpu_job_queue else self.job_queue

    def submit(self, job: JobSpec) -> str:
        if not job.image:
            raise BackendError(f"aws-batch backend runs container images; job {job.job_id} has none "
                               "(submit a container submission, or use the local backend for commands)")
        Path(job.output_dir).mkdir(parents=True, exist_ok=True)
        with aws_call(f"submitting {job.job_id}"):
            env = self._environment(job)
            arn, per_job = self._job_definition(job)
            tags = self._tags(job)
            if TAG_OUTPUT_DIR in tags:
                _write_json(job_spec_file(tags[TAG_OUTPUT_DIR]), job.to_dict())
            resp = self.batch.submit_job(
                jobName=job_name(job), jobQueue=self._queue(job), jobDefinition=arn,
                containerOverrides=_overrides(env),
                tags=tags, propagateTags=True)
        handle = resp["jobId"]
        self._jobs[handle] = job
        if per_job:
            self._per_job_defs[handle] = arn
        return handle

    def submit_shards(self, jobs: list[JobSpec]) -> list[str]:
        """s3 mode: one array job, child ``i`` running shard ``i`` (each stages its own inputs and writes
        its own output); shared-fs mode mounts a directory per job, so it submits one job per shard."""
        if self.data != "s3" or not self.array_jobs or len(jobs) < 2 or any(not j.image for j in jobs):
            return super().submit_shards(jobs)
        first = jobs[0]
        with aws_call(f"submitting the {len(jobs)} shards of {first.job_id}"):
            arns = {self._job_definition(j)[0] for j in jobs}
            if len(arns) != 1:  # the shards would need different definitions: one job each
                return super().submit_shards(jobs)
            expiry = max(self.url_expiry(j) for j in jobs)
            for j in jobs:
                Path(j.output_dir).mkdir(parents=True, exist_ok=True)
            assert self.artifacts is not None
            env = self._environment(first)
            env["REFEREE_STAGE_URL"] = self.artifacts.stage_array(first.job_id, [self._stage(j) for j in jobs],
                                                                  expiry)
            for key in ("REFEREE_SHARD", "REFEREE_SHARDS"):  # each child's come with its own stage document
                env.pop(key, None)
            tags = self._tags(first)
            if TAG_OUTPUT_DIR in tags:
                _write_json(array_spec_file(tags[TAG_OUTPUT_DIR]), {"jobs": [j.to_dict() for j in jobs]})
            resp = self.batch.submit_job(
                jobName=job_name(first) + "-shards", jobQueue=self._queue(first), jobDefinition=arns.pop(),
                arrayProperties={"size": len(jobs)},
                containerOverrides=_overrides(env),
                tags=tags, propagateTags=True)
        parent = resp["jobId"]
        self._parent_tags[parent] = tags
        handles = [f"{parent}:{i}" for i in range(len(jobs))]
        for h, j in zip(handles, jobs):
            self._jobs[h] = j
        return handles

    def describe(self, handles: list[str]) -> dict[str, dict[str, Any]]:
        """describe_jobs in batches of 100; handles Batch does not know are left out. An array child gets
        its parent's tags (Batch keeps them on the parent)."""
        parents = sorted({h.split(":")[0] for h in handles if ":" in h} - set(self._parent_tags))
        found: dict[str, dict[str, Any]] = {}
        wanted = list(handles) + parents
        with aws_call("describing jobs"):
            for i in range(0, len(wanted), DESCRIBE_BATCH):
                for d in self.batch.describe_jobs(jobs=wanted[i:i + DESCRIBE_BATCH])["jobs"]:
                    found[d["jobId"]] = d
        for p in parents:
            if p in found:
                self._parent_tags[p] = found[p].get("tags") or {}
        for h in handles:
            if ":" in h and h in found:
                found[h]["tags"] = {**self._parent_tags.get(h.split(":")[0], {}), **(found[h].get("tags") or {})}
        return found

    def poll(self, handles: list[str]) -> dict[str, JobStatus]:
        """Statuses, describing as many jobs as the DescribeJobs budget allows (least recently described
        first); the rest keep the status they had."""
        open_ = [h for h in handles if h not in self._final]
        open_.sort(key=lambda h: self._described.get(h, -1.0))
        fresh: dict[str, dict[str, Any]] = {}
        asked: set[str] = set()
        for i in range(0, len(open_), DESCRIBE_BATCH):
            batch = open_[i:i + DESCRIBE_BATCH]
            # a job never described yet (just submitted, or re-attached) is described now, on credit:
            # the budget pays it back from the next polls, so the average stays within describe_rate
            if not self._describe_budget.take(force=batch[0] not in self._described):
                break
            fresh.update(self.describe(batch))
            asked.update(batch)
        now, out = time.monotonic(), {}
        for h in handles:
            if h in self._final:
                out[h] = self._final[h]
            elif h in asked:
                self._described[h] = now
                d = fresh.get(h)
                out[h] = self._status(h, d) if d is not None else lost_handle(h, self.name)
            else:
                out[h] = self._seen.get(h, JobStatus(JobState.QUEUED))
        return out

    def _status(self, h: str, d: dict[str, Any]) -> JobStatus:
        st = batch_status(d)
        limit = float((d.get("tags") or {}).get(TAG_TIMEOUT) or 0)
        if st.state == JobState.RUNNING and limit and st.started_at and \
                time.time() - st.started_at.timestamp() > limit:
            reason = f"{TIMEOUT_REASON} after {limit:g}s"
            with aws_call(f"stopping {h} at its time limit"):
                self.batch.terminate_job(jobId=h, reason=reason)
            st = JobStatus(JobState.FAILED, FailureReason.TIMED_OUT, f"killed after {limit:g}s",
                           started_at=st.started_at, finished_at=now_utc(), node=st.node,
                           instance_type=st.instance_type)
        container = {**((d.get("attempts") or [{}])[-1].get("container") or {}), **(d.get("container") or {})}
        if container.get("logStreamName") or d.get("status") in ("SUCCEEDED", "FAILED"):
            self._log_streams[h] = container.get("logStreamName") or ""  # a job Batch ended without one: none
        job = self._jobs.get(h) or (self._adopt(h, d) if st.state.final else None)
        if st.state.final and job is not None:
            st = self._final[h] = self._settle(job, st)
            self._seen.pop(h, None)
        elif not st.state.final:
            self._seen[h] = st
        return st

    def waiting_reason(self, handle: str) -> str | None:
        seen = self._seen.get(handle)
        return seen.message or None if seen is not None else None

    def unsatisfiable(self, job: JobSpec) -> str | None:
        """A request larger than every instance type the queue's compute environments can launch (read
        from Batch and EC2, cached); None when it fits, or when the queue cannot be judged."""
        if self.capacity is None:
            return None
        r = job.resources
        return self.capacity.refuse(self._queue(job), max(1, math.ceil(r.cpu)), max(4, r.memory_mib), int(r.gpus))

    def locate(self, job: JobSpec) -> str | None:
        """A job of this spec's name on the queue whose tags point at this spec's output directory."""
        with aws_call(f"looking for {job.job_id}"):
            found = self.batch.list_jobs(jobQueue=self._queue(job), filters=[
                {"name": "JOB_NAME", "values": [job_name(job)]}]).get("jobSummaryList", [])
            ids = [j["jobId"] for j in found]
            descs = self.describe(ids) if ids else {}
        out_dir = str(Path(job.output_dir).resolve())
        for jid in ids:
            tags = (descs.get(jid) or {}).get("tags") or {}
            if tags.get(TAG_JOB) == job.job_id and tags.get(TAG_OUTPUT_DIR) == out_dir:
                self._jobs[jid] = job
                return jid
        return None

    def _adopt(self, handle: str, desc: dict[str, Any]) -> JobSpec | None:
        """The spec of a job an earlier process submitted (re-attach), from the file its tags point to."""
        tags = desc.get("tags") or {}
        out_dir = tags.get(TAG_OUTPUT_DIR)
        if not out_dir:
            return None
        try:
            if ":" in handle:  # an array child: its spec is in the array's file, by index
                docs = json.loads(array_spec_file(out_dir).read_text(encoding="utf-8"))["jobs"]
                if docs[0]["job_id"] != tags.get(TAG_JOB):
                    return None
                job = JobSpec.from_dict(docs[int(handle.rsplit(":", 1)[1])])
            else:
                job = JobSpec.from_dict(json.loads(job_spec_file(out_dir).read_text(encoding="utf-8")))
                if job.job_id != tags.get(TAG_JOB) or str(Path(job.output_dir).resolve()) != out_dir:
                    return None  # not this job's file
        except (OSError, ValueError, TypeError, KeyError, IndexError):
            return None
        self._jobs[handle] = job
        return job

    def _settle(self, job: JobSpec, st: JobStatus) -> JobStatus:
        """Copy the prediction file out of a finished job (checked as the sandbox checks it)."""
        reason, message = self._copy_out(job) if st.state == JobState.SUCCEEDED else (None, "")
        if reason is not None:
            return JobStatus(JobState.FAILED, reason, message, exit_code=st.exit_code, started_at=st.started_at,
                             finished_at=st.finished_at, node=st.node, instance_type=st.instance_type,
                             backend_attempts=st.backend_attempts)
        return st

    def _copy_out(self, job: JobSpec) -> tuple[FailureReason | None, str]:
        policy = sandbox_policy(job)
        out = Path(job.output_dir)
        if self.data == "s3":
            assert self.artifacts is not None
            with aws_call(f"reading the output of {job.job_id}"):
                size = self.artifacts.output_size(job.job_id, job.output_file)
            if size is None:
                return FailureReason.NO_OUTPUT, f"the job did not write {job.output_file}"
            too_big = (FailureReason.INVALID_OUTPUT, f"{job.output_file} is larger than the output cap of "
                       f"{policy.max_output_bytes} bytes")
            if size > policy.max_output_bytes:
                return too_big
            from referee.platform.runtime.artifacts import OutputTooLarge
            try:  # capped while it streams in too: the object may have changed since it was measured
                with aws_call(f"reading the output of {job.job_id}"):
                    self.artifacts.get_output(job.job_id, job.output_file, out / job.output_file,
                                              max_bytes=policy.max_output_bytes)
            except OutputTooLarge:
                return too_big
            return None, ""
        from referee.platform.runtime.sandbox import OutputScratch
        scratch = OutputScratch(scratch_dir(job), policy)
        if not scratch.path.is_dir():
            return None, ""  # copied out earlier
        try:
            return scratch.collect(job.output_file, out)
        finally:
            scratch.release()

    def cancel(self, handle: str) -> None:
        from botocore.exceptions import ClientError
        try:
            with aws_call(f"cancelling {handle}"):
                self.batch.terminate_job(jobId=handle, reason=CANCEL_REASON)
        except ClientError as exc:  # already gone: cancelling is idempotent
            if "does not exist" not in str(exc) and "not found" not in str(exc).lower():
                raise

    def logs(self, handle: str, tail: int = 65536) -> str:
        """The job's CloudWatch Logs stream (its last ``tail`` bytes). Throttling raises
        ``BackendUnavailable``: the controller reads it again later instead of keeping an empty tail."""
        from botocore.exceptions import ClientError
        stream = self._log_streams.get(handle)
        if stream is None:  # not seen by this process's polls (a job of an earlier run): describe it once
            d = self.describe([handle]).get(handle, {})
            container = {**((d.get("attempts") or [{}])[-1].get("container") or {}), **(d.get("container") or {})}
            stream = container.get("logStreamName")
        if not stream:
            return ""
        try:
            with aws_call(f"reading the log of {handle}"):
                events = self.logs_client.get_log_events(logGroupName=self.log_group, logStreamName=stream,
                                                         startFromHead=False, limit=10000)["events"]
        except ClientError:
            return ""
        text = "".join(e["message"] + "\n" for e in events)
        return text.encode()[-tail:].decode("utf-8", "replace")

    def collect(self, handle: str, job: JobSpec) -> Path:
        """The output directory; ``poll`` already copied the prediction file out and checked it, for a
        re-attached job too (its spec is read back in ``_adopt``). Only when that spec file was gone is it
        copied out here, and then a refused file (oversize, symlink) is simply absent: the scheduler
        reports no_output, still the team's failure, with a less precise message."""
        if handle not in self._final:
            self._copy_out(job)
        return Path(job.output_dir)

    def cleanup(self, handle: str) -> None:
        self._final.pop(handle, None)
        self._described.pop(handle, None)
        self._seen.pop(handle, None)
        job = self._jobs.pop(handle, None)
        if job is not None:
            job_spec_file(job.output_dir).unlink(missing_ok=True)
            if job.shard == 0:
                array_spec_file(job.output_dir).unlink(missing_ok=True)
        if job is not None and self.artifacts is not None:
            with contextlib.suppress(Exception):  # housekeeping: a later run's cleanup is no worse
                self.artifacts.delete_outputs(job.job_id)
        elif job is not None:
            shutil.rmtree(scratch_dir(job), ignore_errors=True)
        arn = self._per_job_defs.pop(handle, None)
        if arn:
            with contextlib.suppress(Exception):
                self.batch.deregister_job_definition(jobDefinition=arn)
            self._defs = {k: v for k, v in self._defs.items() if v != arn}
        self._log_streams.pop(handle, None)


class TokenBucket:
    """At most ``rate`` takes per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: float = 1.0, clock: Any = time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens, self._at = burst, clock()

    def take(self, force: bool = False) -> bool:
        """Spend one token if there is one (``force``: spend it on credit)."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= 1.0 or force:
            self.tokens -= 1.0
            return True
        return False


def _overrides(env: dict[str, str]) -> dict[str, Any]:
    """A submit_job's containerOverrides: the job's environment, in a stable order."""
    return {"environment": [{"name": k, "value": str(v)} for k, v in sorted(env.items())]}


def job_name(job: JobSpec) -> str:
    return _SAFE_NAME.sub("-", job.job_id)[:120]


def array_spec_file(output_dir: str | Path) -> Path:
    """Where ``submit_shards`` leaves an array job's specs (next to its first shard's output directory)."""
    return Path(output_dir).parent / ARRAY_SPEC_FILE


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


def image_command(image: str) -> list[str]:
    """An image's ENTRYPOINT + CMD, read from the local Docker engine (needed to wrap it in s3 mode)."""
    try:
        from referee.platform.runtime.engine import docker_client
        cfg = docker_client().images.get(image).attrs.get("Config") or {}
    except Exception as exc:
        raise BackendError(f"aws-batch s3 mode must know the command of image {image!r} to wrap it, and the "
                           f"local Docker engine cannot tell ({exc}); give the job an explicit command") from None
    command = list(cfg.get("Entrypoint") or []) + list(cfg.get("Cmd") or [])
    if not command:
        raise BackendError(f"image {image!r} has neither ENTRYPOINT nor CMD; give the job an explicit command")
    return command
