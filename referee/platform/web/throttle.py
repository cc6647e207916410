"""Password guessing brakes: after a few failed sign-ins for one name, wait before the next try.

In memory, per process: a restart forgets, which is fine for a brake (argon2 already makes every
guess cost tens of milliseconds). The wait doubles with each failure past the allowance, up to
``max_wait``, and comes back as ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from referee.platform.store import Store, UserRow
from referee.platform.web.access import WebError
from referee.platform.web.auth import verify_password


class LoginThrottle:
    """Failed attempts per key (a user name): ``allowance`` free ones, then an exponential wait."""

    def __init__(self, *, allowance: int = 5, base_wait: float = 2.0, max_wait: float = 300.0,
                 forget_after: float = 900.0, clock: Callable[[], float] | None = None):
        self.allowance = allowance
        self.base_wait = base_wait
        self.max_wait = max_wait
        self.forget_after = forget_after
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the last one)

    def _wait(self, key: str, now: float) -> float:
        n, last = self._failures.get(key, (0, 0.0))
        if n and now - last > self.forget_after:
            self._failures.pop(key, None)
            return 0.0
        if n < self.allowance:
            return 0.0
        wait = min(self.max_wait, self.base_wait * 2 ** (n - self.allowance))
        return max(0.0, last + wait - now)

    def check(self, key: str) -> None:
        """429 with ``Retry-After`` while ``key`` must wait."""
        with self._lock:
            wait = self._wait(key, self._clock())
        if wait > 0:
            seconds = math.ceil(wait)
            raise WebError(429, "too_many_attempts", f"too many failed sign-ins for this name; try again in "
                                                     f"{seconds} s", headers={"Retry-After": str(seconds)},
                           retry_after=seconds)

    def failed(self, key: str) -> None:
        with self._lock:
            n, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (n + 1, self._clock())
            if len(self._failures) > 100_000:  # bounded memory under a flood of made-up names
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def verify(self, store: Store, username: str, password: str) -> UserRow | None:
        """``verify_password`` behind the brake (the key is the lowercased name): 429 while the name
        must wait; a wrong password counts towards the wait, a right one clears it."""
        key = username.strip().lower()
        self.check(key)
        user = verify_password(store, username, password)
        if user is None:
            self.failed(key)
        else:
            self.succeeded(key)
        return user
