"""Generate the sentiment example: held-out reviews, the CheckList suite export and sample submissions.

Usage: ``python generate.py [OUTDIR]`` (default: this file's directory). Writes

* ``OUTDIR/data/heldout.csv`` — 300 labelled synthetic reviews (id,text,label), seeded;
* ``OUTDIR/data/checklist/`` — the suite built from competition.yaml's ``checklist`` section (the same
  build ``referee competition load`` does; it is reused there when nothing changed);
* ``OUTDIR/submissions/<team>__<label>.csv`` — the two models in ``code/`` run on the inputs, plus
  malformed files that intake must reject.

The models are the very ``predict.py`` files the container submissions in ``code/`` run, so a file
submission and its container give identical predictions. Deterministic: identical output every run.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
SEED = 2020
N_HELDOUT = 300

# file -> (team, expect, rejection code); examples/manifest.yaml lists the same files.
SUBMISSIONS = {
    "alpha__lexicon.csv": ("alpha", "scored", None),
    "bravo__better.csv": ("bravo", "scored", None),
    "charlie__missing_row.csv": ("charlie", "rejected", "missing_id"),
    "delta__wrong_header.csv": ("delta", "rejected", "wrong_columns"),
    "echo__not_a_number.csv": ("echo", "rejected", "bad_value"),
    "foxtrot__sum_not_one.csv": ("foxtrot", "rejected", "bad_value"),
}

_THINGS = ["breakfast", "checkin", "luggage", "lounge", "meal", "wifi", "blanket", "gate", "ticket", "upgrade"]
_POS = ["good", "great", "excellent", "friendly", "superb", "comfortable", "helpful", "nice", "brilliant"]
_NEG = ["bad", "terrible", "awful", "rude", "dirty", "late", "boring", "broken", "uncomfortable"]


def heldout_rows(rng: random.Random) -> list[tuple[str, str, str]]:
    """Synthetic reviews: one or two clauses, a quarter of them negated."""
    rows = []
    for k in range(N_HELDOUT):
        label = rng.choice(["negative", "positive"])
        negate = rng.random() < 0.25
        polar = {"positive": _NEG if negate else _POS, "negative": _POS if negate else _NEG}[label]
        thing = rng.choice(_THINGS)
        text = f"The {thing} was {'not ' if negate else ''}{rng.choice(polar)}."
        if rng.random() < 0.5:
            extra = rng.choice(_POS if label == "positive" else _NEG)
            text += f" Really {extra} {rng.choice(_THINGS)} overall."
        rows.append((f"review{k + 1:04d}", text, label))
    return rows


def _load_model(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sentiment_{name}", HERE / "code" / name / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_csv(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")


def generate(outdir: Path) -> None:
    from referee.platform.core.spec import load_competition
    from referee.scoring.checklist.suite import prepared

    outdir = Path(outdir)
    data, subs = outdir / "data", outdir / "submissions"
    data.mkdir(parents=True, exist_ok=True)
    subs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    held = heldout_rows(rng)
    _write_csv(data / "heldout.csv", ["id,text,label"] + [f'{i},"{t}",{lab}' for i, t, lab in held])

    comp = prepared(load_competition(outdir / "competition.yaml", check_files=False))
    assert comp.input_path is not None
    with open(comp.input_path / "cases.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    lexicon, better = _load_model("lexicon"), _load_model("better")
    lexicon.write(subs / "alpha__lexicon.csv", lexicon.predict(rows))
    good = better.predict(rows)
    better.write(subs / "bravo__better.csv", good)

    # Malformed files: intake rejects each, naming the line (or the missing id).
    lines = ["id,negative,positive"] + [f"{i},{1.0 - p:.6f},{p:.6f}" for i, p in good]
    _write_csv(subs / "charlie__missing_row.csv", lines[:101] + lines[102:])  # drops the 101st case
    _write_csv(subs / "delta__wrong_header.csv", ["id,neg,pos"] + lines[1:])
    bad = list(lines)
    bad[42] = bad[42].rsplit(",", 1)[0] + ",high"  # line 43
    _write_csv(subs / "echo__not_a_number.csv", bad)
    bad = list(lines)
    i, _, _ = bad[7].split(",")
    bad[7] = f"{i},0.700000,0.700000"  # line 8: sums to 1.4
    _write_csv(subs / "foxtrot__sum_not_one.csv", bad)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
