"""Container submissions: a local image, an image tarball (``docker save``), or a Dockerfile directory.

Each is validated and stored content-addressed at intake: the tarball and the (normalised) build
context are blobs named by their sha256; a local image is named by its image id. The image is tagged
``referee-sub/<sha12>`` and the job runs it by image id. Nothing here runs the submission's code,
except a Dockerfile's RUN steps, which build under the build policy on the isolated build engine.

The parts: ``archive`` reads tarballs within limits, ``build_policy``/``dockerfile`` judge a
Dockerfile, ``build`` builds it, ``acceptance`` checks and tags the resulting image.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from referee.platform.core.errors import BackendError, SpecError, SubmissionRejected
from referee.platform.core.hashing import file_sha256
from referee.platform.core.spec import Competition
from referee.platform.runtime.engine import docker_client, require_engine
from referee.platform.runtime.registry import dispatch_image
from referee.platform.runtime.sandbox import SandboxPolicy
from referee.platform.store import Store, SubmissionRow
from referee.submissions.acceptance import accept_image, accept_or_drop, image_ids
from referee.submissions.archive import load_image_archive
from referee.submissions.build import (
    SUBMISSION_REPO,
    build_submission,
    submission_tag,
    tag_submission,
)

IMAGE_PREFIX = "docker-image:"
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$|"
                        r"^sha256:[0-9a-f]{64}$")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
__all__ = ["SUBMISSION_REPO", "submission_tag", "accept_image", "is_dockerfile_dir", "is_image_archive",
           "is_image_ref", "ingest_dockerfile_dir", "ingest_image_archive", "ingest_image_ref", "to_job"]


# -- detection -------------------------------------------------------------------------------------
def is_dockerfile_dir(source: Any) -> bool:
    p = Path(source)
    return p.is_dir() and (p / "Dockerfile").is_file()


def is_image_archive(source: Any) -> bool:
    p = Path(source)
    return p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES)


def is_image_ref(source: Any) -> bool:
    """``docker-image:NAME[:TAG]``, or the name of an image that exists on the local engine."""
    text = str(source)
    if text.startswith(IMAGE_PREFIX):
        return True
    if isinstance(source, Path) or os.path.exists(text) or not _IMAGE_REF.match(text):
        return False
    try:
        _client().api.inspect_image(text)
        return True
    except Exception:  # noqa: BLE001 - no engine, or no such image: not an image reference
        return False


# -- common ----------------------------------------------------------------------------------------
def _client() -> Any:
    try:
        return require_engine()
    except BackendError as exc:
        raise BackendError(f"container submissions need a Docker engine: {exc}") from None


def check_reference_hidden(comp: Competition) -> None:
    """The inputs handed to containers must not contain the hidden reference (by path or hard link)."""
    inp = comp.input_path
    if inp is None or not inp.exists():
        return
    ref = comp.reference_path.resolve()
    inp = inp.resolve()
    where = str(comp.source_path or comp.id)
    if ref == inp or inp in ref.parents:
        raise SpecError(where, [("data.input", f"{inp} contains the hidden reference {ref}; containers see "
                                               "data.input, so keep the reference outside it")])
    try:
        ref_stat = ref.stat()
    except OSError:
        return
    if ref_stat.st_nlink > 1:
        for dirpath, _, files in os.walk(inp):
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                if (st.st_dev, st.st_ino) == (ref_stat.st_dev, ref_stat.st_ino):
                    raise SpecError(where, [("data.input", f"{os.path.join(dirpath, f)} is a hard link to the "
                                                           f"hidden reference {ref}")])


def backend_runs_images(comp: Any) -> bool:
    """Whether the competition's backend declares it runs container images (``BackendInfo.runs_images``).
    A backend that is not installed here is not second-guessed."""
    from referee.plugins.manager import get_plugin_manager
    backends = get_plugin_manager().backends()
    info = backends.get(comp.backend.name)
    return info is None or info.runs_images


def check_backend_runs_images(comp: Competition, source: str | None = None) -> None:
    """Refuse container kinds at intake where they could not run (it would be a free platform-error retry)."""
    if not backend_runs_images(comp):
        from referee.plugins.manager import get_plugin_manager
        able = sorted(n for n, b in get_plugin_manager().backends().items() if b.runs_images)
        raise SubmissionRejected(f"this competition runs on the {comp.backend.name} backend, which cannot run "
                                 "container images; submit a prediction file or a code directory without a "
                                 "Dockerfile", source=source, code="kind_unsupported",
                                 hint=f"the organiser can switch backend.name to one of {', '.join(able)}")


def _prepare(comp: Competition, source: str | None = None) -> SandboxPolicy:
    check_backend_runs_images(comp, source)
    policy = SandboxPolicy.for_competition(comp)
    check_reference_hidden(comp)
    return policy


# -- a local image ---------------------------------------------------------------------------------
def ingest_image_ref(source: Any, comp: Competition, store: Store, *, filename: str | None = None) -> dict:
    import docker.errors
    policy = _prepare(comp, str(source))
    ref = str(source).removeprefix(IMAGE_PREFIX).strip()
    if not ref or not _IMAGE_REF.match(ref):
        raise SubmissionRejected(f"{ref!r} is not an image reference", source=str(source), code="image_invalid",
                                 hint="use docker-image:NAME:TAG")
    client = _client()
    try:
        image_id = client.api.inspect_image(ref)["Id"]
    except docker.errors.ImageNotFound:
        raise SubmissionRejected(f"there is no local image {ref!r} on this Docker engine", source=str(source),
                                 code="image_invalid", hint="no registry is used: build or `docker load` it "
                                                            "first, or submit the tarball or Dockerfile directory")
    sha = image_id.split(":", 1)[-1]
    meta = accept_image(client, image_id, sha, policy, ref)
    return {"sha256": sha, "size": meta["image_size"], "filename": filename or ref,
            "metadata": {**meta, "container": "image"}}


# -- an image tarball ------------------------------------------------------------------------------
def ingest_image_archive(source: Any, comp: Competition, store: Store, *, filename: str | None = None) -> dict:
    path = Path(source)
    name = filename or path.name
    policy = _prepare(comp, name)
    if not path.is_file():
        raise SubmissionRejected(f"{path} is not a file", source=name, code="image_invalid")
    size = path.stat().st_size
    if size > policy.max_archive_bytes:
        raise SubmissionRejected(f"the image tarball is {size} bytes, over the limit of {policy.max_archive_bytes}",
                                 source=name, code="too_large")
    client = _client()
    sha = file_sha256(path)
    before = image_ids(client)
    image_id = load_image_archive(client, path, _tmp_dir(store), policy, source=name)
    meta = accept_or_drop(client, image_id, sha, policy, name, existed=image_id in before)
    sha, size = store.put_blob_file(path)  # only what was accepted is stored
    return {"sha256": sha, "size": size, "filename": name, "metadata": {**meta, "container": "archive"}}


def _tmp_dir(store: Store) -> Path:
    tmp = store.root / "blobs" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


# -- a Dockerfile directory ------------------------------------------------------------------------
def build_context(root: Path, dest: Path, max_bytes: int, source: str) -> None:
    """A normalised tar of the build context (sorted, no times or owners), honouring .dockerignore."""
    from docker.utils.build import exclude_paths
    patterns: list[str] = []
    ignore = root / ".dockerignore"
    if ignore.is_file():
        patterns = [ln.strip() for ln in ignore.read_text(errors="replace").splitlines()
                    if ln.strip() and not ln.strip().startswith("#")]
    total = 0
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for rel in sorted(exclude_paths(str(root), patterns, dockerfile="Dockerfile")):
            full = root / rel
            info = tar.gettarinfo(str(full), arcname=rel)
            if info is None:  # sockets and the like
                continue
            executable = info.isdir() or bool(info.mode & 0o111)
            info.mode = 0o755 if executable else 0o644
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            total += info.size
            if total > max_bytes:
                raise SubmissionRejected(f"the build context is over the limit of {max_bytes} bytes", source=source,
                                         code="too_large", hint="list what the image does not need in .dockerignore")
            if info.isfile():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def ingest_dockerfile_dir(source: Any, comp: Competition, store: Store, *, filename: str | None = None) -> dict:
    """Check the Dockerfile against the build policy, build it in isolation, accept the image.

    A refused or failed build is charged like any submission (``SubmissionRejected.charged``): the
    engine did the work, and free failures would make guessing at other teams' images free.
    """
    root = Path(source).resolve()
    name = filename or root.name
    policy = _prepare(comp, name)
    if not (root / "Dockerfile").is_file() or (root / "Dockerfile").is_symlink():
        raise SubmissionRejected("no Dockerfile (a regular file) in the directory", source=name, code="image_invalid")
    fd, ctx = tempfile.mkstemp(dir=_tmp_dir(store), suffix=".tar")
    os.close(fd)
    try:
        build_context(root, Path(ctx), policy.max_context_bytes, name)
        sha = file_sha256(Path(ctx))
        client = _client()
        before = image_ids(client)
        try:
            built = build_submission(client, Path(ctx), sha, policy, source=name)
            meta = accept_or_drop(client, built.image_id, sha, policy, name, existed=built.image_id in before)
        except SubmissionRejected as exc:
            exc.charged, exc.sha256 = True, sha
            raise
        sha, size = store.put_blob_file(Path(ctx))  # the context, so the image can be rebuilt elsewhere
    finally:
        os.unlink(ctx)
    meta.update(container="dockerfile", bases=built.bases, built_on=built.engine)
    return {"sha256": sha, "size": size, "filename": name, "metadata": meta}


# -- jobs ------------------------------------------------------------------------------------------
def to_job(sub: SubmissionRow, comp: Competition, store: Store) -> dict:
    """JobSpec fields for a container submission: its image (restored first if the engine lost it)."""
    if sub.metadata.get("refused_at_intake"):
        raise SubmissionRejected("this submission was refused at intake; there is no image to run",
                                 source=sub.filename, code=str(sub.metadata["refused_at_intake"]))
    image = sub.metadata.get("image")
    try:
        image = restore_image(sub, comp, store) or image
    except Exception:  # noqa: BLE001 - never fail dispatch here; the run reports a missing image
        pass
    return {"image": dispatch_image(sub, comp, store, image)}  # by registry digest when there is a registry


def restore_image(sub: SubmissionRow, comp: Competition, store: Store) -> str | None:
    """The image id to run: reloads a tarball or rebuilds a Dockerfile context from its blob when the
    engine lost the image; None when there is nothing to restore from."""
    import docker.errors

    meta = sub.metadata
    client = docker_client()
    try:
        return str(client.api.inspect_image(meta["image"])["Id"])
    except docker.errors.ImageNotFound:
        pass
    blob = store.blob_path(sub.sha256)
    source = sub.filename or blob.name
    policy = SandboxPolicy.for_competition(comp)
    if meta.get("container") == "archive" and blob.is_file():
        image_id = load_image_archive(client, blob, _tmp_dir(store), policy, source=source)
    elif meta.get("container") == "dockerfile" and blob.is_file():
        image_id = build_submission(client, blob, sub.sha256, policy, source=source).image_id
    else:
        return None
    tag_submission(client, image_id, sub.sha256)
    return image_id
