"""Generate the two-phase challenge example: a development set and a final test set, with submissions.

Usage: ``python generate.py [OUTDIR]`` (default: this file's directory). Writes, for each phase
``dev`` and ``final``: ``OUTDIR/data/<phase>/input/features.csv`` (id and 8 features),
``OUTDIR/data/<phase>/reference.csv`` (id,label,split) and ``OUTDIR/submissions/<phase>/<team>.csv``.

The label is a noisy logistic function of the features. The development set (400 items) is all
public; the final test set (1,000 other items) is 30% public, 70% private. Pure numpy + stdlib,
fixed seed: the output is byte-identical on every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 20261201
N_FEATURES = 8
PHASES = {"dev": (400, 1.0), "final": (1000, 0.3)}  # items, public fraction
# team -> noise of its logit (smaller is better); "constant" predicts 0.5 everywhere
TEAMS = {"good": 0.3, "fair": 1.0, "poor": 2.5, "constant": None}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n", encoding="utf-8",
                    newline="")


def generate(outdir: Path) -> None:
    outdir = Path(outdir)
    rng = np.random.default_rng(SEED)
    w = rng.normal(0.0, 1.0, size=N_FEATURES)
    w *= 2.5 / np.linalg.norm(w)
    start = 1
    for phase, (n, public_fraction) in PHASES.items():
        X = rng.normal(0.0, 1.0, size=(n, N_FEATURES))
        logit = X @ w
        y = (rng.random(n) < _sigmoid(logit)).astype(int)
        ids = [f"item_{i:05d}" for i in range(start, start + n)]
        start += n
        public = np.zeros(n, dtype=bool)
        public[rng.permutation(n)[: int(round(public_fraction * n))]] = True
        data = outdir / "data" / phase
        _write_csv(data / "input" / "features.csv", ["id"] + [f"f{j}" for j in range(N_FEATURES)],
                   [[ids[k]] + [f"{v:.5f}" for v in X[k]] for k in range(n)])
        _write_csv(data / "reference.csv", ["id", "label", "split"],
                   [[ids[k], str(y[k]), "public" if public[k] else "private"] for k in range(n)])
        for team, noise in TEAMS.items():
            p = np.full(n, 0.5) if noise is None else _sigmoid(logit + rng.normal(0.0, noise, n))
            _write_csv(outdir / "submissions" / phase / f"{team}.csv", ["id", "label"],
                       [[ids[k], f"{p[k]:.6f}"] for k in range(n)])


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
