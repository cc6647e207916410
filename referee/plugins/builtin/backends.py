"""Built-in backends, registered through the same hook as third-party ones.

Each factory imports its implementation lazily, so `referee --help` never imports docker, ray or boto3.
"""

from __future__ import annotations

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import BackendInfo


def _local(options, workspace):
    from referee.platform.backends.local import LocalBackend
    return LocalBackend(workspace=workspace, **options)


def _docker(options, workspace):
    from referee.platform.backends.docker import DockerBackend
    return DockerBackend(workspace=workspace, **options)


def _ray(options, workspace):
    from referee.platform.backends.ray import RayBackend
    return RayBackend(workspace=workspace, **options)


def _aws_batch(options, workspace):
    from referee.platform.backends.aws_batch import AwsBatchBackend
    return AwsBatchBackend(workspace=workspace, **options)


@hookimpl
def referee_backends():
    return [
        BackendInfo(name="local", factory=_local, description="subprocesses on this machine (trusted code)"),
        BackendInfo(name="docker", factory=_docker, description="sandboxed containers on a Docker engine",
                    runs_images=True),
        BackendInfo(name="ray", factory=_ray, description="sandboxed containers as Ray tasks on a Ray cluster",
                    runs_images=True),
        BackendInfo(name="aws-batch", factory=_aws_batch, description="AWS Batch job queues (GPU fleets)",
                    runs_images=True),
    ]
