"""ROC AUC's bootstrap interval: referee's general scorer against a loop of sklearn over the same resamples.

100,000 items x 1,000 resamples by default. Both sides draw the same seeded resamples (referee's
``Resampler``: sacrebleu's ``rng.choice`` draws as per-item counts) and turn them into a 95%
percentile interval:

* referee: ``general_interval`` with the built-in ``roc_auc`` scorer (batched: one sort, then a
  cumulative sum of each resample's weights), exactly what the scoring engine runs;
* baseline: ``sklearn.metrics.roc_auc_score(y, p, sample_weight=counts)`` once per resample.

Both are warmed up on a small problem first. Run on rounded probabilities (3 decimals, ~1,000 distinct
values: a histogram per resample) and on continuous ones (every score distinct: a cumulative sum over
the sorted items per resample). Prints both timings, the ratio, whether every resampled score and
the interval agree (to 1e-12), and a verdict per data set computed from the measured CPU-time ratio
(both sides are single-threaded; wall-clock, printed too, swings with whatever else shares the
machine). Goal: 20x; the exit status is 1 only when the numbers differ.

    python bench/bench_metrics.py [--items 100000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

GOAL = 20.0
TOL = 1e-12


def data(n: int, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary targets (30% positive) and probabilities: ``rounded`` to 3 decimals as many submissions
    are (about 1,000 distinct values, many ties), or ``continuous`` (every score distinct)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.0, 1.0)
    return y, (np.round(p, 3) if kind == "rounded" else p)


def main() -> None:
    from bench_scorers import timed  # the same best-of-``repeat`` wall and CPU timer
    from sklearn.metrics import roc_auc_score

    from referee.platform.core.predictions import Predictions
    from referee.plugins.builtin.scorers import referee_scorers
    from referee.scoring.bootstrap import (
        IntervalSettings,
        Resampler,
        general_interval,
        general_scores,
        interval_from_samples,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--seed-resample", type=int, default=12345)
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs per timing")
    parser.add_argument("--scores", choices=("rounded", "continuous", "both"), default="both")
    args = parser.parse_args()
    kinds = ("rounded", "continuous") if args.scores == "both" else (args.scores,)

    scorer = {s.name: s for s in referee_scorers()}["roc_auc"]
    settings = IntervalSettings(resamples=args.resamples, seed=args.seed_resample)

    def inputs(n: int, kind: str) -> tuple[np.ndarray, np.ndarray, Predictions, list[str]]:
        y, p = data(n, args.seed, kind)
        return y, p, Predictions("probability", ["p"], p[:, None], {}), [str(v) for v in y]

    def ours(preds: Predictions, refs: list[str], s: IntervalSettings) -> tuple[float, float, str] | None:
        return general_interval(scorer, preds, refs, {}, s)

    def baseline(y: np.ndarray, p: np.ndarray, s: IntervalSettings) -> tuple[np.ndarray, tuple[float, float] | None]:
        samples = np.empty(s.resamples)
        for start, block in Resampler(len(y), s.resamples, s.seed).blocks():
            for i, w in enumerate(block, start):
                samples[i] = roc_auc_score(y, p, sample_weight=w)
        return samples, interval_from_samples(samples, roc_auc_score(y, p), s.confidence, s.method)

    # warm both up (imports, first calls) on a small problem
    small = IntervalSettings(resamples=20, seed=1)
    for kind in kinds:
        wy, wp, wpreds, wrefs = inputs(2000, kind)
        ours(wpreds, wrefs, small)
        baseline(wy, wp, small)

    verdicts = []
    for kind in kinds:
        y, p, preds, refs = inputs(args.items, kind)
        print(f"ROC AUC, {args.items:,} items x {args.resamples:,} resamples, {kind} scores "
              f"({len(np.unique(p)):,} distinct), 95% percentile interval; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        t_ours, c_ours, ci_ours = timed(lambda: ours(preds, refs, settings), args.repeat)
        print(f"  referee general_interval (roc_auc)     {t_ours:8.2f} s  ({c_ours:.2f} s CPU)", flush=True)
        t_base, c_base, (base_samples, ci_base) = timed(lambda: baseline(y, p, settings), args.repeat)
        print(f"  loop of sklearn roc_auc_score          {t_base:8.2f} s  ({c_base:.2f} s CPU)", flush=True)

        our_samples = general_scores(scorer, preds, refs, {},
                                     Resampler(args.items, args.resamples, args.seed_resample))
        worst = float(np.max(np.abs(our_samples - base_samples)))
        assert ci_ours is not None and ci_base is not None
        same_interval = abs(ci_ours[0] - ci_base[0]) <= TOL and abs(ci_ours[1] - ci_base[1]) <= TOL
        ratio = c_base / c_ours  # both sides run on one thread: CPU time is the steadier figure when
        wall_ratio = t_base / t_ours  # other work shares the machine; wall-clock is printed beside it
        print(f"  interval: referee [{ci_ours[0]:.12f}, {ci_ours[1]:.12f}]  sklearn [{ci_base[0]:.12f}, "
              f"{ci_base[1]:.12f}]")
        print(f"  largest difference of a resampled score: {worst:.2e}; intervals equal to 1e-12: {same_interval}")
        print(f"  ratio sklearn loop / referee: {ratio:.1f}x CPU time ({wall_ratio:.1f}x wall-clock)")
        if worst > TOL or not same_interval:
            verdict = f"FAIL ({kind}): the numbers differ"
        elif ratio >= GOAL:
            verdict = f"PASS ({kind}): {ratio:.1f}x faster with the same numbers (goal {GOAL:g}x)"
        else:
            verdict = f"BELOW GOAL ({kind}): {ratio:.1f}x faster with the same numbers (goal {GOAL:g}x)"
        print(f"verdict: {verdict}", flush=True)
        verdicts.append(verdict)
    if any(v.startswith("FAIL") for v in verdicts):
        raise SystemExit(1)

if __name__ == "__main__":
    main()
