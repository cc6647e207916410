"""The GPUs of one host, handed out to concurrent jobs: each job gets GPUs no other job holds.

The inventory is what the host has (``/proc/driver/nvidia/gpus``, else ``nvidia-smi -L``), or what
the backend option ``gpu_ids`` says, or ``REFEREE_GPU_INVENTORY`` (a comma-separated list: a
simulated host for tests). A pool per host hands ids out: in one process through a condition
variable, across processes (two schedulers on one host) through a lock file per GPU, held while the
job runs. A job that asks for more GPUs than the host has could never run; ``acquire`` says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from referee.platform.runtime.locks import try_file_lock

LOCK_ROOT = Path(tempfile.gettempdir()) / "referee-gpus"


def gpu_inventory(option: Any = None) -> list[str]:
    """The host's GPU ids: ``option`` (a list or a count) wins, then REFEREE_GPU_INVENTORY, then the driver."""
    if option is not None:
        if isinstance(option, int) and not isinstance(option, bool):
            return [str(i) for i in range(option)]
        return [str(g).strip() for g in option if str(g).strip()]
    env = os.environ.get("REFEREE_GPU_INVENTORY")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.M)]


class GpuUnavailable(Exception):
    """More GPUs were asked for than the host has (or the wait was cancelled)."""


class GpuPool:
    """Distinct GPU ids for concurrent jobs on one host."""

    def __init__(self, ids: list[str], host: str = "local"):
        self.ids = list(ids)
        self._free = list(ids)
        self._held: dict[str, Any] = {}  # id -> lock file handle
        self._cond = threading.Condition()
        self._dir = LOCK_ROOT / re.sub(r"[^A-Za-z0-9_.-]", "_", host)[:100]

    def acquire(self, count: int, cancel: threading.Event | None = None, poll_s: float = 0.5) -> list[str]:
        """Block until ``count`` GPUs are free here and on no other process's lease; return their ids."""
        if count > len(self.ids):
            raise GpuUnavailable(f"the job asks for {count} GPUs and this host has {len(self.ids)}")
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise GpuUnavailable("cancelled while waiting for a GPU")
                got = self._try(count)
                if got is not None:
                    return got
                self._cond.wait(poll_s)  # woken by a release here; polls for other processes' releases

    def _try(self, count: int) -> list[str] | None:
        got: list[str] = []
        for gid in list(self._free):
            fh = self._lock(gid)
            if fh is None:
                continue  # another process holds it
            self._free.remove(gid)
            self._held[gid] = fh
            got.append(gid)
            if len(got) == count:
                return got
        for gid in got:  # not enough: give back what was taken, wait for more
            self._unlock(gid)
        return None

    def release(self, ids: list[str]) -> None:
        with self._cond:
            for gid in ids:
                if gid in self._held:
                    self._unlock(gid)
            self._cond.notify_all()

    def held(self) -> list[str]:
        with self._cond:
            return sorted(self._held)

    def _lock(self, gid: str) -> Any:
        return try_file_lock(self._dir / f"gpu-{gid.replace('/', '_')}.lock")

    def _unlock(self, gid: str) -> None:
        fh = self._held.pop(gid)
        fh.close()
        self._free.append(gid)


_pools: dict[tuple[str, tuple[str, ...]], GpuPool] = {}
_pools_lock = threading.Lock()


def pool_for(host: str, ids: list[str]) -> GpuPool:
    """The one pool of a host (shared by every backend in this process)."""
    key = (host, tuple(ids))
    with _pools_lock:
        if key not in _pools:
            _pools[key] = GpuPool(ids, host)
        return _pools[key]
