"""Time referee's built-in scorers against calling the reference libraries directly, in one run.

Each row: a baseline on the data (sklearn / sacrebleu / jiwer called directly, and plain numpy for log
loss), then referee's scorer (statistics + aggregate of their column sums, through the plugin's
ScorerInfo) on the same data. Both sides are run once untimed first, so neither pays for imports or
fills a cache (sacrebleu's tokenisers cache per sentence) that the other then uses. The baselines get
their fastest input (integer labels for sklearn and numpy); referee gets what it reads from a
reference file (the labels as text). Prints seconds, the ratio referee/baseline and whether the two
values agree.

    python bench/bench_scorers.py --scale 0.1
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any, Callable

import numpy as np

from referee.platform.core.predictions import Predictions
from referee.plugins.builtin.scorers import referee_scorers

WORDS = ("the cat dog house runs quickly slowly over under a an big small red blue green Hello World "
         "it's don't New York, (see 42 model data learning system paper results table").split()


def sentences(rng: np.random.Generator, n: int, lo: int = 3, hi: int = 30) -> list[str]:
    lengths = rng.integers(lo, hi, size=n)
    vocab = np.array(WORDS)
    # detokenised text: the final full stop sticks to the last word
    return [" ".join(vocab[rng.integers(0, len(vocab), size=k)]) + "." for k in lengths]


def perturb(rng: np.random.Generator, refs: list[str]) -> list[str]:
    out = []
    for ref, u in zip(refs, rng.random(len(refs))):
        words = ref.split()
        if u < 0.3:
            out.append(ref)
        elif u < 0.95:
            k = int(rng.integers(len(words)))
            words[k] = WORDS[int(rng.integers(len(WORDS)))]
            if u < 0.6:
                del words[int(rng.integers(len(words)))]
            out.append(" ".join(words))
        else:
            out.append("")
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best of ``repeat`` wall-clock and CPU times (garbage collected before each) and the value.

    CPU time (``process_time``) is the steadier figure on a shared, busy machine.
    """
    best_wall = best_cpu = float("inf")
    value = None
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_wall, best_cpu, value


def referee_score(name: str, preds: Predictions, refs: Any, params: dict | None = None) -> float:
    scorer = {s.name: s for s in referee_scorers()}[name]
    params = params or {}
    stats = scorer.statistics(preds, refs, params)
    return float(scorer.aggregate(stats.sum(axis=0), params))


def text(values: list[str]) -> Predictions:
    return Predictions(type="text", columns=["text"], values=values, raw={"text": values})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs per timing")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n_rows = max(10, int(1_000_000 * args.scale))
    n_seg = max(10, int(100_000 * args.scale))
    n_ter = max(10, int(5_000 * args.scale))
    rows: list[tuple] = []

    def run(label: str, n: int, baseline: Callable[[], float], ours: Callable[[], float], tol: float) -> None:
        baseline(), ours()  # warm both: imports, caches, allocator
        t_base, c_base, v_base = timed(baseline, args.repeat)
        t_ours, c_ours, v_ours = timed(ours, args.repeat)
        rows.append((label, n, t_base, t_ours, c_base, c_ours, abs(v_base - v_ours) <= tol, v_base, v_ours))
        print(f"  done {label}", flush=True)

    # log loss, binary, 1M rows
    from sklearn.metrics import log_loss

    p = rng.uniform(0.01, 0.99, size=n_rows)
    y = (rng.random(n_rows) < p).astype(np.int64)
    refs = [str(v) for v in y]  # as referee reads them from a reference file
    preds = Predictions(type="probability", columns=["p"], values=p[:, None], raw={})

    def numpy_log_loss() -> float:
        q = np.clip(p, 1e-15, 1 - 1e-15)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))

    run("log_loss, sklearn", n_rows, lambda: float(log_loss(y, p, labels=[0, 1])),
        lambda: referee_score("log_loss", preds, refs), 1e-9)
    run("log_loss, numpy", n_rows, numpy_log_loss, lambda: referee_score("log_loss", preds, refs), 1e-9)

    # translation, 100k segments
    import sacrebleu

    mt_refs = sentences(rng, n_seg)
    mt_hyps = perturb(rng, mt_refs)
    run("bleu, sacrebleu", n_seg, lambda: sacrebleu.corpus_bleu(mt_hyps, [mt_refs]).score,
        lambda: referee_score("bleu", text(mt_hyps), mt_refs), 1e-9)
    run("chrf, sacrebleu", n_seg, lambda: sacrebleu.corpus_chrf(mt_hyps, [mt_refs]).score,
        lambda: referee_score("chrf", text(mt_hyps), mt_refs), 1e-9)
    run("ter, sacrebleu", n_ter, lambda: sacrebleu.corpus_ter(mt_hyps[:n_ter], [mt_refs[:n_ter]]).score,
        lambda: referee_score("ter", text(mt_hyps[:n_ter]), mt_refs[:n_ter]), 1e-9)

    # ASR, 100k utterances
    import jiwer

    asr_refs = sentences(rng, n_seg, 1, 20)
    asr_hyps = perturb(rng, asr_refs)
    run("wer, jiwer", n_seg, lambda: jiwer.wer(asr_refs, asr_hyps),
        lambda: referee_score("wer", text(asr_hyps), asr_refs), 1e-12)
    run("cer, jiwer", n_seg, lambda: jiwer.cer(asr_refs, asr_hyps),
        lambda: referee_score("cer", text(asr_hyps), asr_refs), 1e-12)

    print()
    print(f"{'metric, baseline':<18} {'n':>9} {'baseline s':>11} {'referee s':>10} {'ratio':>6} "
          f"{'base cpu s':>11} {'ref cpu s':>10} {'ratio':>6}  agree  value (baseline / referee)")
    for label, n, t_base, t_ours, c_base, c_ours, agree, v_base, v_ours in rows:
        print(f"{label:<18} {n:>9} {t_base:>11.3f} {t_ours:>10.3f} {t_ours / t_base:>6.2f} "
              f"{c_base:>11.3f} {c_ours:>10.3f} {c_ours / c_base:>6.2f}  "
              f"{'yes' if agree else 'NO':<5}  {v_base:.6f} / {v_ours:.6f}")
    print("\nratio = referee / baseline (statistics + aggregate vs. the library's own corpus score); "
          "wall = perf_counter, cpu = process_time")
    wrong = [label for label, *_, agree, _, _ in rows if not agree]
    print(f"values: {'all agree with their baselines' if not wrong else 'DISAGREE for ' + ', '.join(wrong)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
