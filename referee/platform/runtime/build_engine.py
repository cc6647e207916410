"""The build engine: a Docker daemon of referee's own that builds submissions' Dockerfiles.

Builds on the engine that runs jobs would see every image on it, other teams' included, and the
daemon fetches ``ADD`` URLs and ``FROM`` images from the host's network itself. The build engine is a
second ``dockerd`` with its own data root, started in a network namespace of its own (no interface
but a loopback that is down: the daemon itself cannot reach the host, the registry or the internet),
with no bridge and no iptables, referee's seccomp profile as the default for every RUN step, and its
build containers under a cgroup that caps the number of processes. It holds only the allowed base
images while a build runs (one build at a time, under a file lock) and is emptied after every build;
the built image is moved to the run engine (``ImageTransfer``, ``docker save | docker load`` by
default).

Starting it needs root (``dockerd``, ``unshare``, cgroups). An engine already running at the socket
is used by anyone who may open the socket: ``referee images build-engine start`` as root once, then
intake can run unprivileged. ``REFEREE_BUILD_ENGINE`` names its directory (default
``/var/lib/referee/build-engine``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from referee.platform.core.errors import BackendError
from referee.platform.runtime.engine import new_docker_client
from referee.platform.runtime.locks import file_lock, try_file_lock
from referee.platform.runtime.seccomp import PROFILE_PATH

ENGINE_ENV = "REFEREE_BUILD_ENGINE"
DEFAULT_DIR = Path("/var/lib/referee/build-engine")
CGROUP_ROOT = "referee-build"
MANAGED_LABEL = "referee.build"
_CGROUP_FS = Path("/sys/fs/cgroup")
_START_TIMEOUT_S = 60.0


class BuildEngineUnavailable(BackendError):
    """No dedicated build engine answers and referee cannot start one; the message says what is missing."""


def engine_dir() -> Path:
    return Path(os.environ.get(ENGINE_ENV) or DEFAULT_DIR)


def socket_path(root: Path | None = None) -> Path:
    return (root or engine_dir()) / "docker.sock"


def _exec_root(root: Path) -> Path:
    # unix socket paths are short (108 bytes): containerd's socket lives under the exec root
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    base = Path("/run") if Path("/run").is_dir() else Path("/tmp")
    return base / f"referee-build-{tag}"


def _connect(root: Path) -> Any | None:
    sock = socket_path(root)
    if not sock.exists():
        return None
    try:
        client = new_docker_client(f"unix://{sock}", timeout=120)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - a stale socket: no engine
        return None


def missing_for_start() -> list[str]:
    """What this process lacks to start a build engine (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (a second dockerd, a network namespace and cgroups need it)")
    for tool in ("dockerd", "unshare"):
        if shutil.which(tool) is None:
            missing.append(f"the {tool} program ({'apt-get install docker.io' if tool == 'dockerd' else 'util-linux'})")
    return missing


def ensure_build_engine(root: Path | None = None, *, start: bool = True) -> Any:
    """A client of the build engine, starting the engine first when none answers (root only)."""
    root = root or engine_dir()
    client = _connect(root)
    if client is not None:
        return client
    if not start:
        raise BuildEngineUnavailable(f"no build engine answers at {socket_path(root)}")
    missing = missing_for_start()
    if missing:
        raise BuildEngineUnavailable(f"no build engine answers at {socket_path(root)} and this process cannot "
                                     f"start one: it lacks {'; '.join(missing)}. Start it once as root with "
                                     "`referee images build-engine start`")
    with file_lock(root / "start.lock"):
        client = _connect(root)
        if client is None:
            client = _start(root)
    return client


def _start(root: Path) -> Any:
    data, exec_root = root / "data", _exec_root(root)
    for d in (data, exec_root):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    sock = socket_path(root)
    sock.unlink(missing_ok=True)
    _cgroup_prepare()
    cmd = ["unshare", "--net", "--fork", "--kill-child", "--",
           "dockerd", "--data-root", str(data), "--exec-root", str(exec_root), "--pidfile", str(root / "dockerd.pid"),
           "--host", f"unix://{sock}", "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
           "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", f"/{CGROUP_ROOT}",
           "--seccomp-profile", str(PROFILE_PATH), "--default-ulimit", "core=0:0",
           "--default-ulimit", "nofile=4096:4096", "--log-level", "warn", "--group", _socket_group()]
    log = open(root / "dockerd.log", "ab")
    try:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         close_fds=True)
    finally:
        log.close()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        client = _connect(root)
        if client is not None:
            return client
        time.sleep(0.1)
    tail = (root / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
    raise BuildEngineUnavailable("the build engine did not answer within 60 s; its log ends:\n" + "\n".join(tail))


def _socket_group() -> str:
    """Who may use the engine besides root: the group that may use the main engine, when there is one."""
    import grp
    try:
        grp.getgrnam("docker")
        return "docker"
    except KeyError:
        return "root"


def stop_build_engine(root: Path | None = None, *, timeout: float = 30.0) -> bool:
    """Stop the build engine started from ``root`` (by its pid file); True when one was running."""
    root = root or engine_dir()
    pidfile = root / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    if not _is_dockerd(pid, root):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_dockerd(pid, root):
        time.sleep(0.1)
    if _is_dockerd(pid, root):
        os.kill(pid, signal.SIGKILL)
    socket_path(root).unlink(missing_ok=True)
    return True


def _is_dockerd(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"dockerd") and str(root / "data").encode() in cmdline


# -- one build at a time ---------------------------------------------------------------------------
@dataclass
class BuildEngine:
    """The dedicated engine for the duration of one build (its lock held)."""

    client: Any
    root: Path

    def hold_only(self, bases: Mapping[str, str], source: Any, transfer: "ImageTransfer") -> None:
        """Make the engine hold exactly ``bases`` (reference -> image id), tagged by reference:
        missing ones are copied from ``source`` (the run engine), anything else is removed."""
        self.clean(keep=set(bases.values()))
        have = set(self.client.api.images(all=True, quiet=True))
        for ref, image_id in bases.items():
            if image_id not in have:
                moved = transfer.move(source, image_id, self.client)
                if moved != image_id:
                    raise BackendError(f"copying {ref} to the build engine gave {moved}, not {image_id}")
                have.add(image_id)
            repo, _, tag = ref.rpartition(":")
            self.client.api.tag(image_id, repo, tag, force=True)
        for img in self.client.api.images(all=True):
            for tag in img.get("RepoTags") or []:
                if tag != "<none>:<none>" and bases.get(tag) != img["Id"]:
                    self.client.api.remove_image(tag, noprune=True)

    def clean(self, keep: set[str]) -> None:
        """Remove every container, every image but ``keep`` (ids), and every volume."""
        api = self.client.api
        for c in api.containers(all=True, quiet=True):
            with contextlib.suppress(Exception):
                api.remove_container(c["Id"], force=True, v=True)
        # newest first: children before their parents
        for img in sorted(api.images(all=True), key=lambda i: i.get("Created", 0), reverse=True):
            if img["Id"] not in keep:
                with contextlib.suppress(Exception):
                    api.remove_image(img["Id"], force=True, noprune=False)
        with contextlib.suppress(Exception):
            api.prune_volumes()
        with contextlib.suppress(Exception):
            api.prune_builds()


@contextlib.contextmanager
def build_session(root: Path | None = None, *, wait_s: float = 3600.0) -> Iterator[BuildEngine]:
    """The build engine, exclusively, for one build; started first when needed (root)."""
    root = root or engine_dir()
    client = ensure_build_engine(root)
    deadline = time.monotonic() + wait_s
    while (fh := try_file_lock(root / "build.lock")) is None:
        if time.monotonic() > deadline:
            raise BackendError(f"the build engine stayed busy for {wait_s:g}s") from None
        time.sleep(0.2)
    try:
        yield BuildEngine(client, root)
    finally:
        fh.close()  # closing the file lets the lock go


# -- moving images between engines -----------------------------------------------------------------
class ImageTransfer(Protocol):
    """Moves an image from one engine to another and answers the id it has there (the same id)."""

    def move(self, source: Any, image_id: str, dest: Any) -> str: ...


class SaveLoadTransfer:
    """``docker save`` on one engine streamed into ``docker load`` on the other (no registry, no disk)."""

    def move(self, source: Any, image_id: str, dest: Any) -> str:
        stream = source.api.get_image(image_id)
        messages = []
        for chunk in dest.api.load_image(_chunks(stream)):
            if "error" in chunk:
                raise BackendError(f"loading the image into the other engine failed: {chunk['error']}")
            messages.append(str(chunk.get("stream", "")))
        found = set(re.findall(r"Loaded image ID: (sha256:[0-9a-f]{64})", "".join(messages)))
        if found != {image_id}:
            raise BackendError(f"moving {image_id} between engines loaded {sorted(found) or 'nothing'}")
        return image_id


def _chunks(stream: Any) -> Iterator[bytes]:
    yield from stream


DEFAULT_TRANSFER: ImageTransfer = SaveLoadTransfer()


# -- cgroups: a process cap for RUN steps ------------------------------------------------------------
def _cgroup_v2() -> bool:
    return (_CGROUP_FS / "cgroup.controllers").exists()


def _cgroup_prepare() -> None:
    """Create the parent cgroup builds run under (both hierarchies' layouts)."""
    with contextlib.suppress(OSError):
        if _cgroup_v2():
            parent = _CGROUP_FS / CGROUP_ROOT
            parent.mkdir(exist_ok=True)
            _enable_controllers(parent)
        else:
            (_CGROUP_FS / "pids" / CGROUP_ROOT).mkdir(exist_ok=True)


def _enable_controllers(group: Path) -> None:
    wanted = [c for c in ("pids", "memory", "cpu") if c in (group / "cgroup.controllers").read_text().split()]
    if wanted:
        (group / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


@contextlib.contextmanager
def build_cgroup(pids_max: int) -> Iterator[tuple[str | None, str]]:
    """A cgroup of its own for one build, with ``pids.max`` set: yields (the cgroup parent to give
    the build, "") or (None, why there is no process cap here)."""
    name = f"{CGROUP_ROOT}/{uuid.uuid4().hex[:12]}"
    made: list[Path] = []
    result: tuple[str | None, str]
    if os.geteuid() != 0:
        result = (None, "setting a process limit on builds needs root (cgroups)")
    else:
        try:
            _cgroup_prepare()
            group = _CGROUP_FS / name if _cgroup_v2() else _CGROUP_FS / "pids" / name
            group.mkdir()
            made.append(group)
            if _cgroup_v2():
                _enable_controllers(group)
            (group / "pids.max").write_text(str(pids_max))
            result = (f"/{name}", "")
        except OSError as exc:
            result = (None, f"the build cgroup could not be set up ({exc.strerror or exc})")
    try:
        yield result
    finally:
        _remove_cgroups(name, made)


def _remove_cgroups(name: str, made: list[Path]) -> None:
    """Remove the build's cgroup in every hierarchy Docker created it in (children first). Docker
    removes its containers' cgroups as they go, so anything may vanish while this walks."""
    try:
        roots = [_CGROUP_FS] if _cgroup_v2() else [p for p in _CGROUP_FS.iterdir() if p.is_dir()]
    except OSError:
        roots = []
    for base in roots:
        group = base / name
        for dirpath, _, _ in sorted(os.walk(group, onerror=lambda e: None), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
    for group in made:
        with contextlib.suppress(OSError):
            group.rmdir()
