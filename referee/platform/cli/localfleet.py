"""A fleet on one machine: a real registry, a second Docker engine, a two-node Ray cluster, moto's server.

Each part is a real program started as a child process and stopped by its own PIDs:

* ``LocalRegistry`` — Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1 with a temporary
  storage root and, optionally, htpasswd credentials;
* ``SecondEngine`` — a ``dockerd`` with its own data root, exec root, pidfile and socket, no bridge
  and no iptables: "another machine" that starts with none of the host's images;
* ``RayFleet`` — a Ray head that takes no jobs (``--num-cpus=0``) and one worker node whose processes
  use the second engine (``DOCKER_HOST``) and live in a mount namespace of their own where the
  workspace and the competition data are hidden under an empty tmpfs (only the worker's job directory
  is shared with the engine's namespace, as on a real node);
* ``MotoProcess`` — moto's server as a separate process whose Batch runs job containers on the
  second engine, which therefore pulls images from the registry as a real fleet does.

The tests, ``bench/bench_fleet.py`` and ``referee demo --fleet`` use these; nothing here is needed to
run referee on a real fleet.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from referee.platform.core.errors import BackendError

REGISTRY_CACHE = Path(os.environ.get("REFEREE_CACHE", Path.home() / ".cache" / "referee"))
ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, what: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
          log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    if proc is not None and proc.poll() is not None:
        raise BackendError(f"{what} exited (status {proc.returncode}) before it came up{tail}")
    raise BackendError(f"{what} did not come up within {timeout:g}s{tail}")


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 15.0, *, group: bool = True) -> None:
    """SIGTERM the process group a part was started in (or, ``group=False``, only its leader, which
    stops the rest itself), then SIGKILL what is left of the group."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- the registry ----------------------------------------------------------------------------------
def registry_binary() -> Path | None:
    """Debian's docker-registry: on PATH, at $REFEREE_REGISTRY_BIN, or unpacked (not installed: no service
    starts) from the package into the cache with ``apt-get download`` + ``dpkg-deb -x``."""
    env = os.environ.get("REFEREE_REGISTRY_BIN")
    if env and Path(env).is_file():
        return Path(env)
    for name in ("docker-registry", "registry"):
        found = shutil.which(name)
        if found:
            return Path(found)
    for base in (ROOT / ".cache", REGISTRY_CACHE):
        unpacked = base / "docker-registry" / "usr" / "bin" / "docker-registry"
        if unpacked.is_file():
            return unpacked
    return fetch_registry_binary(REGISTRY_CACHE)


def fetch_registry_binary(cache: Path) -> Path | None:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None
    dest = cache / "docker-registry"
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", "docker-registry"], cwd=tmp, capture_output=True)
        debs = list(Path(tmp).glob("docker-registry_*.deb"))
        if got.returncode != 0 or not debs:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest)], check=True)
    binary = dest / "usr" / "bin" / "docker-registry"
    return binary if binary.is_file() else None


