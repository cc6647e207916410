"""Lexicon sentiment model: counts positive and negative words. Ignores negation and typos.

Reads ``cases.jsonl`` ({"id", "text"} per line) from the input directory and writes
``predictions.csv`` (id,negative,positive). Standard library only. Directories come from
REFEREE_INPUT / REFEREE_OUTPUT / REFEREE_OUTPUT_FILE, defaulting to the container paths
/data/input and /data/output/predictions.csv.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

POSITIVE = {"good", "great", "excellent", "amazing", "wonderful", "fantastic", "nice", "pleasant", "lovely",
            "like", "love", "enjoy", "appreciate", "admire", "liked", "loved", "enjoyed", "best", "happy",
            "perfect", "friendly"}
NEGATIVE = {"bad", "terrible", "awful", "horrible", "poor", "lousy", "nasty", "unpleasant", "hate", "dislike",
            "despise", "regret", "worst", "disappointing", "sad", "rude", "dirty", "late"}
WORD = re.compile(r"[a-z']+")


def p_positive(text: str) -> float:
    words = WORD.findall(text.lower())
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return 1.0 / (1.0 + math.exp(-1.2 * score))


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
