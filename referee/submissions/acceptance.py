"""Accepting an image on the run engine: can it run as a submission? Then tag it as referee's.

An image is accepted when it is a Linux image for this engine's architecture, has a command (or the
competition gives one), and declares no ``VOLUME`` where the sandbox mounts the inputs and the output.
Accepted images are tagged ``referee-sub/<sha12>``; a rejected image that intake itself brought is
removed again, and nothing else is.
"""

from __future__ import annotations

from typing import Any

from referee.platform.core.errors import SubmissionRejected
from referee.platform.runtime.sandbox import SandboxPolicy
from referee.submissions.archive import refuse_colliding_volumes
from referee.submissions.build import submission_tag, tag_submission

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def image_ids(client: Any) -> set[str]:
    """The ids of every image on the engine (intermediate ones included)."""
    return set(client.api.images(all=True, quiet=True))


def accept_image(client: Any, image: str, sha: str, policy: SandboxPolicy, source: str) -> dict[str, Any]:
    """Check a local image can run as a submission; tag it; return the submission metadata."""
    import docker.errors
    try:
        info = client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        raise SubmissionRejected(f"image {image} is not on the Docker engine", source=source,
                                 code="image_invalid") from None
    cfg = info.get("Config") or {}
    if (info.get("Os") or "linux") != "linux":
        raise SubmissionRejected(f"the image is built for {info.get('Os')}, not linux", source=source,
                                 code="image_invalid")
    engine_arch = _ARCH.get(client.info().get("Architecture", ""), "")
    if engine_arch and info.get("Architecture") and info["Architecture"] != engine_arch:
        raise SubmissionRejected(f"the image is built for {info['Architecture']}, this engine runs {engine_arch}",
                                 source=source, code="image_invalid",
                                 hint=f"build it with --platform linux/{engine_arch}")
    if not (cfg.get("Cmd") or cfg.get("Entrypoint") or policy.command):
        raise SubmissionRejected("the image has no CMD or ENTRYPOINT, and the competition declares no command",
                                 source=source, code="no_command",
                                 hint='add e.g. CMD ["python3", "/app/predict.py"] to the Dockerfile')
    refuse_colliding_volumes(sorted(cfg.get("Volumes") or {}), policy, source)
    tag = tag_submission(client, info["Id"], sha)
    return {"image": info["Id"], "tag": tag, "source": source, "cmd": cfg.get("Cmd"),
            "entrypoint": cfg.get("Entrypoint"), "image_size": info.get("Size")}


def accept_or_drop(client: Any, image_id: str, sha: str, policy: SandboxPolicy, source: str, *,
                   existed: bool) -> dict[str, Any]:
    """accept_image; on rejection, remove what intake itself added, and nothing else.

    ``docker load`` (or a cached build) of an image that is already on the engine answers with that
    image's id: removing by id would delete the host's own image. So an image that existed before is
    left alone entirely, and a new one loses only referee's ``referee-sub/...`` tag, and is deleted by id
    only when no other tag names it.
    """
    try:
        return accept_image(client, image_id, sha, policy, source)
    except SubmissionRejected:
        if not existed:
            drop_new_image(client, image_id, sha)
        raise


def drop_new_image(client: Any, image_id: str, sha: str) -> None:
    try:
        tags = client.api.inspect_image(image_id).get("RepoTags") or []
        ours = submission_tag(sha)
        if ours in tags:
            client.api.remove_image(ours, noprune=False)  # untags; deletes only when it was the last tag
        elif not tags:
            client.api.remove_image(image_id, noprune=False)  # refused by the engine if a container uses it
    except Exception:  # noqa: BLE001 - gone already, or in use: leave it
        pass
