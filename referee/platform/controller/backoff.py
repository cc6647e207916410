"""How the controller treats a backend's control plane: a circuit breaker with jittered back-off for
outages, and a poll interval that grows while nothing changes. Pure logic with an injectable clock.

A control-plane error (``BackendUnavailable``: throttling, timeouts, an unreachable endpoint, expired
credentials) opens the breaker: nothing is dispatched or polled until the back-off has passed; then one
call probes the endpoint (half-open). A success closes the breaker; a failure opens it again for about
twice as long (capped), each delay drawn from [delay/2, delay] so that many schedulers hit by the same
outage do not come back in lock-step ("equal jitter"). No submission's retries are spent on any of it.
"""

from __future__ import annotations

import enum
import random
import time
from typing import Callable


class BreakerState(str, enum.Enum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # backing off: no calls until ``retry_at``
    HALF_OPEN = "half_open"  # one probe is allowed


class CircuitBreaker:
    """Back-off for a backend's control plane (see the module docstring)."""

    def __init__(self, *, base_s: float = 1.0, cap_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("back-off needs 0 < base_s <= cap_s")
        self.base_s, self.cap_s = base_s, cap_s
        self._clock, self._rng = clock, rng
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive control-plane failures
        self.retry_at = 0.0
        self.outage_since: float | None = None  # when the current run of failures began
        self.last_error: BaseException | None = None

    def allow(self) -> bool:
        """May the controller call the backend now? (An open breaker whose back-off has passed lets one
        probe through.)"""
        if self.state is BreakerState.OPEN and self._clock() >= self.retry_at:
            self.state = BreakerState.HALF_OPEN
        return self.state is not BreakerState.OPEN

    def success(self) -> bool:
        """A call answered; returns True when this ended an outage."""
        ended = self.failures > 0
        self.state, self.failures, self.outage_since, self.last_error = BreakerState.CLOSED, 0, None, None
        return ended

    def failure(self, exc: BaseException, retry_after: float | None = None) -> float:
        """A control-plane error: open the breaker; returns the back-off in seconds."""
        now = self._clock()
        self.failures += 1
        self.last_error = exc
        if self.outage_since is None:
            self.outage_since = now
        delay = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        delay = delay / 2 + self._rng() * delay / 2
        if retry_after:
            delay = max(delay, min(retry_after, self.cap_s))
        self.retry_at = now + delay
        self.state = BreakerState.OPEN
        return delay

    @property
    def outage_s(self) -> float:
        """How long the current outage has lasted (0 when the backend answers)."""
        return 0.0 if self.outage_since is None else self._clock() - self.outage_since

    @property
    def wait_s(self) -> float:
        """Seconds until the next call may go out (0 unless open)."""
        return max(0.0, self.retry_at - self._clock()) if self.state is BreakerState.OPEN else 0.0


class PollInterval:
    """The time between polls: ``low`` after a change, growing by ``factor`` per poll that saw none, up to
    ``high``. Far fewer status calls for a fleet of long jobs, no slower to notice a burst of changes."""

    def __init__(self, low: float, high: float, factor: float = 1.5):
        if low < 0 or high < low or factor < 1:
            raise ValueError("poll interval needs 0 <= low <= high and factor >= 1")
        self.low, self.high, self.factor = low, high, factor
        self.current = low

    def changed(self) -> None:
        self.current = self.low

    def unchanged(self) -> None:
        self.current = min(self.high, max(self.current * self.factor, self.low))
