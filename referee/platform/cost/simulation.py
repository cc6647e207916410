"""Discrete-event simulation of a fleet run, driving the real scheduling policy and budget check.

The clock is simulated (a heap of events); the decisions are not: every dispatch asks the same
``SchedulingPolicy`` the scheduler uses which pending submissions go next (over the same claim window of the
oldest pending ones), every failure asks its ``on_failure`` whether to retry and whether to charge the team,
and every dispatch passes the same ``budget_reason`` the dispatch hook calls. What is modelled: a fleet of
identical instances with ``jobs_per_instance`` slots, runtimes drawn per submission (lognormal around the
pilot mean, or resampled from pilot runs), attempts lost to infrastructure (spot reclaim, node loss) with a
given probability at a uniform point of the run, a slot's restart delay, and the job timeout.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from bisect import insort
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from referee.platform.backends.base import FailureReason
from referee.platform.cost.budget import Outlay, budget_reason, projected_cost
from referee.platform.cost.config import CostConfig, Rate
from referee.platform.cost.planner import PlanInputError
from referee.platform.policy import Candidate, SchedulingPolicy

HOUR = 3600.0
_DONE, _LOST, _TIMEOUT, _SLOT_UP = 0, 1, 2, 3


@dataclass
class SimulationConfig:
    submissions: int
    runtime_s: float  # mean clean runtime of one submission
    fleet: int  # instances
    instance_type: str = "p3.2xlarge"
    jobs_per_instance: int = 1
    runtime_cv: float = 0.0  # spread of runtimes (lognormal coefficient of variation)
    runtimes: Sequence[float] | None = None  # pilot runtimes to resample instead of the lognormal
    teams: int = 1
    failure_rate: float = 0.0  # probability an attempt is lost to the infrastructure
    restart_delay_s: float = 0.0  # a slot that lost its job is back after this
    max_infra_retries: int = 3
    timeout_s: float | None = None
    cost: CostConfig = field(default_factory=CostConfig)  # pricing, price overrides, budgets
    seed: int = 0

    def check(self) -> None:
        problems = []
        if self.submissions < 1:
            problems.append("submissions must be at least 1")
        if self.fleet < 1 or self.jobs_per_instance < 1:
            problems.append("the fleet needs at least one instance with at least one slot")
        if not self.runtime_s > 0:
            problems.append("the runtime must be positive")
        if not 0 <= self.failure_rate < 1:
            problems.append("the failure rate must be in [0, 1)")
        if self.runtime_cv < 0 or self.restart_delay_s < 0:
            problems.append("runtime spread and restart delay cannot be negative")
        if problems:
            raise PlanInputError("cannot simulate: " + "; ".join(problems))


@dataclass
class SimulationResult:
    submissions: int
    completed: int  # scored (the job succeeded)
    timed_out: int  # final failures charged to the team
    gave_up: int  # infrastructure failures past the retry limit (never charged)
    retries: int
    charged_failures: int  # failures the policy charged to a team's quota
    pending: int  # left undispatched (a budget pause)
    makespan_s: float
    cost: float  # instance-time actually used, lost attempts included
    provisioned_cost: float  # the whole fleet kept on for the makespan
    busy_hours: float  # slot-hours of work, lost attempts included
    lost_hours: float
    utilisation: float  # busy slot-time / (slots x makespan)
    peak_in_flight: int
    paused_reason: str | None
    events: int
    dispatch_rounds: int
    wall_s: float
    instance_type: str = ""
    fleet: int = 0
    hourly: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _PendingWindow:
    """Pending submission ids, lowest (oldest) first: the rows the scheduler's claim query returns.

    ``_window`` holds the lowest ids seen so far, sorted; every id still in ``_retry`` or not yet taken from
    ``range(n)`` is higher than all of them, so the head of the window is always the oldest pending work.
    """

    def __init__(self, n: int):
        self._n = n
        self._next = 0
        self._retry: list[int] = []
        self._window: list[int] = []

    def __len__(self) -> int:
        return len(self._window) + len(self._retry) + (self._n - self._next)

    def head(self, k: int) -> list[int]:
        """The ``k`` oldest pending ids (the window keeps no more, so removing picks stays cheap)."""
        w, retry = self._window, self._retry
        if len(w) > k:
            for sid in w[k:]:  # the highest ids seen: back with the rest, the invariant holds
                heapq.heappush(retry, sid)
            del w[k:]
        while len(w) < k:
            fresh = self._next if self._next < self._n else None
            if retry and (fresh is None or retry[0] < fresh):
                w.append(heapq.heappop(retry))
            elif fresh is not None:
                w.append(fresh)
                self._next += 1
            else:
                break
        return list(w)

    def push(self, sid: int) -> None:
        if self._window and sid < self._window[-1]:
            insort(self._window, sid)
        else:
            heapq.heappush(self._retry, sid)

    def remove(self, ids: list[int]) -> None:
        if len(ids) == 1:
            self._window.remove(ids[0])
        elif ids:
            taken = set(ids)
            self._window = [i for i in self._window if i not in taken]


def _runtimes(cfg: SimulationConfig, rng: random.Random) -> list[float]:
    if cfg.runtimes:
        pool = list(cfg.runtimes)
        return [rng.choice(pool) for _ in range(cfg.submissions)]
    if cfg.runtime_cv == 0:
        return [cfg.runtime_s] * cfg.submissions
    sigma = math.sqrt(math.log1p(cfg.runtime_cv**2))
    mu = math.log(cfg.runtime_s) - sigma**2 / 2
    return [rng.lognormvariate(mu, sigma) for _ in range(cfg.submissions)]


def simulate(cfg: SimulationConfig, policy: SchedulingPolicy | None = None) -> SimulationResult:
    """Run the fleet simulation to the end (or to a budget pause) and report what happened."""
    cfg.check()
    wall0 = time.perf_counter()
    rng = random.Random(cfg.seed)
    n, slots_total = cfg.submissions, cfg.fleet * cfg.jobs_per_instance
    policy = policy or SchedulingPolicy(max_in_flight=slots_total, max_infra_retries=cfg.max_infra_retries)
    it = cfg.cost.catalog.get(cfg.instance_type)
    rate = Rate(it.name, cfg.cost.pricing, it.hourly(cfg.cost.pricing), 1.0 / cfg.jobs_per_instance, "simulated")
    per_second = rate.per_hour / HOUR
    budgeted = cfg.cost.budget is not None or cfg.cost.team_budget is not None
    projected = projected_cost(cfg.cost, rate, cfg.timeout_s or cfg.runtime_s)

    runtime = _runtimes(cfg, rng)
    team_of = [f"team{i % cfg.teams:05d}" for i in range(n)]
    cands = [Candidate(i, team_of[i], f"{i:010d}") for i in range(n)]
    attempt = [1] * n
    started = [0.0] * n
    pending = _PendingWindow(n)
    free_slots = list(range(slots_total - 1, -1, -1))
    waiting: deque[int] = deque()  # dispatched, waiting for a slot that is restarting
    running_by_team: dict[str, int] = {}
    team_spent: dict[str, float] = {}
    team_committed: dict[str, float] = {}
    heap: list[tuple[float, int, int, int, int]] = []
    seq = 0
    in_flight = peak = 0
    spent = committed = busy = lost = 0.0
    completed = timed_out = gave_up = retries = charged = events = rounds = 0
    last_final = 0.0
    paused: str | None = None
    p_fail, timeout = cfg.failure_rate, cfg.timeout_s

    def start(sid: int, slot: int, now: float) -> None:
        nonlocal seq
        d = runtime[sid]
        limit = d if timeout is None else min(d, timeout)
        if p_fail and rng.random() < p_fail:
            end, kind = now + rng.random() * limit, _LOST
        elif timeout is not None and d > timeout:
            end, kind = now + timeout, _TIMEOUT
        else:
            end, kind = now + d, _DONE
        started[sid] = now
        seq += 1
        heapq.heappush(heap, (end, seq, kind, slot, sid))

    def slot_free(slot: int, now: float) -> None:
        if waiting:
            start(waiting.popleft(), slot, now)
        else:
            free_slots.append(slot)

    def dispatch(now: float) -> None:
        nonlocal in_flight, peak, committed, rounds, paused
        free = policy.free_slots(in_flight)
        if free <= 0 or paused is not None or not len(pending):
            return
        rounds += 1
        picked = policy.pick([cands[i] for i in pending.head(policy.claim_window(free))], in_flight, running_by_team)
        taken = []
        for c in picked:
            if budgeted:
                team_out = Outlay(team_spent.get(c.team, 0.0), team_committed.get(c.team, 0.0),
                                  running_by_team.get(c.team, 0), projected)
                reason = budget_reason(cfg.cost, "simulation", Outlay(spent, committed, in_flight, projected),
                                       team=c.team, team_outlay=team_out,
                                       what=f"submission #{c.key} ({rate.instance_type})")
                if reason:
                    paused = reason
                    break
                committed += projected
                team_committed[c.team] = team_committed.get(c.team, 0.0) + projected
            taken.append(c.key)
            in_flight += 1
            running_by_team[c.team] = running_by_team.get(c.team, 0) + 1
            if free_slots:
                start(c.key, free_slots.pop(), now)
            else:
                waiting.append(c.key)
        pending.remove(taken)
        peak = max(peak, in_flight)

    dispatch(0.0)
    while heap:
        now = heap[0][0]
        while heap and heap[0][0] == now:
            _, _, kind, slot, sid = heapq.heappop(heap)
            events += 1
            if kind == _SLOT_UP:
                slot_free(slot, now)
                continue
            team = team_of[sid]
            elapsed = now - started[sid]
            busy += elapsed
            spent += elapsed * per_second
            in_flight -= 1
            if running_by_team[team] == 1:  # like the scheduler's count, only teams with running jobs
                del running_by_team[team]
            else:
                running_by_team[team] -= 1
            if budgeted:
                team_spent[team] = team_spent.get(team, 0.0) + elapsed * per_second
                committed -= projected
                team_committed[team] -= projected
            if kind == _DONE:
                completed += 1
                last_final = now
                slot_free(slot, now)
                continue
            reason = FailureReason.PLATFORM_ERROR if kind == _LOST else FailureReason.TIMED_OUT
            decision = policy.on_failure(reason, attempt[sid])
            charged += decision.charge
            if decision.retry:
                attempt[sid] += 1
                retries += 1
                pending.push(sid)
            else:
                timed_out += kind == _TIMEOUT
                gave_up += kind == _LOST
                last_final = now
            if kind == _LOST:
                lost += elapsed
                if cfg.restart_delay_s > 0:
                    seq += 1
                    heapq.heappush(heap, (now + cfg.restart_delay_s, seq, _SLOT_UP, slot, -1))
                    continue
            slot_free(slot, now)
        dispatch(now)

    makespan = last_final
    capacity = slots_total * makespan
    return SimulationResult(
        submissions=n, completed=completed, timed_out=timed_out, gave_up=gave_up, retries=retries,
        charged_failures=charged, pending=len(pending), makespan_s=makespan, cost=spent,
        provisioned_cost=cfg.fleet * makespan / HOUR * rate.hourly, busy_hours=busy / HOUR, lost_hours=lost / HOUR,
        utilisation=busy / capacity if capacity else 0.0, peak_in_flight=peak, paused_reason=paused, events=events,
        dispatch_rounds=rounds, wall_s=time.perf_counter() - wall0, instance_type=it.name, fleet=cfg.fleet,
        hourly=rate.hourly)
