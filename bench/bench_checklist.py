"""Time CheckList scoring and competition loading against baselines measured in the same run.

1. Scoring one submission of the sentiment example: referee's ``checklist`` scorer (statistics +
   details through the plugin: prediction file in checklist's format, ``TestSuite.run_from_file``,
   per-case statistics, matrix, failing examples) against checklist alone (``TestSuite.run`` with the
   same predictions served from memory). Target: referee/checklist <= 3.
2. A second metric on the same submission (another scope) reuses the run: target first/second >= 5.
3. Loading an unchanged competition reuses the suite build: target build/reload >= 10.

    python bench/bench_checklist.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeat: int = 7) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    from referee.platform.core.spec import load_competition
    from referee.plugins.manager import get_runtime
    from referee.scoring.checklist import scorer as cs
    from referee.scoring.checklist.library import test_suite_module
    from referee.scoring.checklist.suite import prepared
    from referee.scoring.reference import load_reference, reference_values
    from referee.submissions.intake import validate_predictions

    work = Path(tempfile.mkdtemp(prefix="bench-checklist-"))
    try:
        ex = work / "sentiment"
        shutil.copytree(ROOT / "examples" / "sentiment", ex, ignore=shutil.ignore_patterns("data", "submissions"))
        subprocess.run([sys.executable, str(ex / "generate.py"), str(ex)], check=True)
        shutil.rmtree(ex / "data" / "checklist")

        build_s, _ = timed(lambda: prepared(load_competition(ex / "competition.yaml", check_files=False)), 1)
        reload_s, comp = timed(lambda: prepared(load_competition(ex / "competition.yaml", check_files=False)))
        ref = load_reference(comp)
        refs = reference_values(ref, comp)
        preds = validate_predictions(ex / "submissions" / "alpha__lexicon.csv", comp, ref)
        params = comp.metric_params(comp.metrics[0])
        neg_params = comp.metric_params(comp.metrics[2])

        suite = test_suite_module().TestSuite.from_file(params["suite"])
        probs = np.asarray(preds.values)
        by_text: dict[str, np.ndarray] = {}
        import json
        for line in (comp.input_path / "cases.jsonl").read_text().splitlines():
            row = json.loads(line)
            by_text.setdefault(row["text"], probs[ref.index[row["id"]]])

        def checklist_alone() -> float:
            def predict(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
                confs = np.stack([by_text[t] for t in texts])
                return confs.argmax(axis=1), confs
            suite.run(predict, overwrite=True, verbose=False)
            fails = sum(t.get_stats().get("fails", 0) for t in suite.tests.values())
            return fails / sum(len(t.data) for t in suite.tests.values())

        def referee_first() -> float:
            get_runtime().cache("checklist.runs").clear()
            get_runtime().cache("checklist.inputs").clear()
            stats = cs.statistics(preds, refs, params)
            cs.details(preds, refs, params)
            return float(cs.aggregate(stats.sum(axis=0), params))

        def referee_second() -> float:
            stats = cs.statistics(preds, refs, neg_params)
            return float(cs.aggregate(stats.sum(axis=0), neg_params))

        base_s, base_v = timed(checklist_alone)
        first_s, first_v = timed(referee_first)
        second_s, _ = timed(referee_second)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("score one submission", "checklist TestSuite.run", base_s, "referee checklist scorer", first_s,
         first_s / base_s, "<= 3", first_s / base_s <= 3),
        ("second metric, same submission", "first metric", first_s, "second metric", second_s,
         first_s / second_s, ">= 5 (baseline/measured)", first_s / second_s >= 5),
        ("load unchanged competition", "fresh build", build_s, "reload", reload_s,
         build_s / reload_s, ">= 10 (baseline/measured)", build_s / reload_s >= 10),
    ]
    print(f"{'what':32} {'baseline':26} {'s':>8} {'measured':26} {'s':>8} {'ratio':>8}  target")
    for what, bname, b, mname, m, ratio, target, ok in rows:
        print(f"{what:32} {bname:26} {b:8.4f} {mname:26} {m:8.4f} {ratio:8.2f}  {target} "
              f"{'ok' if ok else 'MISSED'}")
    print(f"failure rate: checklist alone {base_v:.6f}, referee {first_v:.6f} "
          f"({'agree' if abs(base_v - first_v) < 1e-12 else 'DIFFER'})")
    return 0 if all(r[-1] for r in rows) and abs(base_v - first_v) < 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
