"""The one place that builds Docker engine clients.

``docker_client()`` returns a client for an engine (``base_url``, else ``DOCKER_HOST`` or the local
socket), shared per engine, timeout and process; ``require_engine()`` the same, or a ``BackendError``
that says how to start one. Per-engine facts the sandbox needs (CPU count, an image's volumes) are
cached here too, so ``reset_engine_caches()`` forgets everything this module holds.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from referee.platform.core.errors import BackendError

_lock = threading.Lock()
_clients: dict[tuple[str | None, float | None, int, int], Any] = {}
_ncpu: dict[int, int | None] = {}
_volumes: dict[tuple[int, str], list[str]] = {}


def docker_client(base_url: str | None = None, *, timeout: float | None = None, pool: int = 64) -> Any:
    """A Docker client for ``base_url`` (default: the environment's engine), shared per engine and
    process (its connection pool is thread-safe)."""
    key = (base_url or os.environ.get("DOCKER_HOST"), timeout, pool, os.getpid())
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _connect(base_url, timeout, max_pool_size=pool)
            _clients[key] = client
        return client


def _connect(base_url: str | None, timeout: float | None, **kw: Any) -> Any:
    """A new client for ``base_url`` (default: the environment's engine). On a unix socket or named pipe
    it skips requests' proxy and .netrc lookups (a third of each call's CPU), which never apply there; a
    TCP engine keeps them (it may be reached through a proxy)."""
    import docker
    if timeout is not None:
        kw["timeout"] = timeout
    client = docker.DockerClient(base_url=base_url, **kw) if base_url else docker.from_env(**kw)
    if str(client.api.base_url).startswith("http+docker://"):
        client.api.trust_env = False
    return client


def new_docker_client(base_url: str | None = None, *, timeout: float | None = None) -> Any:
    """A client of its own (not shared): for a caller that must be able to cut its connection."""
    return _connect(base_url, timeout)


def require_engine(base_url: str | None = None, *, timeout: float | None = None) -> Any:
    """``docker_client()``, checked with a ping; a ``BackendError`` naming what to do when none answers."""
    try:
        client = docker_client(base_url, timeout=timeout)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any failure here means "no engine"
        raise BackendError(f"no Docker engine answers ({exc}); start one with scripts/ensure-docker.sh") from None


def engine_cpus(client: Any) -> int | None:
    """How many CPUs the engine has (the most a container may ask for)."""
    key = id(client.api)
    if key not in _ncpu:
        _ncpu[key] = int(client.info().get("NCPU") or 0) or None
    return _ncpu[key]


def image_volumes(client: Any, image: str) -> list[str]:
    """The VOLUME paths an image declares (raises docker's ImageNotFound)."""
    key = (id(client.api), image)
    if key not in _volumes:
        info = client.api.inspect_image(image)
        _volumes[key] = sorted((info.get("Config") or {}).get("Volumes") or {})
    return _volumes[key]


def reset_engine_caches() -> None:
    """Forget every client and cached engine fact (tests that restart engines call this)."""
    with _lock:
        _clients.clear()
        _ncpu.clear()
        _volumes.clear()
