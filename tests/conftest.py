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

from referee.plugins.manager import PluginManager, set_plugin_manager

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
    """Each test sees only referee's built-in plugins, plus the opt-in testing plugin (the fake backend)."""
    import referee.plugins.testing
    pm = PluginManager(entrypoints=False, extra=[referee.plugins.testing])
    set_plugin_manager(pm)
    yield pm
    set_plugin_manager(None)


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
        return ensure_base_image(docker_client)
    except BackendError as exc:
        need(False, f"the base image ({exc})")
