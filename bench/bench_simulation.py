"""Time the fleet simulation (real SchedulingPolicy + budget rule, simulated clock) for 4,200 and 100,000
submissions against a baseline measured in the same run: a bare heapq event loop over the same fleet and
runtimes, dispatching first-in first-out with no policy.

Times are CPU seconds of this process (``time.process_time``), so a busy machine does not skew the ratios.
Prints, per size: seconds for the simulation and the baseline, their ratio, microseconds per submission,
the share of time spent inside the policy's ``pick``, and finally the scaling factor (time per submission at
the largest size over the smallest; near 1 means linear).

    python bench/bench_simulation.py                 # 4,200 and 100,000
    python bench/bench_simulation.py --sizes 4200    # quick
    python bench/bench_simulation.py --team-budget 60   # with team budgets: over-budget teams are held
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import time

from referee.platform.controller.policy import SchedulingPolicy
from referee.platform.cost.config import CostConfig
from referee.platform.cost.planner import PlanRequest, plan
from referee.platform.cost.simulation import SimulationConfig, simulate

H = 3600.0


class TimedPolicy(SchedulingPolicy):
    """The real policy, with the time spent choosing work added up."""

    pick_s = 0.0

    def pick(self, *args, **kw):
        t = time.process_time()
        try:
            return super().pick(*args, **kw)
        finally:
            self.pick_s += time.process_time() - t


def baseline(n: int, slots: int, runtime_s: float, cv: float, failure_rate: float, seed: int) -> tuple[float, float]:
    """A bare event loop: same runtimes, same failures, FIFO dispatch. Returns (seconds, makespan)."""
    t0 = time.process_time()
    rng = random.Random(seed)
    sigma = math.sqrt(math.log1p(cv**2))
    mu = math.log(runtime_s) - sigma**2 / 2
    runtime = [rng.lognormvariate(mu, sigma) for _ in range(n)]
    queue = list(range(n - 1, -1, -1))
    heap: list[tuple[float, int, int]] = []
    free, now, seq = slots, 0.0, 0
    while queue or heap:
        while free and queue:
            sid = queue.pop()
            free -= 1
            seq += 1
            if rng.random() < failure_rate:
                heapq.heappush(heap, (now + rng.random() * runtime[sid], seq, -sid - 1))
            else:
                heapq.heappush(heap, (now + runtime[sid], seq, sid))
        now, _, sid = heapq.heappop(heap)
        free += 1
        if sid < 0:
            queue.append(-sid - 1)
    return time.process_time() - t0, now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4200, 100_000])
    ap.add_argument("--runtime-h", type=float, default=9.0)
    ap.add_argument("--deadline-d", type=float, default=21.0)
    ap.add_argument("--failure-rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--team-budget", type=float, default=None,
                    help="USD per team (4 submissions each): the dispatch check holds teams over it")
    args = ap.parse_args()
    cost = CostConfig(team_budget=args.team_budget)

    print(f"{'submissions':>11} {'fleet':>6} {'sim s':>8} {'base s':>8} {'ratio':>7} {'us/sub':>8} "
          f"{'pick %':>7} {'makespan d':>10} {'util':>6} {'cost $':>12}")
    per_sub, base_per_sub = [], []
    for n in args.sizes:
        option = plan(PlanRequest(submissions=n, deadline_s=args.deadline_d * 86400,
                                  pilots={"p3.2xlarge": [args.runtime_h * H]})).options[0]
        fleet = option.instances_with_margin
        policy = TimedPolicy(max_in_flight=fleet, max_infra_retries=3)
        t = time.process_time()
        r = simulate(SimulationConfig(submissions=n, runtime_s=args.runtime_h * H, fleet=fleet, runtime_cv=0.1,
                                      teams=max(1, n // 4), failure_rate=args.failure_rate, restart_delay_s=300,
                                      cost=cost, seed=args.seed), policy=policy)
        sim_s = time.process_time() - t
        base_s, _ = baseline(n, fleet, args.runtime_h * H, 0.1, args.failure_rate, args.seed)
        per_sub.append(sim_s / n)
        base_per_sub.append(base_s / n)
        print(f"{n:>11,} {fleet:>6} {sim_s:>8.2f} {base_s:>8.3f} {sim_s / base_s:>6.1f}x {1e6 * sim_s / n:>8.1f} "
              f"{100 * policy.pick_s / sim_s:>6.1f}% {r.makespan_s / 86400:>10.1f} {r.utilisation:>6.1%} "
              f"{r.cost:>12,.0f}" + (f"  held teams {len(r.held_teams):,}, pending {r.pending:,}"
                                      if args.team_budget is not None else ""))
    if len(per_sub) > 1:
        scale = per_sub[-1] / per_sub[0]
        verdict = "near-linear" if scale < 2.0 else "super-linear"
        print(f"scaling: time per submission x{scale:.2f} from {args.sizes[0]:,} to {args.sizes[-1]:,} ({verdict}; "
              f"the bare baseline's own factor: x{base_per_sub[-1] / base_per_sub[0]:.2f})")


if __name__ == "__main__":
    main()
