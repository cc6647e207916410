"""Building a Dockerfile submission: the build policy first, then an isolated build with limits.

1. The Dockerfile is read from the stored build context and checked against the build policy
   (``build_policy.py``): nothing runs for a Dockerfile the policy refuses.
2. The allowed base images are resolved on the run engine and checked against their pins (a digest
   given by the host, or the recipe label of referee's own base images) and for ``ONBUILD`` triggers.
3. The build runs on the dedicated build engine (``runtime/build_engine.py``: its own daemon in a
   network namespace of its own, holding only the bases this Dockerfile uses), with no network, a
   memory, CPU and process cap and a wall-clock limit; the image is then moved to the run engine and
   the build engine emptied, intermediate images of a failed build included.

``sandbox: {build_engine: shared}`` builds on the run engine instead, for hosts that cannot run a
second daemon: the policy check is then the only thing between a Dockerfile and the other images on
that engine, no build cache is used, and a failed build's intermediate images are removed by id.
"""

from __future__ import annotations

import json
import re
import socket
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referee.platform.core.errors import BackendError, SubmissionRejected
from referee.platform.runtime import build_engine as engines
from referee.platform.runtime.engine import new_docker_client
from referee.platform.runtime.images import BASE_IMAGES, RECIPE_LABEL
from referee.platform.runtime.sandbox import SandboxPolicy
from referee.submissions.build_policy import BuildPlan, check_build_policy
from referee.submissions.dockerfile import MAX_DOCKERFILE_BYTES

SUBMISSION_REPO = "referee-sub"
CONTEXT_LABEL = "referee.context"
_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


def submission_tag(sha: str) -> str:
    return f"{SUBMISSION_REPO}/{sha[:12]}:latest"


def tag_submission(client: Any, image_id: str, sha: str) -> str:
    """Tag ``image_id`` on the engine as the submission's ``referee-sub/<sha12>``; the tag."""
    tag = submission_tag(sha)
    repo, _, name = tag.rpartition(":")
    client.api.tag(image_id, repo, name, force=True)
    return tag


@dataclass
class BuildResult:
    image_id: str
    bases: dict[str, str]  # the allowed base references the Dockerfile used -> their image ids
    engine: str  # "dedicated" | "shared" | "reused"


def read_dockerfile(context_tar: Path, source: str) -> bytes:
    """The Dockerfile inside a stored build context."""
    with tarfile.open(context_tar, "r:") as tar:
        try:
            member = tar.getmember("Dockerfile")
        except KeyError:
            raise SubmissionRejected("no Dockerfile in the build context", source=source, code="image_invalid") from None
        if not member.isfile() or member.size > MAX_DOCKERFILE_BYTES:
            raise SubmissionRejected(f"the Dockerfile must be a regular file of at most {MAX_DOCKERFILE_BYTES:,} bytes",
                                     source=source, code="build_refused")
        f = tar.extractfile(member)
        assert f is not None
        return f.read()


def allowed_bases(client: Any, policy: SandboxPolicy) -> tuple[dict[str, str], list[str]]:
    """(allowed reference -> image id on the run engine, allowed references not on it)."""
    import docker.errors

    own = {b.tag: b for b in BASE_IMAGES.values()}
    refs = policy.build_bases if policy.build_bases is not None else list(own)
    found: dict[str, str] = {}
    missing: list[str] = []
    for entry in refs:
        ref, _, digest = entry.partition("@")
        try:
            info = client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            missing.append(ref)
            continue
        image_id = info["Id"]
        if digest:
            repo_digests = {d.partition("@")[2] for d in info.get("RepoDigests") or []}
            if digest != image_id and digest not in repo_digests:
                raise BackendError(f"the allowed base image {ref} is pinned to {digest}, but this engine's {ref} is "
                                   f"{image_id}: retag the pinned image or update sandbox.build_bases")
        else:
            label = ((info.get("Config") or {}).get("Labels") or {}).get(RECIPE_LABEL)
            if label != own[ref].recipe_hash:
                raise BackendError(f"the base image {ref} on this engine is not the current recipe "
                                   "(rebuild it with `referee images build`)")
        if (info.get("Config") or {}).get("OnBuild"):
            raise BackendError(f"the allowed base image {ref} has ONBUILD triggers, which would run in every "
                               "submission's build; referee does not build on it")
        found[ref] = image_id
    return found, missing


