"""Paired significance and bootstrap intervals: referee against sacrebleu's paired bootstrap, in one run.

Part 1 — 10 systems x 2,000 segments x 1,000 resamples, BLEU. sacrebleu's ``PairedTest`` (test type
``bs``: p-value and 95% interval of each system against the first) against referee's ``PairedTest``
(every system's interval, p-values against the first, against the neighbour above, tiers) on the
same statistics. Both extract per-segment statistics first; the speed-up is printed for the
resampling part (the goal: at least 10x) and end to end. The p-values are compared too.

Part 2 — referee alone: 1,000 submissions x 100,000 items x 1,000 resamples of an accuracy-style
metric (two statistics per item): resampled scores, p-values against the leader and the neighbour,
tiers and intervals. Resamples are drawn in blocks, so memory stays near the size of the statistics
matrix; prints the time and the peak memory.

    python bench/bench_significance.py                  # both parts, full size
    python bench/bench_significance.py --scale 0.1      # part 2 at a tenth of the items
    python bench/bench_significance.py --backend torch  # referee's matmul on torch (CUDA when present)
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

from referee.platform.core.predictions import Predictions
from referee.plugins.builtin.scorers import referee_scorers
from referee.plugins.manager import get_runtime
from referee.scoring.significance import PairedTest, assign_tiers

SCORERS = {s.name: s for s in referee_scorers()}
WORDS = ("the cat dog house runs quickly slowly over under a an big small red blue green hello world "
         "model data learning system paper results table river city report meeting plan").split()


def mt_systems(rng: np.random.Generator, n_systems: int, n_segments: int) -> tuple[list[str], list[list[str]]]:
    refs = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 25)))) for _ in range(n_segments)]
    systems = []
    for s in range(n_systems):
        rate = 0.25 + 0.004 * s  # neighbours are near ties, the ends clearly apart
        systems.append([" ".join(w if rng.random() > rate else str(rng.choice(WORDS)) for w in ref.split())
                        for ref in refs])
    return refs, systems


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def part1(args: argparse.Namespace) -> None:
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest as SacrePairedTest

    n_sys, n_seg, n_res = 10, 2000, 1000
    print(f"part 1: {n_sys} systems x {n_seg} segments x {n_res} resamples, BLEU, paired bootstrap "
          f"(best of {args.repeat})")
    refs, systems = mt_systems(np.random.default_rng(args.seed), n_sys, n_seg)
    named = [(f"sys{i}", hyps) for i, hyps in enumerate(systems)]
    os.environ["SACREBLEU_SEED"] = str(args.seed_resample)

    # sacrebleu's statistics once; a BLEU that returns them lets us time its resampling alone.
    sacre_extract, sacre_stats = best_of(args.repeat, lambda: {
        id(h): BLEU()._extract_corpus_statistics(h, [refs]) for h in systems})

    class PrecomputedBLEU(BLEU):
        def _extract_corpus_statistics(self, hypotheses: Any, references: Any) -> Any:
            self.num_refs = len(references)
            return sacre_stats[id(hypotheses)]

    def sacre_test() -> np.ndarray:
        _, scores = SacrePairedTest(named, {"BLEU": PrecomputedBLEU()}, [refs], test_type="bs", n_samples=n_res)()
        return np.array([r.p_value for r in scores["BLEU"][1:]])

    sacre_time, sacre_p = best_of(args.repeat, sacre_test)

    bleu = SCORERS["bleu"]
    ours_extract, stats = best_of(args.repeat, lambda: [
        bleu.statistics(Predictions(type="text", columns=["text"], values=h, raw={"text": h}), refs, {})
        for h in systems])

    def ours_test() -> tuple[np.ndarray, Any]:
        get_runtime().cache("bootstrap.weights").clear()  # draw the resamples every time, as sacrebleu does
        test = PairedTest.from_systems(bleu.aggregate, {}, stats, resamples=n_res, seed=args.seed_resample,
                                       backend=args.backend)
        others = np.arange(1, n_sys)
        p = test.p_values(np.zeros(n_sys - 1, dtype=int), others)
        test.p_values(others - 1, others)
        test.intervals(0.95)
        order = np.argsort(-test.observed, kind="stable")
        return p, assign_tiers(n_sys, lambda h, js: test.p_values(np.full(len(js), order[h]), order[js]))

    ours_time, (ours_p, tiers) = best_of(args.repeat, ours_test)
    print(f"  sacrebleu: statistics {sacre_extract:7.3f} s   PairedTest(bs) on them {sacre_time:7.3f} s "
          f"(p-value and CI per system vs sys0)")
    print(f"  referee:   statistics {ours_extract:7.3f} s   PairedTest on them     {ours_time:7.3f} s "
          f"(CIs, p vs sys0, p vs neighbour, tiers; backend {args.backend})")
    print(f"  speed-up, paired bootstrap: {sacre_time / ours_time:7.1f}x   (goal >= 10x)")
    print(f"  speed-up, end to end:       {(sacre_extract + sacre_time) / (ours_extract + ours_time):7.1f}x")
    print(f"  p-values vs sys0, same seed: max |referee - sacrebleu| = {np.abs(ours_p - sacre_p).max():.4f} "
          f"(sacrebleu {np.round(sacre_p, 3).tolist()})")
    print(f"  tiers (best first): {tiers.tier}")


def part2(args: argparse.Namespace) -> None:
    n_sys = max(2, int(1000 * min(args.scale_systems, 1.0)))
    n_items = max(10, int(100_000 * args.scale))
    n_res = 1000
    k = 2
    print(f"part 2: {n_sys} submissions x {n_items} items x {n_res} resamples, accuracy, paired bootstrap")
    tracemalloc.start()
    rng = np.random.default_rng(args.seed)
    accuracy = np.sort(rng.uniform(0.70, 0.80, size=n_sys))[::-1]
    x = np.empty((n_items, n_sys * k))  # (items, systems * k): the layout PairedTest resamples
    for lo in range(0, n_sys, 50):  # fill in column blocks to keep the scratch small
        hi = min(n_sys, lo + 50)
        x[:, lo * k:hi * k:k] = rng.random((n_items, hi - lo)) < accuracy[lo:hi]
    x[:, 1::k] = 1.0
    data_mb = x.nbytes / 2**20
    tracemalloc.reset_peak()
    t = time.perf_counter()
    cpu = time.process_time()
    test = PairedTest(SCORERS["accuracy"].aggregate, {}, x, k, resamples=n_res, seed=args.seed_resample,
                      backend=args.backend)
    t_resample = time.perf_counter() - t
    order = np.argsort(-test.observed, kind="stable")
    vs_leader = test.p_values(np.full(n_sys - 1, order[0]), order[1:])
    test.p_values(order[:-1], order[1:])
    tiers = assign_tiers(n_sys, lambda h, js: vs_leader if h == 0 else
                         test.p_values(np.full(len(js), order[h]), order[js]))
    untied = assign_tiers(n_sys, lambda h, js: test.p_values(np.full(len(js), order[h]), order[js]),
                          correction="none")
    intervals = test.intervals(0.95)
    total = time.perf_counter() - t
    cpu = time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  resampled sums and scores  {t_resample:8.2f} s")
    print(f"  + p-values, tiers, CIs     {total:8.2f} s total, {cpu:.2f} s CPU (all threads; backend "
          f"{args.backend}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  statistics matrix {data_mb:.0f} MiB; peak traced memory during the test {peak / 2**20:.0f} MiB "
          f"(+{peak / 2**20 - data_mb:.0f} MiB over the data); peak RSS of the process {rss:.0f} MiB")
    print(f"  tiers: {max(tiers.tier)} with Holm over {n_sys - 1} comparisons, {max(untied.tier)} uncorrected; "
          f"leader CI {intervals[order[0]]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("1", "2", "all"), default="all")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply part 2's item count by this")
    parser.add_argument("--scale-systems", type=float, default=1.0, help="multiply part 2's submissions")
    parser.add_argument("--backend", choices=("numpy", "torch", "auto"), default="numpy")
    parser.add_argument("--repeat", type=int, default=3, help="part 1: best of this many runs per timing")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--seed-resample", type=int, default=12345, help="resampling seed (both tools)")
    args = parser.parse_args()
    if args.part in ("1", "all"):
        part1(args)
    if args.part in ("2", "all"):
        part2(args)


if __name__ == "__main__":
    main()
