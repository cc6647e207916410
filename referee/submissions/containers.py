"""Container submissions: a local image, an image tarball (``docker save``), or a Dockerfile directory.

Each is validated and stored content-addressed at intake: the tarball and the (normalised) build
context are blobs named by their sha256; a local image is named by its image id. The image is tagged
``referee-sub/<sha12>`` and the job runs it by image id. Nothing here runs the submission's code,
except a Dockerfile's RUN steps, which build without network and with memory and time limits.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import socket
import tarfile
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any, Callable

from referee.platform.core.errors import BackendError, SpecError, SubmissionRejected
from referee.platform.core.hashing import file_sha256
from referee.platform.core.spec import Competition
from referee.platform.runtime.engine import (
    docker_client,
    new_docker_client,
    require_engine,
)
from referee.platform.runtime.registry import dispatch_image
from referee.platform.runtime.sandbox import SandboxPolicy
from referee.platform.store import Store, SubmissionRow

IMAGE_PREFIX = "docker-image:"
SUBMISSION_REPO = "referee-sub"
CONTEXT_LABEL = "referee.context"
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$|"
                        r"^sha256:[0-9a-f]{64}$")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}
_MAX_MANIFEST_BYTES = 1 << 20


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


def submission_tag(sha: str) -> str:
    return f"{SUBMISSION_REPO}/{sha[:12]}:latest"


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
    tag = submission_tag(sha)
    repo, _, name = tag.rpartition(":")
    client.api.tag(info["Id"], repo, name, force=True)
    return {"image": info["Id"], "tag": tag, "source": source, "cmd": cfg.get("Cmd"),
            "entrypoint": cfg.get("Entrypoint"), "image_size": info.get("Size")}


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
    before = _image_ids(client)
    image_id = load_image_archive(client, path, store, source=name, max_bytes=policy.max_archive_bytes)
    meta = _accept_or_drop(client, image_id, sha, policy, name, existed=image_id in before)
    sha, size = store.put_blob_file(path)  # only what was accepted is stored
    return {"sha256": sha, "size": size, "filename": name, "metadata": {**meta, "container": "archive"}}


def _image_ids(client: Any) -> set[str]:
    """The ids of every image on the engine (intermediate ones included)."""
    return set(client.api.images(all=True, quiet=True))


def _accept_or_drop(client: Any, image_id: str, sha: str, policy: SandboxPolicy, source: str, *,
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
            _drop_new_image(client, image_id, sha)
        raise


def _drop_new_image(client: Any, image_id: str, sha: str) -> None:
    try:
        tags = client.api.inspect_image(image_id).get("RepoTags") or []
        ours = submission_tag(sha)
        if ours in tags:
            client.api.remove_image(ours, noprune=False)  # untags; deletes only when it was the last tag
        elif not tags:
            client.api.remove_image(image_id, noprune=False)  # refused by the engine if a container uses it
    except Exception:  # noqa: BLE001 - gone already, or in use: leave it
        pass


def load_image_archive(client: Any, path: Path, store: Store, *, source: str, max_bytes: int) -> str:
    """``docker load`` a tarball with its tags removed (a submission must not re-point anyone's tags).

    A compressed tarball is decompressed to at most ``max_bytes`` (the tarball size limit): beyond that
    it is rejected before more is read.
    """
    import docker.errors
    tmp_dir = store.root / "blobs" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, clean = tempfile.mkstemp(dir=tmp_dir, suffix=".tar")
    os.close(fd)
    try:
        _untagged_copy(path, Path(clean), source, max_bytes)
        messages = []
        try:
            with open(clean, "rb") as f:
                for chunk in client.api.load_image(f):
                    if "error" in chunk:
                        raise SubmissionRejected(f"docker could not load the tarball: {chunk['error']}",
                                                 source=source, code="image_invalid")
                    messages.append(str(chunk.get("stream", "")))
        except docker.errors.APIError as exc:
            raise SubmissionRejected(f"docker could not load the tarball: {exc.explanation or exc}", source=source,
                                     code="image_invalid") from None
        found = re.findall(r"Loaded image ID: (sha256:[0-9a-f]{64})", "".join(messages))
        if len(set(found)) != 1:
            raise SubmissionRejected(f"expected one image in the tarball, docker reported: {''.join(messages)!r}",
                                     source=source, code="image_invalid")
        return found[0]
    finally:
        Path(clean).unlink(missing_ok=True)


class _CappedReader:
    """A seekable view of a (decompressed) stream that refuses to go past ``cap`` bytes.

    tarfile seeks over member data to find the next header; a seek or read past the cap raises at once,
    so a decompression bomb costs neither disk nor the time to inflate it.
    """

    def __init__(self, f: Any, cap: int, too_big: Callable[[], Exception]):
        self._f, self._cap, self._too_big = f, cap, too_big

    def read(self, n: int | None = -1) -> bytes:
        pos = self._f.tell()
        room = self._cap + 1 - pos  # one byte past the cap tells "more than the cap" from "exactly the cap"
        want = room if n is None or n < 0 else min(n, room)
        data = self._f.read(max(0, want))
        if pos + len(data) > self._cap:
            raise self._too_big()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET and offset > self._cap:
            raise self._too_big()
        pos = self._f.seek(offset, whence)
        if pos > self._cap:
            raise self._too_big()
        return pos

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


def _open_decompressed(src: Path) -> Any:
    with open(src, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(src, "rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(src, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(src, "rb")
    return open(src, "rb")


def _not_a_manifest(source: str, why: str) -> SubmissionRejected:
    return SubmissionRejected(f"manifest.json is not a docker save manifest ({why})", source=source,
                              code="image_invalid", hint="create the tarball with `docker save IMAGE -o x.tar`")


def _read_manifest(tar: tarfile.TarFile, source: str) -> list[dict[str, Any]]:
    try:
        member = tar.getmember("manifest.json")
    except KeyError:
        raise SubmissionRejected("not a `docker save` archive (no manifest.json)", source=source,
                                 code="image_invalid", hint="create it with `docker save IMAGE -o x.tar`") from None
    if not member.isfile():
        raise _not_a_manifest(source, "not a regular file")
    if member.size > _MAX_MANIFEST_BYTES:
        raise _not_a_manifest(source, f"{member.size} bytes, over {_MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise _not_a_manifest(source, f"not JSON: {exc}") from None
    if not isinstance(manifest, list):
        raise _not_a_manifest(source, f"expected a list of images, found {type(manifest).__name__}")
    if len(manifest) != 1:
        raise SubmissionRejected(f"the tarball holds {len(manifest)} images; submit exactly one", source=source,
                                 code="image_invalid")
    entry = manifest[0]
    if not (isinstance(entry, dict) and isinstance(entry.get("Config"), str) and isinstance(entry.get("Layers"), list)
            and all(isinstance(layer, str) for layer in entry["Layers"])):
        raise _not_a_manifest(source, "its image entry needs a Config name and a list of Layers")
    return manifest


def _untagged_copy(src: Path, dest: Path, source: str, max_bytes: int) -> None:
    def too_big() -> SubmissionRejected:
        return SubmissionRejected(f"the image tarball is over the limit of {max_bytes} bytes once decompressed",
                                  source=source, code="too_large", hint="the limit is sandbox.max_archive_bytes")

    try:
        with _open_decompressed(src) as raw, \
                tarfile.open(fileobj=_CappedReader(raw, max_bytes, too_big), mode="r:") as tar:  # type: ignore
            manifest = _read_manifest(tar, source)
            manifest[0]["RepoTags"] = None
            with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
                for member in tar:
                    if member.name in ("manifest.json", "repositories"):
                        continue
                    out.addfile(member, tar.extractfile(member) if member.isfile() else None)
                data = json.dumps(manifest).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        dest.unlink(missing_ok=True)
        raise SubmissionRejected(f"not a readable tar archive: {exc}", source=source, code="image_invalid") from None
    except SubmissionRejected:
        dest.unlink(missing_ok=True)  # the part copied so far
        raise


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
    root = Path(source).resolve()
    name = filename or root.name
    policy = _prepare(comp, name)
    if not (root / "Dockerfile").is_file() or (root / "Dockerfile").is_symlink():
        raise SubmissionRejected("no Dockerfile (a regular file) in the directory", source=name, code="image_invalid")
    tmp_dir = store.root / "blobs" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, ctx = tempfile.mkstemp(dir=tmp_dir, suffix=".tar")
    os.close(fd)
    try:
        build_context(root, Path(ctx), policy.max_context_bytes, name)
        sha = file_sha256(Path(ctx))
        client = _client()
        before = _image_ids(client)
        image_id = build_image(client, Path(ctx), sha, policy, source=name)
        meta = _accept_or_drop(client, image_id, sha, policy, name, existed=image_id in before)
        sha, size = store.put_blob_file(Path(ctx))  # the context, so the image can be rebuilt elsewhere
    finally:
        os.unlink(ctx)
    return {"sha256": sha, "size": size, "filename": name, "metadata": {**meta, "container": "dockerfile"}}


def build_image(client: Any, context_tar: Path, sha: str, policy: SandboxPolicy, *, source: str) -> str:
    """Build a context tar without network, memory- and time-limited; reuse an earlier build of it."""
    import docker
    tag = submission_tag(sha)
    try:
        info = client.api.inspect_image(tag)
        if ((info.get("Config") or {}).get("Labels") or {}).get(CONTEXT_LABEL) == sha:
            return info["Id"]
    except docker.errors.ImageNotFound:
        pass
    # A client of its own, so the watchdog can cut its connection: the engine cancels a build whose
    # client went away (a RUN step that hangs must not hold intake forever).
    api = new_docker_client(timeout=max(1, int(policy.build_timeout))).api
    responses: list[Any] = []
    api.hooks["response"].append(lambda r, *a, **k: responses.append(r))
    fired = threading.Event()
    timer = threading.Timer(policy.build_timeout, _disconnect, args=(responses, fired))
    timer.daemon = True
    lines: list[str] = []
    image_id = None
    too_slow = SubmissionRejected(f"the image build took longer than {policy.build_timeout:g}s", source=source,
                                  code="build_failed")
    try:
        timer.start()
        with open(context_tar, "rb") as ctx:
            for chunk in api.build(fileobj=ctx, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False,
                                   network_mode="none", labels={CONTEXT_LABEL: sha}, decode=True,
                                   timeout=policy.build_timeout,
                                   container_limits={"memory": policy.build_memory, "memswap": policy.build_memory}):
                if "stream" in chunk:
                    lines.extend(str(chunk["stream"]).rstrip("\n").splitlines())
                if "error" in chunk:
                    tail = "\n".join(lines[-20:])
                    raise SubmissionRejected(f"the image build failed: {chunk['error'].strip()}\n{tail}",
                                             source=source, code="build_failed",
                                             hint="builds have no network: vendor dependencies into the context")
                if isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
    except SubmissionRejected:
        raise
    except docker.errors.APIError as exc:
        if fired.is_set():
            raise too_slow from None
        raise SubmissionRejected(f"the image build failed: {exc.explanation or exc}", source=source,
                                 code="build_failed") from None
    except Exception as exc:  # noqa: BLE001 - whatever a cut connection raises mid-stream
        if fired.is_set():
            raise too_slow from None
        raise BackendError(f"the connection to the Docker engine broke during the build: {exc}") from None
    finally:
        timer.cancel()
        api.close()
    if fired.is_set():
        raise too_slow
    return image_id or client.api.inspect_image(tag)["Id"]


def _disconnect(responses: list[Any], fired: threading.Event) -> None:
    """Shut the build's socket down; a blocked read then fails at once."""
    fired.set()
    for r in responses:
        conn = getattr(r.raw, "_connection", None) or getattr(r.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            r.close()
        except OSError:
            pass


# -- jobs ------------------------------------------------------------------------------------------
def to_job(sub: SubmissionRow, comp: Competition, store: Store) -> dict:
    """JobSpec fields for a container submission: its image (restored first if the engine lost it)."""
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
        return client.api.inspect_image(meta["image"])["Id"]
    except docker.errors.ImageNotFound:
        pass
    blob = store.blob_path(sub.sha256)
    source = sub.filename or blob.name
    if meta.get("container") == "archive" and blob.is_file():
        image_id = load_image_archive(client, blob, store, source=source,
                                      max_bytes=SandboxPolicy.for_competition(comp).max_archive_bytes)
    elif meta.get("container") == "dockerfile" and blob.is_file():
        image_id = build_image(client, blob, sub.sha256, SandboxPolicy.for_competition(comp), source=source)
    else:
        return None
    tag = submission_tag(sub.sha256)
    repo, _, name = tag.rpartition(":")
    client.api.tag(image_id, repo, name, force=True)
    return image_id
