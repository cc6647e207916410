"""AWS Batch queues: the quick-start queue ``create_queue`` builds (a sandboxed compute environment) and
what a queue's compute environments can run (to refuse a request no instance could ever meet).

A MANAGED compute environment made here gets two things of its own:

* a **security group without egress**: the instances (and, through them, the job containers) reach
  nothing but what ``egress_to`` lists (TCP 443 to prefix lists such as S3's gateway endpoint, to the
  security groups of VPC interface endpoints, or to CIDRs). A fleet without NAT then needs VPC endpoints
  for ECR, ECS, CloudWatch Logs and S3, and those entries in ``egress_to``;
* a **launch template** whose instance metadata service needs tokens (IMDSv2) with a hop limit of 1, so
  a container (one network hop further) can neither read the instance role's credentials nor anything
  else there, and whose user data makes the input cache's instance directory and gives the ECS agent a
  per-task process limit (``ECS_TASK_PIDS_LIMIT``: a pids cgroup per job; a ``nproc`` ulimit would count
  every job of the same uid on the instance together).
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any

from referee.platform.backends.aws_errors import aws_call
from referee.platform.core.errors import BackendError

INPUT_CACHE_DIR = "/var/lib/referee/input-cache"
USER_DATA_BOUNDARY = "==REFEREE-BOUNDARY=="
# What Batch's "optimal" instance type means (its documented families for x86 CPU jobs: no GPUs).
OPTIMAL_FAMILIES = ("c4", "m4", "r4", "c5", "m5", "r5", "c6i", "m6i", "r6i")
CAPACITY_TTL_S = 600.0  # how long a queue's instance shapes are trusted before they are read again


def user_data(pids_limit: int, cache_dir: str = INPUT_CACHE_DIR) -> str:
    """The launch template's user data (MIME multi-part, as Batch requires): the input cache's instance
    directory, and a per-task pids limit for the ECS agent."""
    script = (f"#!/bin/bash\ninstall -d -m 1777 {cache_dir}\nmkdir -p /etc/ecs\n"
              f"echo ECS_TASK_PIDS_LIMIT={int(pids_limit)} >> /etc/ecs/ecs.config\n")
    return (f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{USER_DATA_BOUNDARY}"\n\n'
            f'--{USER_DATA_BOUNDARY}\nContent-Type: text/x-shellscript; charset="us-ascii"\n\n{script}\n'
            f"--{USER_DATA_BOUNDARY}--\n")


def _egress_rule(target: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}
    if target.startswith("pl-"):
        rule["PrefixListIds"] = [{"PrefixListId": target, "Description": "referee: allowed egress"}]
    elif target.startswith("sg-"):
        rule["UserIdGroupPairs"] = [{"GroupId": target, "Description": "referee: allowed egress"}]
    else:
        rule["IpRanges"] = [{"CidrIp": target, "Description": "referee: allowed egress"}]
    return rule


def sandbox_network(session: Any, name: str, subnets: list[str], *, egress_to: list[str] | None = None,
                    pids_limit: int = 256, cache_dir: str = INPUT_CACHE_DIR,
                    endpoint_url: str | None = None) -> tuple[str, str]:
    """Create (or reuse, by name) the security group and launch template of a sandboxed compute
    environment (see the module docstring); returns (security group id, launch template id)."""
    kw = {"endpoint_url": endpoint_url} if endpoint_url else {}
    ec2 = session.client("ec2", **kw)
    with aws_call("creating the compute environment's security group"):
        if not subnets:
            raise BackendError("create_queue: compute_resources.subnets is required (the security group is made "
                               "in their VPC)")
        vpc = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"][0]["VpcId"]
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                      {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
        if found:
            sg = found[0]["GroupId"]
        else:
            sg = ec2.create_security_group(GroupName=name, VpcId=vpc, Description=(
                "referee job instances: no egress except the listed VPC endpoints"))["GroupId"]
            current = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0].get("IpPermissionsEgress")
            if current:  # the default allow-all rule
                ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=current)
            if egress_to:
                ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[_egress_rule(t) for t in egress_to])
    with aws_call("creating the compute environment's launch template"):
        templates = ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [name]}]
                                                  ).get("LaunchTemplates", [])
        if templates:
            lt = templates[0]["LaunchTemplateId"]
        else:
            lt = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
                "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1,
                                    "HttpEndpoint": "enabled"},
                "UserData": base64.b64encode(user_data(pids_limit, cache_dir).encode()).decode(),
            })["LaunchTemplate"]["LaunchTemplateId"]
    return sg, lt


def ensure_job_queue(session: Any, job_queue: str, *, endpoint_url: str | None = None,
                     compute_environment: str | None = None, compute_resources: dict[str, Any] | None = None,
                     service_role: str | None = None, isolate: bool = True, egress_to: list[str] | None = None,
                     pids_limit: int = 256, cache_dir: str = INPUT_CACHE_DIR) -> str:
    """Quick start: create a compute environment and job queue named after ``job_queue`` if missing.

    With ``compute_resources`` (e.g. ``{"type": "SPOT", "instanceTypes": ["g4dn.xlarge"], "maxvCpus": 64,
    "subnets": [...], "instanceRole": "ecsInstanceRole"}``) the environment is MANAGED and, unless
    ``isolate`` is false, sandboxed (see the module docstring: its own security group and launch template
    replace any given); without, UNMANAGED. ``service_role`` defaults to Batch's service-linked role.
    Returns the queue's ARN.
    """
    kw = {"endpoint_url": endpoint_url} if endpoint_url else {}
    batch = session.client("batch", **kw)
    with aws_call("looking up the job queue"):
        queues = batch.describe_job_queues(jobQueues=[job_queue])["jobQueues"]
    if queues:
        return str(queues[0]["jobQueueArn"])
    env_name = compute_environment or f"{job_queue}-env"
    with aws_call("looking up the compute environment"):
        envs = batch.describe_compute_environments(computeEnvironments=[env_name])["computeEnvironments"]
    if not envs:
        args: dict[str, Any] = {"computeEnvironmentName": env_name, "state": "ENABLED"}
        if service_role:  # without one, Batch uses its service-linked role (AWSServiceRoleForBatch)
            args["serviceRole"] = service_role
        if compute_resources:
            resources = dict(compute_resources)
            if isolate and "FARGATE" not in str(resources.get("type", "")):
                sg, lt = sandbox_network(session, f"referee-{env_name}", list(resources.get("subnets") or []),
                                         egress_to=egress_to, pids_limit=pids_limit, cache_dir=cache_dir,
                                         endpoint_url=endpoint_url)
                resources["securityGroupIds"] = [sg]
                resources["launchTemplate"] = {"launchTemplateId": lt, "version": "$Latest"}
            args.update(type="MANAGED", computeResources=resources)
        else:
            args["type"] = "UNMANAGED"
        with aws_call("creating the compute environment"):
            batch.create_compute_environment(**args)
    with aws_call("creating the job queue"):
        return str(batch.create_job_queue(jobQueueName=job_queue, state="ENABLED", priority=1,
                                          computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env_name}]
                                          )["jobQueueArn"])


class QueueCapacity:
    """The instance shapes a job queue's compute environments can launch, read from Batch and EC2 (cached
    for ``CAPACITY_TTL_S``), to tell a request no instance could ever run from one that waits its turn."""

    def __init__(self, batch: Any, ec2: Any):
        self.batch, self.ec2 = batch, ec2
        self._shapes: dict[str, tuple[float, list[dict[str, Any]] | None]] = {}

    def shapes(self, queue: str) -> list[dict[str, Any]] | None:
        """Per compute environment of ``queue``: {name, max_vcpus, types: [(type, vcpus, mib, gpus)]};
        None when some environment cannot be judged (unmanaged, Fargate, EKS): then nothing is refused."""
        cached = self._shapes.get(queue)
        if cached is not None and time.monotonic() - cached[0] < CAPACITY_TTL_S:
            return cached[1]
        found: list[dict[str, Any]] = []
        judged = True
        with aws_call("reading the job queue's compute environments"):
            queues = self.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
            names = [o["computeEnvironment"] for q in queues for o in q.get("computeEnvironmentOrder", [])]
            envs = self.batch.describe_compute_environments(computeEnvironments=names)["computeEnvironments"] \
                if names else []
            for env in envs:
                cr = env.get("computeResources") or {}
                if env.get("type") != "MANAGED" or not cr or "FARGATE" in str(cr.get("type", "")) \
                        or env.get("containerOrchestrationType") == "EKS":
                    judged = False
                    break
                found.append({"name": env.get("computeEnvironmentName"), "max_vcpus": cr.get("maxvCpus"),
                              "types": self._types(cr.get("instanceTypes") or ["optimal"])})
        out = found if judged and names else None
        self._shapes[queue] = (time.monotonic(), out)
        return out

    def _types(self, wanted: list[str]) -> list[tuple[str, int, int, int]]:
        exact = [t for t in wanted if "." in t]
        families = [f for t in wanted if "." not in t for f in (OPTIMAL_FAMILIES if t == "optimal" else (t,))]
        found: list[dict[str, Any]] = []
        if exact:
            found += self.ec2.describe_instance_types(InstanceTypes=exact)["InstanceTypes"]
        if families:
            pages = self.ec2.get_paginator("describe_instance_types").paginate(
                Filters=[{"Name": "instance-type", "Values": [f"{f}.*" for f in families]}])
            for page in pages:
                found += page["InstanceTypes"]
        return [(t["InstanceType"], int(t["VCpuInfo"]["DefaultVCpus"]), int(t["MemoryInfo"]["SizeInMiB"]),
                 sum(int(g.get("Count", 0)) for g in (t.get("GpuInfo") or {}).get("Gpus", [])))
                for t in found]

    def refuse(self, queue: str, vcpus: float, mib: int, gpus: int) -> str | None:
        """Why no compute environment of ``queue`` can ever place a job of this size, or None."""
        envs = self.shapes(queue)
        if not envs:
            return None
        need = math.ceil(vcpus)
        for env in envs:
            if env["max_vcpus"] is not None and int(env["max_vcpus"]) < need:
                continue
            if any(v >= need and m >= mib and g >= gpus for _, v, m, g in env["types"]):
                return None
        largest = [max(env["types"], key=lambda t: (t[3], t[1], t[2])) for env in envs if env["types"]]
        offers = "; ".join(f"{name} ({v} vCPU, {m / 1024:g} GiB, {g} GPU)" for name, v, m, g in largest) or "none"
        return (f"job queue {queue!r} cannot run a job that asks for {need} vCPU, {mib / 1024:g} GiB and {gpus} "
                f"GPU: none of its compute environments has such an instance type within its maxvCpus (largest "
                f"there: {offers}); lower resources in the competition or add an instance type to the queue")
