"""Shared fixtures. Tests isolate themselves from whatever third-party plugins happen to be installed.

In CI (REFEREE_REQUIRE_ENGINES=1) a test that needs an engine (Docker, Ray, moto, Chromium) FAILS when
the engine is missing; on a developer machine without it, the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from referee.plugins.manager import PluginManager, reset_runtime

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def engines_required() -> bool:
    return os.environ.get("REFEREE_REQUIRE_ENGINES", "").lower() in {"1", "true", "yes"}


def need(condition: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when an engine is missing."""
    if condition:
        return
    if engines_required():
        pytest.fail(f"{what} is required (REFEREE_REQUIRE_ENGINES=1) but not available")
    pytest.skip(f"{what} not available")


def wait_final(backend, handles: list[str], limit: float = 90, interval: float = 0.1) -> dict:
    """Poll a backend until every handle is final; fail the test after ``limit`` seconds."""
    import time
    end = time.monotonic() + limit
    while time.monotonic() < end:
        st = backend.poll(handles)
        if all(s.state.final for s in st.values()):
            return st
        time.sleep(interval)
    raise AssertionError(f"jobs not final after {limit}s: {backend.poll(handles)}")


def engine_gpu_support(client) -> str | None:
    """How a Docker engine on this machine serves a GPU device request (``--gpus``), or None.

    Docker registers its GPU device driver when NVIDIA's container runtime hook is on its PATH, or
    (Docker 28+) when NVIDIA's CDI hook is and CDI is on, with a CDI spec for ``nvidia.com/gpu`` in one
    of its spec directories; an engine set up by the toolkit also lists an ``nvidia`` runtime.
    """
    info = client.info()
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                            "/usr/bin", "/sbin", "/bin"])
    if shutil.which("nvidia-container-runtime-hook", path=path):
        return "NVIDIA's container runtime hook"
    spec_dirs = [Path(d) for d in info.get("CDISpecDirs") or []]
    specs = [f for d in spec_dirs if d.is_dir() for f in d.iterdir() if f.suffix in (".yaml", ".yml", ".json")]
    if shutil.which("nvidia-cdi-hook", path=path) and any("nvidia.com/gpu" in f.read_text(errors="replace")
                                                          for f in specs):
        return "CDI (nvidia.com/gpu)"
    if "nvidia" in (info.get("Runtimes") or {}):
        return "the nvidia runtime"
    return None


@pytest.fixture(autouse=True)
def isolated_plugins():
    """Each test gets a fresh runtime (no cache survives a test) that sees only referee's built-in
    plugins, plus the opt-in testing plugin (the fake backend)."""
    import referee.plugins.testing
    pm = PluginManager(entrypoints=False, extra=[referee.plugins.testing], disable=())
    reset_runtime(pm)
    yield pm
    reset_runtime(None)


@pytest.fixture
def store(tmp_path):
    from referee.platform.store import Store
    s = Store(tmp_path / "ws")
    yield s
    s.close()


def prepare_example(name: str, dest: Path) -> Path:
    """Copy an example competition to ``dest`` and run its deterministic generator there."""
    src = EXAMPLES / name
    target = dest / name
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("data", "submissions", "__pycache__"))
    subprocess.run([sys.executable, str(target / "generate.py"), str(target)], check=True)
    return target


@pytest.fixture
def example(tmp_path):
    def make(name: str) -> Path:
        return prepare_example(name, tmp_path)
    return make


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        need(False, f"Docker engine ({exc})")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client):
    """referee/base-python, built once from Debian packages (cached by tag and recipe)."""
    from referee.platform.core.errors import BackendError
    from referee.platform.runtime.images import ensure_base_image
    try:
        tag = ensure_base_image(docker_client)
    except BackendError as exc:
        need(False, f"the base image ({exc})")
    # Dockerfile submissions build on referee's dedicated build engine (started here when root)
    from referee.platform.runtime.build_engine import ensure_build_engine
    try:
        ensure_build_engine()
    except BackendError as exc:
        need(False, f"the build engine ({exc})")
    return tag


# -- a fleet on this machine (registry, second engine, two-node Ray, moto): see referee/platform/cli/localfleet.py
REGISTRY_USER, REGISTRY_PASSWORD_ENV = "referee", "REFEREE_TEST_REGISTRY_PASSWORD"


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory):
    """A real docker-registry on 127.0.0.1 with htpasswd credentials (the password in an env variable)."""
    import secrets
    import tempfile

    from referee.platform.cli.localfleet import LocalRegistry, registry_binary
    need(registry_binary() is not None, "Debian's docker-registry (scripts/install.sh unpacks it)")
    password = secrets.token_hex(8)
    os.environ[REGISTRY_PASSWORD_ENV] = password
    reg = LocalRegistry(Path(tempfile.mkdtemp(prefix="rf-reg-", dir="/tmp")), credentials=(REGISTRY_USER, password))
    reg.start()
    yield reg
    reg.stop()
    shutil.rmtree(reg.root, ignore_errors=True)


@pytest.fixture(scope="session")
def second_engine(docker_client):
    """A second dockerd ("another machine") that has none of the host's images."""
    import tempfile

    from referee.platform.cli.localfleet import SecondEngine
    need(os.geteuid() == 0 and shutil.which("dockerd") is not None, "root and dockerd (a second Docker engine)")
    engine = SecondEngine(Path(tempfile.mkdtemp(prefix="rf-d2-", dir="/tmp")))
    try:
        engine.start()
    except Exception as exc:  # noqa: BLE001
        need(False, f"a second Docker engine ({exc})")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def fleet(registry_server, second_engine, tmp_path_factory):
    """Registry + second engine + a two-node Ray cluster whose worker uses the second engine and cannot
    see pytest's temporary directories (every workspace and competition) + moto's server on the second
    engine. Started once per session, stopped by its own PIDs."""
    import tempfile
    from types import SimpleNamespace

    from referee.platform.cli.localfleet import MotoProcess, RayFleet, write_docker_config
    need(shutil.which("unshare") is not None, "unshare (util-linux), to hide the workspace from the Ray worker")
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        need(False, f"Ray ({exc})")
    root = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))
    creds = (REGISTRY_USER, os.environ[REGISTRY_PASSWORD_ENV])
    docker_config = write_docker_config(root / "docker-config", registry_server.address, creds)
    hidden = tmp_path_factory.getbasetemp()
    ray_fleet = RayFleet(root / "ray", worker_docker_host=second_engine.host, hide=[hidden],
                         worker_env={"DOCKER_CONFIG": str(docker_config)})
    moto = MotoProcess(root / "moto", docker_host=second_engine.host, docker_config=docker_config)
    try:
        ray_fleet.start()
        moto.start()
    except Exception as exc:  # noqa: BLE001
        ray_fleet.stop()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)
        need(False, f"the local fleet ({exc})")
    yield SimpleNamespace(root=root, registry=registry_server, engine=second_engine, ray=ray_fleet, moto=moto,
                          store=root / "store", cache=root / "cache", hidden=hidden)
    moto.stop()
    ray_fleet.stop()
    shutil.rmtree(root, ignore_errors=True)