def build_submission(client: Any, context_tar: Path, sha: str, policy: SandboxPolicy, *, source: str) -> BuildResult:
    """Check and build a stored context; the image id on the run engine ``client``.

    Raises ``SubmissionRejected`` (code ``build_refused`` or ``build_failed``) for the submission's
    faults and ``BackendError`` for the platform's (no build engine, a base image missing).
    """
    import docker.errors

    dockerfile = read_dockerfile(context_tar, source)
    allowed, missing = allowed_bases(client, policy)
    plan = check_build_policy(dockerfile, {**allowed, **{m: "" for m in missing}}, source=f"{source}/Dockerfile",
                              protected_dirs=(policy.input_mount, policy.output_mount))
    absent = [b for b in plan.bases if b in missing]
    if absent:
        raise BackendError(f"the base image {absent[0]} is not on this Docker engine: build it with "
                           "`referee images build` (or load the pinned image)")
    bases = {b: allowed[b] for b in plan.bases}
    tag = submission_tag(sha)
    try:
        info = client.api.inspect_image(tag)
        if ((info.get("Config") or {}).get("Labels") or {}).get(CONTEXT_LABEL) == sha:
            return BuildResult(info["Id"], bases, "reused")
    except docker.errors.ImageNotFound:
        pass
    labels = {CONTEXT_LABEL: sha}
    if policy.build_engine == "shared":
        image_id = run_build(client, None, context_tar, tag, labels, policy, plan, source=source, shared=True)
        return BuildResult(image_id, bases, "shared")
    with engines.build_session() as engine:
        try:
            engine.hold_only(bases, client, engines.DEFAULT_TRANSFER)
            built = run_build(engine.client, f"unix://{engines.socket_path(engine.root)}", context_tar, tag, labels,
                              policy, plan, source=source, shared=False)
            image_id = engines.DEFAULT_TRANSFER.move(engine.client, built, client)
        finally:
            engine.clean(keep=set(bases.values()))
    return BuildResult(image_id, bases, "dedicated")


def run_build(client: Any, base_url: str | None, context_tar: Path, tag: str, labels: dict[str, str],
              policy: SandboxPolicy, plan: BuildPlan, *, source: str, shared: bool) -> str:
    """One ``docker build`` of a checked context: no network, memory/CPU/process caps, a wall-clock
    limit (the connection is cut; the engine then cancels the build). Returns the image id."""
    import docker.errors

    # A client of its own, so the watchdog can cut its connection: the engine cancels a build whose
    # client went away (a RUN step that hangs must not hold intake forever).
    api = new_docker_client(base_url, timeout=max(1, int(policy.build_timeout))).api
    responses: list[Any] = []
    api.hooks["response"].append(lambda r, *a, **k: responses.append(r))
    fired = threading.Event()
    timer = threading.Timer(policy.build_timeout, _disconnect, args=(responses, fired))
    timer.daemon = True
    lines: list[str] = []
    steps: list[str] = []  # the image id each step produced, in order
    image_id = None
    too_slow = SubmissionRejected(f"the image build took longer than {policy.build_timeout:g}s", source=source,
                                  code="build_failed")
    failed = True
    with engines.build_cgroup(policy.build_pids) as (cgroup, no_cgroup):
        params: dict[str, Any] = {
            "t": tag, "rm": True, "forcerm": True, "pull": False, "nocache": shared, "q": False,
            "networkmode": "none", "labels": json.dumps(labels), "memory": policy.build_memory,
            "memswap": policy.build_memory, "cpuperiod": 100_000, "cpuquota": int(policy.build_cpus * 100_000),
            "shmsize": 64 * 2**20,
        }
        if cgroup:
            params["cgroupparent"] = cgroup
        elif not shared:
            raise BackendError(f"the dedicated build engine needs its process limit: {no_cgroup}")
        try:
            timer.start()
            with open(context_tar, "rb") as ctx:
                response = api._post(api._url("/build"), data=ctx, params=params, stream=True,
                                     headers={"Content-Type": "application/tar"}, timeout=policy.build_timeout)
                api._raise_for_status(response)
                for chunk in api._stream_helper(response, decode=True):
                    if "stream" in chunk:
                        for line in str(chunk["stream"]).rstrip("\n").splitlines():
                            lines.append(line)
                            m = _STEP_IMAGE.match(line)
                            if m:
                                steps.append(m.group(1))
                    if "error" in chunk:
                        tail = "\n".join(lines[-20:])
                        raise SubmissionRejected(f"the image build failed: {chunk['error'].strip()}\n{tail}",
                                                 source=source, code="build_failed",
                                                 hint="builds have no network: vendor dependencies into the context")
                    if isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                        image_id = chunk["aux"]["ID"]
            if fired.is_set():
                raise too_slow
            failed = False
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
            if failed and shared:
                _remove_step_images(client, steps)
    return image_id or client.api.inspect_image(tag)["Id"]


def _remove_step_images(client: Any, steps: list[str]) -> None:
    """Remove the images a failed build's steps left (newest first); a FROM step names its base,
    which is tagged, so it is never removed here."""
    import contextlib
    known = {i.split(":")[-1] for i in client.api.images(all=True, quiet=True)}
    for short in reversed(steps):
        full = next((k for k in known if k.startswith(short)), None)
        if full is None:
            continue
        with contextlib.suppress(Exception):
            info = client.api.inspect_image(full)
            if info.get("RepoTags"):
                continue  # a tagged image (a base): never ours to remove
            client.api.remove_image(full, force=False, noprune=False)


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
