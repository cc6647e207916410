"""Generate the deepfake-detection example: features, hidden labels and sample submissions.

Usage: ``python generate.py [OUTDIR]`` (default: this file's directory). Writes
``OUTDIR/data/input/features.npy`` (float32, n x 16), ``OUTDIR/data/input/ids.csv``,
``OUTDIR/data/reference.csv`` (id,label,split) and ``OUTDIR/submissions/<team>__<label>.csv``.

The label (1 = fake) is drawn from a logistic function of the features, so a logistic
regression fitted on labelled data can learn it. Pure numpy + stdlib, fixed seed: the output is
byte-identical on every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 20260101
N_ROWS = 2000
N_FEATURES = 16
PUBLIC_FRACTION = 0.3

# file -> (team, expect); the manifest (examples/manifest.yaml) lists the same files.
SUBMISSIONS = {
    "alpha__good.csv": ("alpha", "scored"),
    "bravo__mediocre.csv": ("bravo", "scored"),
    "charlie__baseline.csv": ("charlie", "scored"),
    "delta__overconfident.csv": ("delta", "scored"),
    "echo__first.csv": ("echo", "scored"),
    "echo__second.csv": ("echo", "scored"),
    "delta__missing_id.csv": ("delta", "rejected"),
    "bravo__out_of_range.csv": ("bravo", "rejected"),
    "charlie__nan.csv": ("charlie", "rejected"),
    "alpha__wrong_header.csv": ("alpha", "rejected"),
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")


def _prob_rows(ids: list[str], probs: np.ndarray, digits: int = 6, order: np.ndarray | None = None) -> list[list[str]]:
    idx = range(len(ids)) if order is None else order
    return [[ids[i], f"{probs[i]:.{digits}f}"] for i in idx]


def generate(outdir: Path) -> None:
    outdir = Path(outdir)
    data, inputs, subs = outdir / "data", outdir / "data" / "input", outdir / "submissions"
    for d in (inputs, subs):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    # Features and the true logistic model (a few features carry no signal).
    X = rng.normal(0.0, 1.0, size=(N_ROWS, N_FEATURES)).astype(np.float32)
    w = rng.normal(0.0, 1.0, size=N_FEATURES)
    w[rng.permutation(N_FEATURES)[:4]] = 0.0
    w *= 2.2 / np.linalg.norm(w)  # logit std ~2.2: Bayes accuracy ~0.8
    b = -0.25
    logit = X.astype(np.float64) @ w + b
    y = (rng.random(N_ROWS) < _sigmoid(logit)).astype(int)  # 1 = fake
    ids = [f"clip_{i:05d}" for i in range(1, N_ROWS + 1)]
    public = np.zeros(N_ROWS, dtype=bool)
    public[rng.permutation(N_ROWS)[: int(round(PUBLIC_FRACTION * N_ROWS))]] = True

    np.save(inputs / "features.npy", X)
    _write_csv(inputs / "ids.csv", ["id"], [[i] for i in ids])
    _write_csv(data / "reference.csv", ["id", "label", "split"],
               [[ids[k], str(y[k]), "public" if public[k] else "private"] for k in range(N_ROWS)])

    header = ["id", "label"]
    # Good: the true probabilities with a little noise, rows in input order.
    good = _sigmoid(logit + rng.normal(0.0, 0.3, N_ROWS))
    _write_csv(subs / "alpha__good.csv", header, _prob_rows(ids, good))
    # Mediocre: misses the strongest feature, shrunk and noisy; rows shuffled (intake aligns by id).
    w_partial = w.copy()
    w_partial[int(np.argmax(np.abs(w)))] = 0.0
    partial = X.astype(np.float64) @ w_partial + b
    mediocre = _sigmoid(0.7 * partial + rng.normal(0.0, 0.4, N_ROWS))
    _write_csv(subs / "bravo__mediocre.csv", header, _prob_rows(ids, mediocre, order=rng.permutation(N_ROWS)))
    # Constant baseline: log loss ln 2 = 0.6931, accuracy = share of real clips (p > 0.5 is never true).
    _write_csv(subs / "charlie__baseline.csv", header, [[i, "0.5"] for i in ids])
    # Overconfident: right direction, far too sharp, 4 decimals -> many exact 0.0000 / 1.0000,
    # some of them wrong. Only clipping (eps) keeps the log loss finite.
    over = _sigmoid(6.0 * (logit + rng.normal(0.0, 1.0, N_ROWS)))
    _write_csv(subs / "delta__overconfident.csv", header, _prob_rows(ids, over, digits=4))
    # One team, two submissions: a noisy first try and a better second one (best-per-team).
    first = _sigmoid(logit + rng.normal(0.0, 1.5, N_ROWS))
    second = _sigmoid(logit + rng.normal(0.0, 0.6, N_ROWS))
    _write_csv(subs / "echo__first.csv", header, _prob_rows(ids, first))
    _write_csv(subs / "echo__second.csv", header, _prob_rows(ids, second))

    # Malformed submissions (intake must reject each, naming the line or the id).
    rows = _prob_rows(ids, good)
    _write_csv(subs / "delta__missing_id.csv", header, rows[:1233] + rows[1234:])  # clip_01234 left out
    bad = [list(r) for r in rows]
    bad[816][1] = "1.25"  # line 818 (header + 0-based row 816)
    _write_csv(subs / "bravo__out_of_range.csv", header, bad)
    bad = [list(r) for r in rows]
    bad[411][1] = "nan"  # line 413
    _write_csv(subs / "charlie__nan.csv", header, bad)
    _write_csv(subs / "alpha__wrong_header.csv", ["id", "prob_fake"], rows)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
