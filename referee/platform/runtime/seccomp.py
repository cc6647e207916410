"""referee's seccomp profile: the system calls a submission's processes may make.

The profile (``seccomp.json`` next to this module) is an allow-list in Docker's profile format, close
to Docker's default but without what no submission needs and what has been the road to kernel
exploits: ``io_uring_*``, ``userfaultfd``, ``perf_event_open``, ``bpf``, ``keyctl``/``add_key``/
``request_key``, namespace and mount calls (``unshare``, ``setns``, ``mount``, the new mount API,
``pivot_root``, ``chroot``), ``ptrace``/``process_vm_*``/``kcmp``, kernel modules, ``kexec``,
clock and swap control, ``open_by_handle_at``/``name_to_handle_at``, NUMA policy calls and
``AF_VSOCK`` sockets. ``clone`` may not create namespaces; ``clone3`` answers ENOSYS so the C
library falls back to ``clone``. Everything not listed fails with EPERM.

Docker applies it to every sandboxed container (``security_opt``) and, as the daemon default, to
the RUN steps of the dedicated build engine. AWS Batch job definitions cannot carry a seccomp
profile: jobs there run under the instance's Docker default.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

PROFILE_PATH = Path(__file__).with_name("seccomp.json")
BLOCKED_EXAMPLES = ("io_uring_setup", "userfaultfd", "perf_event_open", "bpf", "keyctl", "add_key", "unshare",
                    "setns", "mount", "ptrace", "kexec_load", "init_module")


@functools.lru_cache(maxsize=4)
def profile_json(path: str | None = None) -> str:
    """The profile as compact JSON, the form Docker's ``seccomp=`` security option takes."""
    data = json.loads(Path(path or PROFILE_PATH).read_text(encoding="utf-8"))
    return json.dumps(data, separators=(",", ":"))


def allowed_syscalls() -> set[str]:
    """Every system call name the profile allows (some with argument conditions)."""
    data = json.loads(PROFILE_PATH.read_text(encoding="utf-8"))
    return {name for rule in data["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}