@dataclass
class LocalRegistry:
    """docker-registry on 127.0.0.1:<free port>; ``credentials`` switch on htpasswd authentication."""

    root: Path
    credentials: tuple[str, str] | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LocalRegistry":
        binary = registry_binary()
        if binary is None:
            raise BackendError("docker-registry is not available (apt-get download docker-registry && "
                               "dpkg-deb -x docker-registry_*.deb DIR, or run scripts/install.sh as root)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cfg: dict[str, Any] = {
            "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.address, "secret": os.urandom(8).hex()},
        }
        if self.credentials:
            user, password = self.credentials
            (self.root / "htpasswd").write_text(f"{user}:{bcrypt_hash(password)}\n")
            cfg["auth"] = {"htpasswd": {"realm": "referee", "path": str(self.root / "htpasswd")}}
        (self.root / "config.yml").write_text(json.dumps(cfg))  # JSON is YAML
        log = self.root / "registry.log"
        self.proc = subprocess.Popen([str(binary), "serve", str(self.root / "config.yml")],
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        import urllib.error
        import urllib.request

        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2).close()
            except urllib.error.HTTPError as exc:
                return exc.code == 401  # up, and asking for credentials
            return True
        _wait(up, "docker-registry", 30, self.proc, log)
        return self

    def stop(self) -> None:
        _stop(self.proc)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd (glibc's crypt does bcrypt; the registry accepts only bcrypt)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # stdlib until 3.13
    import base64
    salt = base64.b64encode(os.urandom(16), altchars=b"./").decode()[:22]
    return crypt.crypt(password, f"$2b$05${salt}")


# -- a second Docker engine ------------------------------------------------------------------------
@dataclass
class SecondEngine:
    """A dockerd of its own: its own data root, exec root, pidfile and socket; no bridge, no iptables."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'd.sock'}"

    def start(self) -> "SecondEngine":
        if not shutil.which("dockerd"):
            raise BackendError("dockerd is not installed (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise BackendError("a second Docker engine needs root")
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "dockerd.log"
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "--host", self.host, "--bridge=none",
             "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        from referee.platform.runtime.engine import new_docker_client
        _wait(lambda: new_docker_client(self.host, timeout=5).ping(), "the second dockerd", 60, self.proc, log)
        return self

    def client(self) -> Any:
        from referee.platform.runtime.engine import new_docker_client
        return new_docker_client(self.host, timeout=120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                c = self.client()
                for ctr in c.containers.list(all=True):
                    ctr.remove(force=True)
        _stop(self.proc, grace=30)
        # containerd's shims and overlay mounts die with the engine; the data root can go.
        umount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


# -- a two-node Ray cluster ------------------------------------------------------------------------
# Ray 2.60 gives a starting node two fixed windows that no setting changes (RAY_agent_register_timeout_ms
# and RAY_raylet_start_wait_time_s do not apply to them): the raylet aborts when its dashboard agent has
# not written its port file within 15 s of the raylet's start (NodeManager::WaitForDashboardAgentPorts),
# and `ray start` gives up when the node has not registered with the GCS within 30 s (ray/_private/node.py).
# On a loaded machine the agents' Python imports alone take longer. So a node here starts fewer processes
# at once (no autoscaler monitor, no log monitor, no prestarted workers) and, as root, with a larger CPU
# share until it is up (``STARTUP_NICE`` for its session's scheduler autogroup and its processes), back
# to normal once it is; the settings that do exist keep a loaded node alive afterwards (a worker process
# that registers slowly is not killed, a node that answers health checks slowly is not declared dead).
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_worker_prestart": "0",
    "RAY_worker_register_timeout_seconds": "300",
    "RAY_health_check_timeout_ms": "30000", "RAY_health_check_failure_threshold": "20",
}
STARTUP_NICE = -10


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test cluster's nodes and drivers (no token authentication, no usage stats)."""
    env = dict(os.environ)
    env.update(RAY_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("RAY_ADDRESS", None)
    env.update(extra or {})
    return env


def _session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (a node started with ``start_new_session``: all of its processes)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and fields[3] == str(sid):
                out.append(int(d.name))
    return out


def _set_cpu_share(sid: int, nice: int) -> None:
    """The CPU share of a node's session: its autogroup's nice value (what the scheduler weighs when
    autogroups are on) and each of its processes' (when they are off). Lowering it needs root."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{sid}/autogroup").write_text(str(nice))
    for pid in _session_pids(sid):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, nice)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path`` in this process's namespace, deepest first."""
    base = str(path)
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes: \040 for a space
            if point == base or point.startswith(base + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def umount_under(path: Path) -> None:
    """Detach every mount at or under ``path`` (a part's leftovers) before its directory is removed."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@dataclass
class RayFleet:
    """A head that runs no jobs and one worker that sees neither the workspace nor the data.

    The worker's job files live in ``<root>/node-work`` (its ``REFEREE_NODE_WORK``), a shared mount:
    the capped output tmpfs the sandbox mounts there from inside the worker's private mount namespace
    propagates to the namespace of the Docker engine that runs the job, as it is on a real node."""

    root: Path
    worker_docker_host: str | None = None
    hide: list[Path] = field(default_factory=list)
    worker_cpus: int = 2
    worker_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    head: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: head, worker; attempts
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)  # workers added by add_worker

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def node_work(self) -> Path:
        return self.root / "node-work"

    def _ray(self) -> str:
        exe = Path(sys.executable).with_name("ray")
        return str(exe) if exe.exists() else "ray"

    def start(self, attempts: int = 3) -> "RayFleet":
        """Start both nodes; a start that still misses Ray's windows is retried from scratch."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(attempt)
                self.timings["attempts"] = attempt
                return self
            except BackendError:
                if attempt == attempts:
                    self.stop()  # the error carries the logs' last lines
                    raise
                self._stop_processes()
        return self

    def _node(self, argv: list[str], log: Path, env: dict[str, str], what: str) -> subprocess.Popen[bytes]:
        """Start one node (``ray start --block``), favoured by the scheduler until it is up."""
        favour = os.geteuid() == 0
        proc = subprocess.Popen((["nice", "-n", str(STARTUP_NICE)] if favour else []) + argv, env=env,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        if favour:
            _set_cpu_share(proc.pid, STARTUP_NICE)
        try:
            _wait(lambda: "Ray runtime started" in log.read_text(errors="replace"), what, 180, proc, log)
        except BackendError as exc:
            raylet = self.root / "t" / "session_latest" / "logs" / "raylet.out"
            why = [ln for ln in (raylet.read_text(errors="replace").splitlines() if raylet.exists() else [])
                   if "Timed out" in ln or " C " in ln[:40]]
            raise BackendError(f"{exc}\n{chr(10).join(why[-3:])}".rstrip()) from None
        finally:
            if favour:
                _set_cpu_share(proc.pid, 0)
        return proc

    def _start_once(self, attempt: int) -> None:
        import importlib.util
        if importlib.util.find_spec("ray") is None:
            raise BackendError("Ray is not installed (pip install 'ray[default]')")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        temp = self.root / "t"
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--include-log-monitor=false", "--block"]
        t0 = time.monotonic()
        self.head = self._node(
            [self._ray(), "start", "--head", f"--port={self.port}", "--num-cpus=0", "--num-gpus=0",
             "--include-dashboard=false", f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
             "--no-monitor", f"--temp-dir={temp}", *common],
            self.root / f"head-{attempt}.log", ray_env(), "the Ray head")
        self.timings["head"] = round(time.monotonic() - t0, 1)
        argv, env = self._worker_command(self.worker_cpus, common)
        t0 = time.monotonic()
        self.worker = self._node(argv, self.root / f"worker-{attempt}.log", env, "the Ray worker")
        self.timings["worker"] = round(time.monotonic() - t0, 1)

    def _worker_command(self, cpus: int, common: list[str]) -> tuple[list[str], dict[str, str]]:
        """``ray start`` of a worker node on the second engine, hiding ``hide`` (inside ``unshare -m``)."""
        worker = [self._ray(), "start", f"--address={self.address}", f"--num-cpus={cpus}",
                  "--num-gpus=0", "--resources={\"fleet_worker\": 1000}", *common]
        self.node_work.mkdir(parents=True, exist_ok=True)
        extra = {**self.worker_env, "REFEREE_NODE_WORK": str(self.node_work)}
        if self.worker_docker_host:
            extra["DOCKER_HOST"] = self.worker_docker_host
        if self.hide:
            if os.geteuid() != 0 or not shutil.which("unshare"):
                raise BackendError("hiding the workspace from the Ray worker needs root and unshare")
            for path in self.hide:
                Path(path).mkdir(parents=True, exist_ok=True)
            self._share_node_work()
            # The namespace keeps the host's propagation (so node-work stays a peer of the engine's), except
            # that the mounts holding the hidden paths turn private first: hiding them stays in here.
            hide = "; ".join(f'mount --make-private "$(findmnt -n -o TARGET -T {_q(p)})"; '
                             f"mount -t tmpfs -o size=64m,mode=0700 referee-hidden {_q(p)}" for p in self.hide)
            worker = ["unshare", "-m", "--propagation", "unchanged", "sh", "-c",
                      f"set -e; {hide}; exec {' '.join(_q(a) for a in worker)}"]
        return worker, ray_env(extra)

    def add_worker(self, cpus: int = 1) -> subprocess.Popen[bytes]:
        """Another worker node like the first (the same engine, the same hidden paths): a second machine of
        the fleet, for tests that lose one."""
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--include-log-monitor=false", "--block"]
        argv, env = self._worker_command(cpus, common)
        proc = self._node(argv, self.root / f"worker-extra-{len(self.extra) + 1}.log", env, "an extra Ray worker")
        self.extra.append(proc)
        return proc

    def kill_node(self, proc: subprocess.Popen[bytes]) -> None:
        """Lose a worker node at once (SIGKILL to every process of it, as when its machine goes away): the
        containers it started keep running under the engine, like those of a node whose raylet died."""
        for pid in _session_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(10)

    def _share_node_work(self) -> None:
        """Make node-work a shared mount (a bind of itself), so mounts made under it in the worker's
        namespace appear in this one, the Docker engine's."""
        if str(self.node_work) in _mounts_under(self.node_work):
            return
        for cmd in (["mount", "--bind", str(self.node_work), str(self.node_work)],
                    ["mount", "--make-shared", str(self.node_work)]):
            got = subprocess.run(cmd, capture_output=True, text=True)
            if got.returncode != 0:
                raise BackendError(f"{' '.join(cmd)} failed: {got.stderr.strip()}")

    def _stop_processes(self) -> None:
        # `ray start --block` stops its node's processes itself on SIGTERM (in about 2 s); when they get the
        # signal too, the head's waits out its grace period.
        for proc in self.extra:
            _stop(proc, grace=20, group=False)
        _stop(self.worker, grace=20, group=False)
        _stop(self.head, grace=20, group=False)
        # A raylet and its workers outlive `ray start --block` briefly; anything of ours still running goes now.
        # (Ray renames its agents and workers, so they are found by session, not by command line.)
        pids = set(_pids_mentioning(str(self.root / "t")))
        for node in (*self.extra, self.worker, self.head):
            if node is not None:
                pids.update(_session_pids(node.pid))
        self.extra = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.head = self.worker = None

    def stop(self) -> None:
        self._stop_processes()
        umount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _q(value: Any) -> str:
    import shlex
    return shlex.quote(str(value))


def _pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line names ``text`` (our own cluster's temp dir): never another cluster's Ray."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(int(d.name))
    return out


# -- moto's server as a process of its own ---------------------------------------------------------
@dataclass
class MotoProcess:
    """moto's server whose Batch runs job containers on ``docker_host`` (host network, so a job reaches
    moto's S3 at 127.0.0.1), pulling images with the credentials in ``docker_config``."""

    root: Path
    docker_host: str | None = None
    docker_config: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = dict(os.environ, MOTO_DOCKER_NETWORK_MODE="host", AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        if self.docker_config:
            env["DOCKER_CONFIG"] = str(self.docker_config)
        log = self.root / "moto.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        import urllib.request
        _wait(lambda: urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close() is None,
              "moto's server", 60, self.proc, log)
        return self

    def session(self) -> Any:
        import boto3
        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                     region_name="us-east-1")

    def stop(self) -> None:
        _stop(self.proc)


def write_docker_config(dest: Path, registry: str, credentials: tuple[str, str] | None) -> Path:
    """A Docker client config (what ``docker login`` writes) holding a registry's credentials."""
    import base64
    dest.mkdir(parents=True, exist_ok=True)
    auths = {}
    if credentials:
        auths[registry] = {"auth": base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()}
    (dest / "config.json").write_text(json.dumps({"auths": auths}))
    os.chmod(dest / "config.json", 0o600)
    return dest


def start_demo_fleet(root: Path, hide: list[Path]) -> tuple[LocalRegistry, RayFleet]:
    """For ``referee demo --fleet``: a registry and a two-node Ray cluster whose worker cannot see ``hide``
    (when this machine allows it: root and unshare)."""
    registry = LocalRegistry(root / "registry").start()
    can_hide = os.geteuid() == 0 and shutil.which("unshare") is not None
    ray_fleet = RayFleet(root / "ray", hide=hide if can_hide else [])
    try:
        ray_fleet.start()
    except BaseException:
        registry.stop()
        raise
    return registry, ray_fleet


@contextlib.contextmanager
def started(*parts: Any) -> Iterator[None]:
    """Stop every part (in reverse) however the block ends."""
    try:
        yield
    finally:
        for part in reversed(parts):
            with contextlib.suppress(Exception):
                part.stop()
