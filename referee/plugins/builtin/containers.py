"""Built-in container submissions: the ``sandbox:`` section and the kinds (a local image, an image
tarball, a Dockerfile directory).

Each registers through the same hooks a third-party plugin uses; the Docker SDK is imported only when
a container submission actually arrives.
"""

from __future__ import annotations

from typing import Any

from referee.platform.runtime.sandbox import SandboxPolicy
from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import ConfigSection, SubmissionKindInfo


@hookimpl
def referee_config_sections() -> list[ConfigSection]:
    from referee.platform.runtime.registry import RegistrySettings
    return [ConfigSection(name="sandbox", model=SandboxPolicy,
                          description="limits and isolation of submission containers (network, user, sizes, "
                                      "mounts, build limits)"),
            ConfigSection(name="registry", model=RegistrySettings,
                          description="the registry container submissions are pushed to, so fleet nodes can pull "
                                      "them by digest (a plain OCI registry or Amazon ECR)")]


def _detect(name: str) -> Any:
    def detect(source: Any) -> bool:
        from referee.submissions import containers
        return bool(getattr(containers, name)(source))
    return detect


def _ingest(name: str) -> Any:
    def ingest(source: Any, comp: Any, store: Any, filename: str | None = None) -> dict:
        from referee.submissions import containers
        return getattr(containers, name)(source, comp, store, filename=filename)
    return ingest


def _to_job(sub: Any, comp: Any, store: Any) -> dict:
    from referee.submissions.containers import to_job
    return to_job(sub, comp, store)


@hookimpl
def referee_submission_kinds() -> list[SubmissionKindInfo]:
    return [
        SubmissionKindInfo(name="dockerfile", detect=_detect("is_dockerfile_dir"),
                           ingest=_ingest("ingest_dockerfile_dir"), to_job=_to_job,
                           description="a directory with a Dockerfile, built locally without network"),
        SubmissionKindInfo(name="docker-archive", detect=_detect("is_image_archive"),
                           ingest=_ingest("ingest_image_archive"), to_job=_to_job,
                           description="an image tarball written by `docker save` (.tar, .tar.gz)"),
        SubmissionKindInfo(name="docker-image", detect=_detect("is_image_ref"), ingest=_ingest("ingest_image_ref"),
                           to_job=_to_job, description="a local image: docker-image:NAME:TAG or a local image name"),
    ]
