"""Background scoring for ``referee serve``: a thread that keeps every competition's queue moving.

Every ``interval`` seconds (or at once when an upload pokes it) the loop looks for competitions with
pending submissions and runs ``Controller(store, comp).run()`` for each in its own thread, one at a
time per competition, so a slow container in one competition does not hold up another. A run that
was paused (for example by a budget) or failed is not retried for ``backoff`` seconds. A backend whose
control plane stops answering never ends a run here: the controller backs off and resumes when the
endpoint answers again (``keep_trying``), so an outage pauses the queue instead of emptying it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

from referee.platform.store import Store

log = logging.getLogger(__name__)


class ScoringLoop:
    """Runs pending submissions of all competitions in a workspace until stopped."""

    def __init__(self, store: Store, *, interval: float = 2.0, poll_interval: float | None = None,
                 backoff: float = 60.0):
        self.store = store
        self.interval = interval
        self.backoff = backoff
        self._resume_at: dict[str, float] = {}
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self.runs = 0  # completed Controller.run() calls (for tests and /api/health)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="referee-scoring-loop", daemon=True)
            self._thread.start()

    def poke(self, competition_id: str | None = None) -> None:
        """Look for work now (called after an upload or a re-run); lifts a competition's back-off."""
        if competition_id is not None:
            self._resume_at.pop(competition_id, None)
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for t in list(self._running.values()):
            t.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must outlive any one bad tick
                log.exception("scoring loop tick failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def pending_competitions(self) -> list[str]:
        return self.store.competitions_with_work()

    def tick(self) -> None:
        """Start a scheduler thread for each competition with work and none running."""
        now = time.monotonic()
        for cid in self.pending_competitions():
            if self._resume_at.get(cid, 0.0) > now:
                continue
            with self._lock:
                t = self._running.get(cid)
                if t is not None and t.is_alive():
                    continue
                t = threading.Thread(target=self._run_one, args=(cid,), name=f"referee-scheduler-{cid}",
                                     daemon=True)
                self._running[cid] = t
                t.start()

    def _run_one(self, cid: str) -> None:
        from referee.platform.controller.reconcile import Controller
        progressed = False
        try:
            comp = self.store.get_competition(cid)
            summary = Controller(self.store, comp, poll_interval=self.poll_interval, keep_trying=True).run()
            progressed = bool(summary.scored or summary.failed or summary.retried)
            if summary.paused_reason:
                self._resume_at[cid] = time.monotonic() + self.backoff
        except Exception as exc:
            log.exception("scheduler for %s failed", cid)
            self._resume_at[cid] = time.monotonic() + self.backoff
            self.store.event("scheduler_error", f"{type(exc).__name__}: {exc}", competition_id=cid,
                             traceback=traceback.format_exc())
        finally:
            self.runs += 1
            self.store.close()  # this thread's connection
            if progressed:
                self._wake.set()  # more may have arrived while it ran
