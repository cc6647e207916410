"""A better lexicon model: a larger lexicon, negation scope and tolerance to swapped letters.

Same input/output contract as ../lexicon/predict.py (cases.jsonl in, predictions.csv out), standard
library only. Negation ("not", "n't", "never", "no") flips the polarity of sentiment words in the next
three tokens; an unknown word that equals a lexicon word with two adjacent letters swapped counts as
that word.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

POSITIVE = {"good", "great", "excellent", "amazing", "wonderful", "fantastic", "nice", "pleasant", "lovely",
            "exceptional", "like", "love", "enjoy", "appreciate", "admire", "liked", "loved", "enjoyed", "best",
            "happy", "perfect", "friendly", "superb", "brilliant", "comfortable", "helpful"}
NEGATIVE = {"bad", "terrible", "awful", "horrible", "poor", "lousy", "nasty", "unpleasant", "dreadful",
            "disappointing", "hate", "dislike", "despise", "regret", "abhor", "worst", "sad", "rude", "dirty",
            "late", "boring", "broken", "uncomfortable"}
NEGATORS = {"not", "no", "never", "don't", "didn't", "doesn't", "isn't", "wasn't", "aren't", "weren't", "can't",
            "won't"}
WORD = re.compile(r"[a-z]+'[a-z]+|[a-z]+")
SCOPE = 3


def _swaps(word: str) -> set[str]:
    return {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}


_FIX = {}
for _w in POSITIVE | NEGATIVE:
    for _s in _swaps(_w):
        _FIX.setdefault(_s, _w)


def polarity(word: str) -> int:
    if word not in POSITIVE and word not in NEGATIVE and len(word) >= 4:
        word = _FIX.get(word, word)
    return 1 if word in POSITIVE else -1 if word in NEGATIVE else 0


def p_positive(text: str) -> float:
    score, negated_for = 0.0, 0
    for w in WORD.findall(text.lower()):
        if w in NEGATORS or w.endswith("n't"):
            negated_for = SCOPE
            continue
        pol = polarity(w)
        score += -pol if negated_for else pol
        negated_for = max(0, negated_for - 1)
    return 1.0 / (1.0 + math.exp(-2.0 * score))


def predict(rows: list[dict]) -> list[tuple[str, float]]:
    """(id, P(positive)) per input row."""
    return [(r["id"], p_positive(str(r["text"]))) for r in rows]


def write(path: Path, preds: list[tuple[str, float]]) -> None:
    lines = ["id,negative,positive"] + [f"{i},{1.0 - p:.6f},{p:.6f}" for i, p in preds]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    inp = Path(os.environ.get("REFEREE_INPUT", "/data/input"))
    out = Path(os.environ.get("REFEREE_OUTPUT", "/data/output"))
    name = os.environ.get("REFEREE_OUTPUT_FILE", "predictions.csv")
    with open(inp / "cases.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    write(out / name, predict(rows))
    print(f"wrote {len(rows)} predictions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
