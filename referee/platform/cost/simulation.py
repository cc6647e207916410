"""Discrete-event simulation of a fleet run, driving the real scheduling policy and budget check.

The clock is simulated (a heap of events); the decisions are not: every dispatch asks the same
``SchedulingPolicy`` the scheduler uses which pending submissions go next (over the same claim window of the
oldest pending ones), every failure asks its ``on_failure`` whether to retry and whether to charge the team,
and every dispatch passes the same ``dispatch_decision`` the dispatch hook (``check_dispatch``) returns:
the competition's budget pauses all dispatching; a team's budget holds only that team (its pending work
is skipped, as the scheduler's claim query skips held teams, and the others keep running).

Pricing is the real rule too: a job's rate is ``job_rate`` (``CostConfig.rate`` for the fleet's instance
type and the job's ``cpu``/``memory``/``gpus``), so ``cost.share`` decides its share of the instance as it
does for the budget check and the instance-time tracker: ``whole`` (the default) charges every job the
whole instance's price even when ``jobs_per_instance`` jobs share one, ``reserved`` the fraction its
resources reserve. ``jobs_per_instance`` only sets the fleet's slots. Attempts lost to the platform are
paid by the host and never count toward a team's spend (the ledger's platform account).

What is modelled: a fleet of identical instances with ``jobs_per_instance`` slots, runtimes drawn per
submission (lognormal around the pilot mean, or resampled from pilot runs), attempts lost to infrastructure
(spot reclaim, node loss) with a given probability at a uniform point of the run, a slot's restart delay,
and the job timeout.
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

from referee.platform.controller.policy import Candidate, SchedulingPolicy
from referee.platform.core.jobs import FailureReason
from referee.platform.cost.budget import (
    Outlay,
    dispatch_decision,
    job_label,
    job_rate,
    projected_cost,
)
from referee.platform.cost.config import CostConfig
from referee.platform.cost.planner import PlanInputError
from referee.plugins.records import Hold

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
    teams: int = 1  # submission i belongs to team i % teams ...
    team_names: Sequence[str] | None = None  # ... unless given: the team of each submission, oldest first
    failure_rate: float = 0.0  # probability an attempt is lost to the infrastructure
    restart_delay_s: float = 0.0  # a slot that lost its job is back after this
    max_infra_retries: int = 3
    timeout_s: float | None = None
    cost: CostConfig = field(default_factory=CostConfig)  # pricing, share, price overrides, budgets
    seed: int = 0
    # One job's resources and backend, priced as the budget check and the tracker price them (only
    # cost.share: reserved uses cpu/memory/gpus). The backend is a cloud one unless cost.local_backends
    # names it (then its local_equivalent prices the job, as in a real run).
    cpu: float | None = None
    memory: int | None = None
    gpus: int = 0
    backend: str = "aws-batch"

    def check(self) -> None:
        problems = []
        if self.submissions < 1:
            problems.append("submissions must be at least 1")
        if self.team_names is not None and len(self.team_names) != self.submissions:
            problems.append(f"team_names must name the team of each of the {self.submissions} submissions")
        if self.fleet < 1 or self.jobs_per_instance < 1:
            problems.append("the fleet needs at least one instance with at least one slot")
        if not (self.runtime_s > 0 and math.isfinite(self.runtime_s)):
            problems.append("the runtime must be positive")
        if not 0 <= self.failure_rate < 1:
            problems.append("the failure rate must be in [0, 1)")
        if not (0 <= self.runtime_cv < math.inf and 0 <= self.restart_delay_s < math.inf):
            problems.append("runtime spread and restart delay must be finite and not negative")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            problems.append("the timeout must be positive")
        if self.cpu is not None and not (self.cpu > 0 and math.isfinite(self.cpu)):
            problems.append("cpu per job must be a positive number")
        if (self.memory is not None and not self.memory > 0) or self.gpus < 0:
            problems.append("memory per job must be positive and gpus not negative")
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
    pending: int  # left undispatched (a budget pause, or the pending work of held teams)
    makespan_s: float
    cost: float  # what the cost trackers would record (the job rate x hours), lost attempts included
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
    share: float = 1.0  # the share of its instance one job is charged (cost.share)
    held_teams: dict[str, str] = field(default_factory=dict)  # team -> why its submissions were held

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
    # the rate and share rule of the budget check and the instance-time tracker (see the module docstring)
    rate = job_rate(cfg.cost, cfg.backend, instance_type=it.name, cpu=cfg.cpu, memory=cfg.memory, gpus=cfg.gpus)
    per_second = rate.per_hour / HOUR
    budgeted = cfg.cost.budget is not None or cfg.cost.team_budget is not None
    projection_s = cfg.timeout_s or cfg.runtime_s
    projected = projected_cost(cfg.cost, rate, projection_s)

    runtime = _runtimes(cfg, rng)
    team_of = list(cfg.team_names) if cfg.team_names is not None else [f"team{i % cfg.teams:05d}" for i in range(n)]
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
    held: dict[str, str] = {}  # team -> reason: skipped by every later dispatch, like the scheduler's claims
    parked = 0  # pending submissions of held teams (taken out of the window)
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

    def window(k: int) -> list[int]:
        """The ``k`` oldest pending ids of teams not held (held teams' ids leave the window for good)."""
        nonlocal parked
        while True:
            ids = pending.head(k)
            drop = [i for i in ids if team_of[i] in held] if held else []
            if not drop:
                return ids
            pending.remove(drop)
            parked += len(drop)

    def dispatch(now: float) -> None:
        nonlocal in_flight, peak, committed, rounds, paused
        while True:  # like the scheduler: after a team is held, claim again for the slots still free
            free = policy.free_slots(in_flight)
            if free <= 0 or paused is not None:
                return
            ids = window(policy.claim_window(free))
            if not ids:
                return
            rounds += 1
            picked = policy.pick([cands[i] for i in ids], in_flight, running_by_team)[:free]
            taken = []
            newly_held = False
            for c in picked:
                if c.team in held:  # held earlier in this round: released, like the scheduler's claim
                    continue
                if budgeted:
                    team_out = None
                    if cfg.cost.team_budget is not None:
                        team_out = Outlay(team_spent.get(c.team, 0.0), team_committed.get(c.team, 0.0),
                                          running_by_team.get(c.team, 0), projected)
                    decision = dispatch_decision(cfg.cost, "simulation",
                                                 Outlay(spent, committed, in_flight, projected), team=c.team,
                                                 team_outlay=team_out,
                                                 what=job_label(cfg.cost, rate, c.key, projection_s))
                    if isinstance(decision, Hold) and decision.team is not None:
                        held[decision.team] = decision.reason  # only this team; the others keep running
                        newly_held = True
                        continue
                    if decision:
                        paused = str(getattr(decision, "reason", decision))
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
            if not newly_held:
                return

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
                if kind != _LOST:  # an attempt lost to the platform is the host's, not the team's
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
                if team in held:
                    parked += 1
                else:
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
        charged_failures=charged, pending=len(pending) + parked, makespan_s=makespan, cost=spent,
        provisioned_cost=cfg.fleet * makespan / HOUR * rate.hourly, busy_hours=busy / HOUR, lost_hours=lost / HOUR,
        utilisation=busy / capacity if capacity else 0.0, peak_in_flight=peak, paused_reason=paused, events=events,
        dispatch_rounds=rounds, wall_s=time.perf_counter() - wall0, instance_type=it.name, fleet=cfg.fleet,
        hourly=rate.hourly, share=rate.share, held_teams=dict(held))
