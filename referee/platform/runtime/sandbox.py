"""The sandbox: settings (defaults, overridable per competition) and one sandboxed container run.

A submission container sees the competition's inputs read-only and one writable output directory;
nothing else of the host is mounted. It runs without network, as a non-root user, on a read-only root
filesystem with size-capped tmpfs scratch space, all capabilities dropped, no-new-privileges, and
pids, memory, CPU and wall-clock limits. Logs and output are capped.

The output directory is a size-capped tmpfs that referee mounts on the host when it can (root), so
a full disk is impossible; otherwise a plain directory with a per-file size limit and a watcher.
Only the prediction file is copied out, and only when it is a regular file within the cap.

``run_job_in_docker`` is self-contained (no scheduler, no store): the Docker backend calls it in a
thread, the Ray backend inside a task on each node.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from referee.platform.core.errors import SpecError
from referee.platform.core.jobs import (
    FailureReason,
    JobSpec,
    Resources,
    JobState,
    JobStatus,
    now_utc,
)
from referee.platform.core.spec import Competition, validation_problems
from referee.platform.core.units import Duration, Size
from referee.platform.runtime.engine import docker_client, engine_cpus, image_volumes
from referee.platform.runtime.registry import RegistryError, ensure_image
from referee.plugins.manager import config_section

MANAGED_LABEL = "referee.managed"
SPEC_LABEL = "referee.spec"
DEADLINE_LABEL = "referee.deadline"
NAME_LABEL = "referee.container"  # a name fixed by whoever scheduled the job (its handle), if not derived here
SCRATCH_DIR = "container-output"  # next to the job's output dir: what the container writes
_USER_RE = re.compile(r"^(\d+):(\d+)$")
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]")
# NVIDIA's driver capabilities (NVIDIA_DRIVER_CAPABILITIES): which driver libraries a container gets.
GPU_CAPABILITIES = frozenset({"compute", "utility", "video", "graphics", "display", "compat32"})


class SandboxPolicy(BaseModel):
    """Sandbox settings. Every field can be set under ``sandbox:`` in the competition YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: bool = False  # true gives the default bridge network (for trusted debugging only)
    user: str = "auto"  # "uid:gid"; auto = 10001:10001 when referee runs as root, else referee's own ids
    read_only_root: bool = True
    tmp_size: Size = 256 * 2**20  # tmpfs on /tmp (and on any VOLUME the image declares)
    shm_size: Size | None = None  # /dev/shm; None: 64 MiB, or for a GPU job half its memory (at most 8 GiB)
    pids_limit: int = 256
    nofile: int = 4096
    max_output_bytes: Size = 256 * 2**20  # the output directory (and the prediction file) at most
    max_output_files: int = 1000
    max_log_bytes: Size = 1 * 2**20  # stdout+stderr kept per job (the last part)
    output_tmpfs: bool | Literal["auto"] = "auto"  # mount a capped tmpfs as output dir (needs root)
    input_mount: str = "/data/input"
    output_mount: str = "/data/output"
    command: list[str] | None = None  # replaces the image's CMD for every submission
    seccomp: str = "referee"  # referee's profile | "docker-default" | path of a JSON profile
    gpu_driver: Literal["", "nvidia", "cdi"] = ""  # "" = the engine's default (nvidia); cdi = CDI device names
    gpu_capabilities: list[str] = ["compute", "utility"]  # NVIDIA driver capabilities; add "video" for NVDEC
    cdi_kind: str = "nvidia.com/gpu"  # CDI device kind: devices are named <kind>=<id>
    build_timeout: Duration = 900.0  # building a Dockerfile submission
    build_memory: Size = 4 * 2**30
    build_cpus: float = 2.0
    build_pids: int = 1024  # processes at once in a RUN step
    build_engine: Literal["dedicated", "shared"] = "dedicated"  # where Dockerfiles build: submissions/build.py
    build_bases: list[str] | None = None  # FROM allow-list, NAME:TAG@sha256:ID; None = referee's base images
    max_context_bytes: Size = 1 * 2**30  # Dockerfile submission: the build context
    max_archive_bytes: Size = 20 * 2**30  # image tarball submission (also once decompressed)
    max_image_bytes: Size = 20 * 2**30  # image tarball submission: its layers' contents, decompressed
    max_archive_entries: int = 500_000  # image tarball submission: files in the tarball and its layers

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        v = str(v).strip()
        if v == "auto":
            return v
        m = _USER_RE.match(v)
        if not m:
            raise ValueError(f"{v!r} is not numeric 'uid:gid' (e.g. '10001:10001'); names cannot be checked "
                             "against an untrusted image")
        if int(m.group(1)) == 0 or int(m.group(2)) == 0:
            raise ValueError("submissions never run as root (uid or gid 0)")
        return v

    @field_validator("seccomp")
    @classmethod
    def _seccomp(cls, v: str) -> str:
        v = str(v).strip()
        if v in ("referee", "docker-default"):
            return v
        if v == "unconfined":
            raise ValueError("submissions never run without a seccomp profile")
        if not os.path.isabs(v) or not os.path.isfile(v):
            raise ValueError(f"{v!r} is neither 'referee', 'docker-default' nor the absolute path of a JSON profile")
        return v

    @field_validator("build_bases")
    @classmethod
    def _bases(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from referee.platform.runtime.images import BASE_IMAGES
        own = {b.tag for b in BASE_IMAGES.values()}
        for ref in v:
            name, _, digest = ref.partition("@")
            if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise ValueError(f"{ref!r}: the digest must be sha256:<64 hex digits>")
            if not digest and name not in own:
                raise ValueError(f"{ref!r} must be pinned by digest (NAME:TAG@sha256:<image id>); only "
                                 f"referee's own base images ({', '.join(sorted(own))}) are pinned by their recipe")
        return v

    @field_validator("input_mount", "output_mount")
    @classmethod
    def _mount(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") in ("", "/tmp", "/proc", "/sys", "/dev", "/etc", "/usr") \
                or ".." in v.split("/"):
            raise ValueError(f"{v!r} must be an absolute path of its own (not /, /tmp, /proc, /sys, /dev, "
                             "/etc or /usr)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> "SandboxPolicy":
        if self.input_mount == self.output_mount or self.output_mount.startswith(self.input_mount + "/") \
                or self.input_mount.startswith(self.output_mount + "/"):
            raise ValueError("input_mount and output_mount must not overlap")
        for name in ("pids_limit", "nofile", "max_output_files", "build_pids", "max_archive_entries"):
            if getattr(self, name) < 8:
                raise ValueError(f"{name} must be at least 8")
        if self.max_output_bytes < 4096 or self.tmp_size < 4096:
            raise ValueError("max_output_bytes and tmp_size must be at least 4k")
        if self.build_cpus <= 0:
            raise ValueError("build_cpus must be positive")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty (leave it out to use the image's CMD)")
        unknown = sorted(set(self.gpu_capabilities) - GPU_CAPABILITIES)
        if unknown:
            raise ValueError(f"gpu_capabilities: unknown {unknown} (known: {', '.join(sorted(GPU_CAPABILITIES))})")
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, *, where: str = "competition spec") -> "SandboxPolicy":
        """Validate ``sandbox:`` settings (a job's copy of them); raises ``SpecError`` naming each bad field."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            unknown = f"unknown sandbox setting (known: {', '.join(sorted(cls.model_fields))})"
            raise SpecError(where, validation_problems(exc, "sandbox", unknown=unknown)) from None

    @classmethod
    def for_competition(cls, comp: Competition) -> "SandboxPolicy":
        """The competition's ``sandbox:`` section (defaults when the YAML leaves it out)."""
        return config_section(comp, "sandbox", cls)

    def shm_bytes(self, resources: Resources) -> int:
        """The size of ``/dev/shm``: ``shm_size`` when set; else 64 MiB, or for a job with GPUs room for
        PyTorch's data-loader workers (they pass batches through shared memory): half the job's memory,
        between 1 and 8 GiB. It counts toward the job's memory as it is used."""
        if self.shm_size is not None:
            return int(self.shm_size)
        if resources.gpus:
            return int(min(8 * 2**30, max(2**30, resources.memory // 2)))
        return 64 * 2**20

    def uid_gid(self) -> tuple[int, int]:
        if self.user == "auto":
            return (10001, 10001) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        m = _USER_RE.match(self.user)
        assert m is not None
        return int(m.group(1)), int(m.group(2))


# -- container config ------------------------------------------------------------------------------
def container_name(job: JobSpec) -> str:
    """A name that is stable for one attempt (the backend handle) and unique across workspaces."""
    if job.labels.get(NAME_LABEL):
        return job.labels[NAME_LABEL]
    where = hashlib.sha1(str(Path(job.output_dir).resolve()).encode()).hexdigest()[:10]
    return f"referee-{_NAME_BAD.sub('-', job.job_id)[:80]}-{where}"


def container_config(job: JobSpec, policy: SandboxPolicy, *, output_source: str | Path,
                     image_volumes: tuple[str, ...] | list[str] = (), deadline: float | None = None,
                     output_on_disk: bool = False, engine_cpus: int | None = None,
                     gpu_device_ids: list[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create``: the sandbox as Docker settings.

    Exactly two host paths are mounted: the inputs read-only and ``output_source`` read-write.
    GPUs are requested only when the job asks for them: ``gpu_device_ids`` names the exact devices
    (a cluster scheduler's assignment), otherwise any ``resources.gpus`` of them.
    """
    from docker.types import LogConfig, Mount, Ulimit

    if not job.image:
        raise ValueError(f"job {job.job_id} has no image")
    uid, gid = policy.uid_gid()
    mem = int(job.resources.memory)
    mounts = [Mount(target=policy.output_mount, source=str(output_source), type="bind", read_only=False)]
    if job.input_dir:
        mounts.insert(0, Mount(target=policy.input_mount, source=str(Path(job.input_dir).resolve()), type="bind",
                               read_only=True))
    tmp_opts = f"rw,nosuid,nodev,size={policy.tmp_size}"
    tmpfs = {"/tmp": tmp_opts}
    for vol in image_volumes:  # an image's VOLUME would otherwise get an uncapped volume on the host disk
        if vol.rstrip("/") not in (policy.input_mount, policy.output_mount, "/tmp"):
            tmpfs[vol] = tmp_opts
    ulimits = [Ulimit(name="nofile", soft=policy.nofile, hard=policy.nofile), Ulimit(name="core", soft=0, hard=0)]
    if output_on_disk:  # no tmpfs to cap the output dir: cap every file instead (the watcher caps the sum)
        ulimits.append(Ulimit(name="fsize", soft=policy.max_output_bytes + 1, hard=policy.max_output_bytes + 1))
    labels = {**job.labels, MANAGED_LABEL: "1", "referee.job": job.job_id,
              SPEC_LABEL: json.dumps(job.to_dict(), separators=(",", ":"), default=str)}
    if deadline is not None:
        labels[DEADLINE_LABEL] = f"{deadline:.3f}"
    env = {**job.env, "HOME": "/tmp", "REFEREE_INPUT": policy.input_mount, "REFEREE_OUTPUT": policy.output_mount,
           "REFEREE_OUTPUT_FILE": job.output_file}
    log_size = max(64 * 1024, policy.max_log_bytes)
    cfg: dict[str, Any] = {
        "image": job.image,
        "command": job.command or policy.command,
        "name": container_name(job),
        "hostname": "sandbox",
        "user": f"{uid}:{gid}",
        "environment": env,
        "labels": labels,
        "network_disabled": not policy.network,
        "network_mode": "bridge" if policy.network else "none",
        "read_only": policy.read_only_root,
        "tmpfs": tmpfs,
        "shm_size": policy.shm_bytes(job.resources),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", *seccomp_options(policy)],
        "privileged": False,
        "ipc_mode": "private",
        "pids_limit": policy.pids_limit,
        "mem_limit": mem,
        "memswap_limit": mem,  # no swap: memory means memory
        "ulimits": ulimits,
        "mounts": mounts,
        "log_config": LogConfig(type="json-file", config={"max-size": str(log_size), "max-file": "2"}),
        "stdin_open": False,
        "tty": False,
    }
    if job.resources.cpu > 0:  # the engine refuses more CPUs than it has, and less than 0.01
        cpus = min(job.resources.cpu, engine_cpus) if engine_cpus else job.resources.cpu
        cfg["nano_cpus"] = max(10_000_000, int(cpus * 1e9))
    if job.resources.gpus > 0:
        cfg["device_requests"] = [gpu_device_request(policy, int(job.resources.gpus), gpu_device_ids)]
        env["NVIDIA_DRIVER_CAPABILITIES"] = ",".join(policy.gpu_capabilities)
    return cfg


def seccomp_options(policy: SandboxPolicy) -> list[str]:
    """The ``security_opt`` entry that applies the policy's seccomp profile (none: the engine's default)."""
    if policy.seccomp == "docker-default":
        return []
    from referee.platform.runtime.seccomp import profile_json
    return [f"seccomp={profile_json(None if policy.seccomp == 'referee' else policy.seccomp)}"]


def volume_collisions(volumes: list[str] | tuple[str, ...], policy: SandboxPolicy) -> list[str]:
    """The image's VOLUME paths that are a sandbox mount or lie inside one (the run could not mount them)."""
    out = []
    for vol in volumes:
        v = os.path.normpath("/" + str(vol).strip().lstrip("/"))
        for mount in (policy.input_mount, policy.output_mount):
            if v == mount or v.startswith(mount + "/"):
                out.append(vol)
                break
    return out
def gpu_device_request(policy: SandboxPolicy, count: int, device_ids: list[str] | None = None) -> Any:
    """The Docker device request for a job's GPUs: exact devices when a scheduler assigned them (a CDI
    name ``nvidia.com/gpu=<id>`` with ``gpu_driver: cdi``), else any ``count`` of them; with the driver
    capabilities the job may use (``video`` for NVDEC)."""
    from docker.types import DeviceRequest
    caps = [["gpu", *policy.gpu_capabilities]]
    if policy.gpu_driver == "cdi":
        ids = list(device_ids or [str(i) for i in range(count)])
        return DeviceRequest(driver="cdi", device_ids=[d if "=" in d else f"{policy.cdi_kind}={d}" for d in ids])
    if device_ids:
        return DeviceRequest(driver=policy.gpu_driver, device_ids=list(device_ids), capabilities=caps)
    return DeviceRequest(driver=policy.gpu_driver, count=count, capabilities=caps)


# -- the output directory --------------------------------------------------------------------------
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2
_MOUNT_SOURCE = "referee-output"  # the tmpfs "device" in /proc/mounts: referee-output:<container>:<epoch>


@functools.cache  # find_library runs ldconfig in a subprocess: once per process, not twice per job
def _libc() -> Any:
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unlock_dir(path: str | Path) -> bool:
    """Give the owner rwx on a directory (never through a symlink); False when that is not possible.

    Without root, the container runs as referee's own uid and can chmod what it wrote (even the output
    directory itself) to 000; referee, the same uid, can give itself access back.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.chmod(f"/proc/self/fd/{fd}", mode | stat.S_IRWXU)  # the directory the fd holds, not a path lookup
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    """rmtree, also when parts were made unreadable (a non-root run's container can chmod its output)."""
    if os.path.islink(path):
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path) or os.path.ismount(path):
        return
    stack = [str(path)]
    while stack:
        d = stack.pop()
        _unlock_dir(d)
        try:
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    shutil.rmtree(path, ignore_errors=True)


class OutputScratch:
    """The directory the container writes: a capped tmpfs when possible, else a watched plain dir."""

    def __init__(self, path: Path, policy: SandboxPolicy, owner: str = ""):
        self.path = path
        self.policy = policy
        self.owner = owner  # the container's name: lets a sweep find mounts whose run died
        self.on_tmpfs = False
        self.unreadable: str | None = None  # a directory under it that usage() could not read

    def prepare(self) -> None:
        uid, gid = self.policy.uid_gid()
        if os.path.ismount(self.path):  # left by a run that died: start clean
            self._umount()
        if os.path.lexists(self.path):
            _remove_tree(self.path)
        self.path.mkdir(parents=True)
        want = self.policy.output_tmpfs
        if want is True or (want == "auto" and os.geteuid() == 0):
            try:
                self._mount_tmpfs(uid, gid)
                self.on_tmpfs = True
                return
            except OSError:
                if want is True:
                    raise
        if os.geteuid() == 0:
            os.chown(self.path, uid, gid)
        os.chmod(self.path, 0o770 if os.geteuid() == 0 else 0o777)

    def adopt(self) -> None:
        """Re-attach to a scratch dir prepared by another process (a restarted scheduler)."""
        self.on_tmpfs = os.path.ismount(self.path)

    def _mount_tmpfs(self, uid: int, gid: int) -> None:
        # One extra MiB over the cap, so an oversize prediction file is seen as oversize, not as cut short.
        opts = (f"size={self.policy.max_output_bytes + 2**20},nr_inodes={self.policy.max_output_files + 1},"
                f"mode=0700,uid={uid},gid={gid}")
        source = f"{_MOUNT_SOURCE}:{self.owner or '-'}:{int(time.time())}"
        rc = _libc().mount(source.encode(), str(self.path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                           opts.encode())
        if rc != 0:
            err = __import__("ctypes").get_errno()
            raise OSError(err, os.strerror(err), str(self.path))

    def _umount(self) -> None:
        _libc().umount2(str(self.path).encode(), _MNT_DETACH)

    def usage(self) -> tuple[int, int]:
        """(bytes, entries) under the scratch dir (apparent sizes, so sparse files count in full);
        stops counting past the caps. A directory it cannot read (the container took referee's access
        away, which only a non-root run's container can) is noted in ``unreadable``."""
        total = count = 0
        self.unreadable = None
        stack = [str(self.path)]
        while stack and count <= self.policy.max_output_files and total <= self.policy.max_output_bytes:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    for entry in it:
                        count += 1
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # removed meanwhile
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(entry.path)
                        else:
                            total += st.st_size
            except PermissionError:
                self.unreadable = d
            except OSError:
                continue
        return total, count

    def over_cap(self) -> str | None:
        if self.on_tmpfs:
            return None  # the kernel enforces the cap
        used, count = self.usage()
        if self.unreadable is not None:  # what it holds cannot be counted: as good as over the cap
            rel = os.path.relpath(self.unreadable, self.path)
            where = self.policy.output_mount + ("" if rel == "." else "/" + rel)
            return (f"{where} was made unreadable (its permissions changed), so the output cannot be checked "
                    "against the cap")
        if used > self.policy.max_output_bytes:
            return f"the output directory grew past the cap of {self.policy.max_output_bytes} bytes"
        if count > self.policy.max_output_files:
            return f"the output directory holds more than {self.policy.max_output_files} files"
        return None

    def collect(self, output_file: str, dest_dir: Path) -> tuple[FailureReason | None, str]:
        """Copy the prediction file out, if it is a regular file within the cap."""
        src = self.path / output_file
        mount = self.policy.output_mount
        # Everything read from the scratch dir is the container's doing: an error there is the run's
        # failure (NO_OUTPUT), never the platform's (which would be retried for free).
        try:
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                names = sorted(p.name for p in self.path.iterdir())[:5]
                seen = f"; it held: {', '.join(names)}" if names else "; it was empty"
            except OSError as exc:
                seen = f"; it could not be listed: {exc.strerror}"
            return FailureReason.NO_OUTPUT, f"{output_file} was not written to {mount}{seen}"
        except OSError as exc:
            try:
                link = stat.S_ISLNK(os.lstat(src).st_mode)
            except OSError:
                link = False
            if link:
                return FailureReason.NO_OUTPUT, f"{mount}/{output_file} is a symlink (not followed)"
            return FailureReason.NO_OUTPUT, f"{mount}/{output_file} could not be read: {exc.strerror}"
        try:
            try:
                st = os.fstat(fd)
            except OSError as exc:
                return FailureReason.NO_OUTPUT, f"{mount}/{output_file} could not be read: {exc.strerror}"
            if not stat.S_ISREG(st.st_mode):
                return FailureReason.NO_OUTPUT, f"{mount}/{output_file} is not a regular file"
            if st.st_size > self.policy.max_output_bytes:
                return (FailureReason.INVALID_OUTPUT, f"{output_file} is larger than the output cap of "
                        f"{self.policy.max_output_bytes} bytes")
            dest_dir.mkdir(parents=True, exist_ok=True)
            tmp = dest_dir / f".{output_file}.part"
            with open(tmp, "wb") as out, os.fdopen(os.dup(fd), "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            os.replace(tmp, dest_dir / output_file)
            return None, ""
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.on_tmpfs or os.path.ismount(self.path):
            self._umount()
        _remove_tree(self.path)


# -- running one job -------------------------------------------------------------------------------
# Start failures that are the image's fault (its command or working directory); any other is the platform's.
_INVALID_START = ('exec: "', "executable file not found", "exec format error", "chdir to cwd")


def _failed(reason: FailureReason, message: str, **kw: Any) -> JobStatus:
    state = JobState.CANCELLED if reason is FailureReason.CANCELLED else JobState.FAILED
    kw.setdefault("node", socket.gethostname())
    return JobStatus(state, reason, message, **kw)


def _scratch_for(job: JobSpec, policy: SandboxPolicy) -> OutputScratch:
    return OutputScratch(Path(job.output_dir).parent / SCRATCH_DIR, policy, owner=container_name(job))


def sweep_stale_outputs(client: Any = None, *, grace_s: float = 120.0) -> list[str]:
    """Unmount output tmpfs left behind by runs whose process died after their container was removed.

    A mount is stale when it is older than ``grace_s`` and no container has its owner's name (a container
    that still exists belongs to a run a restarted scheduler will re-attach). Returns the paths unmounted.
    """
    import docker.errors
    client = client or docker_client()
    swept: list[str] = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return swept
    for line in lines:
        device, path = line.split()[:2]
        parts = device.split(":")
        if len(parts) != 3 or parts[0] != _MOUNT_SOURCE or not parts[2].isdigit():
            continue
        if time.time() - int(parts[2]) < grace_s:
            continue
        try:
            client.api.inspect_container(parts[1])
            continue
        except docker.errors.NotFound:
            pass
        except Exception:  # noqa: BLE001 - engine trouble: leave it for next time
            continue
        path = path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        if _libc().umount2(path.encode(), _MNT_DETACH) == 0:
            swept.append(path)
    return swept


def log_path_for(job: JobSpec) -> Path:
    """Where the captured stdout/stderr of a job is kept (next to its output directory)."""
    return Path(job.output_dir).parent / f"{job.job_id}.log"


def run_job_in_docker(job: JobSpec, *, client: Any = None, cancel_event: threading.Event | None = None,
                      on_started: Callable[[str], None] | None = None,
                      gpu_device_ids: list[str] | None = None,
                      defer_cleanup: Callable[[Callable[[], None]], None] | None = None) -> JobStatus:
    """Run one sandboxed container to completion and return its final status.

    Handles the wall-clock timeout (kill), OOM detection, capped log capture (to ``log_path_for(job)``),
    the output cap and copy-out of the prediction file into ``job.output_dir``, and container removal.
    Never raises for a submission's misbehaviour; engine trouble is a PLATFORM_ERROR status.
    ``defer_cleanup`` receives the removal of the (exited) container and its output mount instead of
    running it here, for a caller that overlaps it with its next job; it must run it before it reports
    the status, so that a reported job has left nothing behind.
    """
    import docker.errors

    try:
        policy = SandboxPolicy.from_mapping(job.sandbox, where=f"job {job.job_id}")
    except SpecError as exc:
        return _failed(FailureReason.PLATFORM_ERROR, f"invalid sandbox settings: {exc}")
    if not job.image:
        return _failed(FailureReason.PLATFORM_ERROR, f"job {job.job_id} has no container image")
    client = client or docker_client()
    scratch = _scratch_for(job, policy)
    cid: str | None = None
    try:
        try:
            scratch.prepare()
        except OSError as exc:
            return _failed(FailureReason.PLATFORM_ERROR, f"could not prepare the output directory: {exc}")
        try:
            ensure_image(client, job.image)  # a registry digest is pulled once per node; a local id must be here
            volumes = image_volumes(client, job.image)
        except RegistryError as exc:
            return _failed(exc.reason, str(exc))
        except docker.errors.ImageNotFound:
            return _failed(FailureReason.PLATFORM_ERROR, f"image {job.image} is not on this Docker engine")
        clash = volume_collisions(volumes, policy)
        if clash:  # accepted before intake checked this: the image's fault, said without host paths
            return _failed(FailureReason.IMAGE_INVALID, f"the image declares VOLUME {', '.join(clash)}, where the "
                           f"sandbox mounts {policy.input_mount} and {policy.output_mount}; remove the VOLUME line")
        deadline = time.time() + job.timeout_s
        cfg = container_config(job, policy, output_source=scratch.path, image_volumes=volumes, deadline=deadline,
                               output_on_disk=not scratch.on_tmpfs, engine_cpus=engine_cpus(client),
                               gpu_device_ids=gpu_device_ids)
        if cancel_event is not None and cancel_event.is_set():
            return _failed(FailureReason.CANCELLED, "cancelled before it started")
        cid = _create(client, cfg)
        try:
            client.api.start(cid)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if any(s in text for s in _INVALID_START):
                return _failed(FailureReason.IMAGE_INVALID, f"the container could not start: {text}")
            return _failed(FailureReason.PLATFORM_ERROR, f"starting the container failed: {text}")
        started = now_utc()
        if on_started is not None:
            on_started(cid)
        return _supervise(client, cid, job, policy, scratch, deadline, cancel_event, started)
    except docker.errors.DockerException as exc:
        return _failed(FailureReason.PLATFORM_ERROR, f"Docker engine error: {exc}")
    except Exception as exc:  # noqa: BLE001 - requests/OS trouble talking to the engine
        return _failed(FailureReason.PLATFORM_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        def cleanup(cid: str | None = cid) -> None:
            if cid is not None:
                _remove(client, cid)
            scratch.release()

        if defer_cleanup is None:
            cleanup()
        else:
            defer_cleanup(cleanup)


def attach_job_in_docker(name: str, *, client: Any = None, cancel_event: threading.Event | None = None,
                         on_started: Callable[[str], None] | None = None) -> JobStatus | None:
    """Finish a job whose container another process started (found by name); None if it is gone."""
    import docker.errors

    client = client or docker_client()
    try:
        info = client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    labels = info["Config"].get("Labels") or {}
    if SPEC_LABEL not in labels:
        return None
    job = JobSpec.from_dict(json.loads(labels[SPEC_LABEL]))
    if info["State"].get("Status") == "created":  # the starter died between create and start
        _remove(client, info["Id"])
        _scratch_for(job, SandboxPolicy.from_mapping(job.sandbox)).release()
        return _failed(FailureReason.PLATFORM_ERROR, "the container was created but never started")
    policy = SandboxPolicy.from_mapping(job.sandbox, where=f"job {job.job_id}")
    scratch = _scratch_for(job, policy)
    scratch.adopt()
    deadline = float(labels.get(DEADLINE_LABEL, time.time() + job.timeout_s))
    started = _parse_docker_time(info["State"].get("StartedAt")) or now_utc()
    if on_started is not None:
        on_started(info["Id"])
    try:
        return _supervise(client, info["Id"], job, policy, scratch, deadline, cancel_event, started)
    except Exception as exc:  # noqa: BLE001
        return _failed(FailureReason.PLATFORM_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        _remove(client, info["Id"])
        scratch.release()


def job_of_container(client: Any, name: str) -> JobSpec | None:
    """The JobSpec a referee container was started with (from its label), or None."""
    import docker.errors
    try:
        labels = client.api.inspect_container(name)["Config"].get("Labels") or {}
    except docker.errors.NotFound:
        return None
    return JobSpec.from_dict(json.loads(labels[SPEC_LABEL])) if SPEC_LABEL in labels else None


def _parse_docker_time(s: str | None) -> dt.datetime | None:
    if not s or s.startswith("0001-"):
        return None
    try:
        return dt.datetime.fromisoformat(s[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return None


def _create(client: Any, cfg: dict[str, Any]) -> str:
    import docker.errors
    try:
        return _create_once(client, cfg)
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: a stale container of this very attempt; replace it
            raise
    _remove(client, cfg["name"])
    return _create_once(client, cfg)


def _create_once(client: Any, cfg: dict[str, Any]) -> str:
    try:  # the SDK's own translation of these keyword arguments, without its follow-up inspect
        from docker.models.containers import _create_container_args
    except ImportError:  # an SDK that moved it: the public way, one request more
        return client.containers.create(**cfg).id
    return client.api.create_container(**_create_container_args({**cfg, "version": client.api.api_version}))["Id"]


def _remove(client: Any, cid: str) -> None:
    try:
        client.api.remove_container(cid, force=True)
    except Exception:  # noqa: BLE001 - already gone, or the engine will reap it
        pass


def _supervise(client: Any, cid: str, job: JobSpec, policy: SandboxPolicy, scratch: OutputScratch,
               deadline: float, cancel_event: threading.Event | None, started: dt.datetime) -> JobStatus:
    """Wait for the container (killing it on timeout, cancel or output overflow), then judge the run."""
    import requests

    # One long wait when nothing needs checking; short waits to notice a cancel or a growing output dir.
    step = 0.5 if not scratch.on_tmpfs else (2.0 if cancel_event is not None else None)
    stop: tuple[FailureReason, str] | None = None
    exited: int | None = None  # the exit status the engine's wait reported
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            if client.api.inspect_container(cid)["State"].get("Running"):
                stop = (FailureReason.TIMED_OUT, f"killed after the time limit of {job.timeout_s:g}s")
            break  # (a re-attached job may have ended on its own while nobody watched: judged below)
        try:
            exited = client.api.wait(cid, timeout=max(0.05, min(remaining, step or remaining))).get("StatusCode")
            break
        except requests.exceptions.RequestException:
            # A read timeout: still running (inspect raises, and the job is a platform error, if the engine is gone).
            if not client.api.inspect_container(cid)["State"].get("Running"):
                break
        if cancel_event is not None and cancel_event.is_set():
            stop = (FailureReason.CANCELLED, "cancelled")
            break
        over = scratch.over_cap()
        if over:
            stop = (FailureReason.INVALID_OUTPUT, over)
            break
    if stop is None and cancel_event is not None and cancel_event.is_set():
        stop = (FailureReason.CANCELLED, "cancelled")  # the canceller may have killed the container itself
    if stop is not None:
        _kill(client, cid)
    finished = now_utc()
    if stop is None and exited == 0 and time.time() <= deadline:
        # a clean exit, before the deadline: an inspect would add nothing (OOM only judges non-zero exits)
        state: dict[str, Any] = {"ExitCode": 0}
    else:
        state = client.api.inspect_container(cid)["State"]
    _save_logs(client, cid, log_path_for(job), policy.max_log_bytes)
    kw: dict[str, Any] = {"started_at": started, "finished_at": finished, "node": socket.gethostname()}
    ended = _parse_docker_time(state.get("FinishedAt"))
    if stop is None and ended is not None and ended.timestamp() > deadline + 1.0:
        stop = (FailureReason.TIMED_OUT, f"ran past the time limit of {job.timeout_s:g}s")
    if stop is not None:
        return _failed(stop[0], stop[1], exit_code=state.get("ExitCode"), **kw)
    code = int(state.get("ExitCode") or 0)
    if code != 0 and state.get("OOMKilled"):
        return _failed(FailureReason.OUT_OF_MEMORY, f"killed by the out-of-memory killer (limit "
                       f"{job.resources.memory_mib} MiB)", exit_code=code, **kw)
    if code != 0:
        return _failed(FailureReason.EXITED_NONZERO, _exit_message(code), exit_code=code, **kw)
    reason, message = scratch.collect(job.output_file, Path(job.output_dir))
    over = scratch.over_cap() if reason is None else None
    if over:
        (Path(job.output_dir) / job.output_file).unlink(missing_ok=True)
        reason, message = FailureReason.INVALID_OUTPUT, over
    if reason is not None:
        return _failed(reason, message, exit_code=0, **kw)
    return JobStatus(JobState.SUCCEEDED, exit_code=0, **kw)


def _exit_message(code: int) -> str:
    if code > 128:
        try:
            return f"exited with status {code} (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exited with status {code}"


def _kill(client: Any, cid: str) -> None:
    """SIGKILL the container (every process in it dies with PID 1) and wait until it has stopped."""
    import docker.errors
    try:
        client.api.kill(cid)
    except docker.errors.APIError:
        pass  # not running any more
    try:
        client.api.wait(cid, timeout=30)
    except Exception:  # noqa: BLE001
        pass


def _save_logs(client: Any, cid: str, path: Path, cap: int) -> None:
    """Keep the last ``cap`` bytes of stdout+stderr (the engine itself keeps at most ~2x that)."""
    try:
        data = client.api.logs(cid, stdout=True, stderr=True, timestamps=False)
    except Exception as exc:  # noqa: BLE001
        data = f"(logs unavailable: {exc})\n".encode()
    if len(data) > cap:
        cut = data[-cap:]
        nl = cut.find(b"\n")
        data = b"[... earlier output dropped ...]\n" + (cut[nl + 1:] if 0 <= nl < 4096 else cut)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_log_tail(path: Path, tail: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
