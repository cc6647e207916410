"""Generate the machine-translation example: references, pseudo-source inputs and sample submissions.

Usage: ``python generate.py [OUTDIR]`` (default: this file's directory). Writes
``OUTDIR/data/reference.jsonl`` ({"id", "text"} per line), ``OUTDIR/data/input/source.jsonl``
({"id", "source"}: the same sentences in an invented word-for-word "source language") and
``OUTDIR/submissions/<team>__<label>.jsonl`` ({"id", "text"} per line). The "translations" are
the references perturbed at different rates: dropped words, synonym replacements from a small
dictionary, wrong words and swapped neighbours. Pure numpy + stdlib, fixed seed: the output is
byte-identical on every run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SEED = 7_2026
N_SEGMENTS = 300

DETS = ["the", "a", "this", "that", "every", "our", "their"]
ADJS = ["big", "small", "new", "old", "important", "difficult", "happy", "quick", "local", "young"]
NOUNS = ["committee", "teacher", "children", "city", "house", "car", "road", "report", "meeting",
         "shop", "answer", "company", "doctor", "family", "village", "plan", "letter", "market"]
VERBS = ["discussed", "bought", "visited", "found", "helped", "started", "finished", "wrote",
         "sold", "repaired", "opened", "closed", "described"]
PREPS = ["near", "behind", "after", "before", "inside", "outside", "with", "without"]
TIMES = ["yesterday", "today", "last week", "this morning", "again", "quickly", "finally", "at last"]
# Replacements a "translation system" may choose instead of the reference word (both directions).
SYNONYMS = {"big": "large", "small": "little", "quick": "fast", "house": "home", "city": "town",
            "car": "automobile", "road": "street", "children": "kids", "shop": "store",
            "answer": "reply", "meeting": "gathering", "discussed": "debated", "bought": "purchased",
            "started": "began", "finished": "completed", "repaired": "fixed", "important": "significant",
            "difficult": "hard", "happy": "glad", "quickly": "rapidly", "finally": "eventually",
            "helped": "assisted", "company": "firm", "described": "explained"}
SYNONYMS.update({v: k for k, v in list(SYNONYMS.items())})
VOCAB = sorted({w for group in (DETS, ADJS, NOUNS, VERBS, PREPS, TIMES) for phrase in group
                for w in phrase.split()} | {"an"})

# file -> (team, expect); the manifest (examples/manifest.yaml) lists the same files.
SUBMISSIONS = {
    "alpha__very_good.jsonl": ("alpha", "scored"),
    "bravo__medium.jsonl": ("bravo", "scored"),
    "charlie__poor.jsonl": ("charlie", "scored"),
    "delta__tied.jsonl": ("delta", "scored"),
    "echo__tied.jsonl": ("echo", "scored"),
    "alpha__duplicate_id.jsonl": ("alpha", "rejected"),
    "bravo__not_json.jsonl": ("bravo", "rejected"),
}


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator) -> list[str]:
    out = [_pick(rng, DETS)]
    if rng.random() < 0.6:
        out.append(_pick(rng, ADJS))
    out.append(_pick(rng, NOUNS))
    if out[0] == "a" and out[1][0] in "aeiou":
        out[0] = "an"
    return out


def sentence_words(rng: np.random.Generator) -> list[str]:
    words = _noun_phrase(rng) + [_pick(rng, VERBS)] + _noun_phrase(rng)
    if rng.random() < 0.6:
        words += [_pick(rng, PREPS)] + _noun_phrase(rng)
    if rng.random() < 0.5:
        words += _pick(rng, TIMES).split()
    return words


def render(words: list[str]) -> str:
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


def perturb(words: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Drop (35%), synonym or wrong word (35%), swap with the next word (30%), each at ``rate``."""
    out: list[str] = []
    for w in words:
        r = rng.random()
        if r < 0.35 * rate:
            continue  # dropped
        if r < 0.70 * rate:
            w = SYNONYMS.get(w) or _pick(rng, VOCAB)  # synonym when there is one, else a wrong word
        out.append(w)
    k = 0
    while k < len(out) - 1:
        if rng.random() < 0.30 * rate:
            out[k], out[k + 1] = out[k + 1], out[k]
            k += 1
        k += 1
    return out or words[:1]


def _source_lexicon() -> dict[str, str]:
    """An invented word-for-word 'source language' (separate seed: independent of the corpus)."""
    rng = np.random.default_rng(SEED + 1)
    onsets, vowels, codas = list("bdfgklmnprstvz") + ["sh", "tr"], list("aeiou") + ["ai", "oa"], ["", "n", "r", "s", "k"]
    lexicon: dict[str, str] = {}
    for w in VOCAB:
        while True:
            n = 1 + int(rng.integers(3))
            token = "".join(_pick(rng, onsets) + _pick(rng, vowels) + _pick(rng, codas) for _ in range(n))
            if token not in lexicon.values():
                lexicon[w] = token
                break
    return lexicon


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8", newline="")


def generate(outdir: Path) -> None:
    outdir = Path(outdir)
    data, inputs, subs = outdir / "data", outdir / "data" / "input", outdir / "submissions"
    for d in (inputs, subs):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    corpus = [sentence_words(rng) for _ in range(N_SEGMENTS)]
    ids = [f"seg_{i:04d}" for i in range(1, N_SEGMENTS + 1)]
    lexicon = _source_lexicon()
    _write_jsonl(data / "reference.jsonl", [{"id": i, "text": render(ws)} for i, ws in zip(ids, corpus)])
    _write_jsonl(inputs / "source.jsonl",
                 [{"id": i, "source": " ".join(lexicon[w] for w in ws)} for i, ws in zip(ids, corpus)])

    def system(rate: float) -> list[dict]:
        return [{"id": i, "text": render(perturb(ws, rate, rng))} for i, ws in zip(ids, corpus)]

    very_good = system(0.05)
    _write_jsonl(subs / "alpha__very_good.jsonl", [very_good[k] for k in rng.permutation(N_SEGMENTS)])  # any order
    _write_jsonl(subs / "bravo__medium.jsonl", system(0.20))
    _write_jsonl(subs / "charlie__poor.jsonl", system(0.50))
    tied = system(0.30)  # two teams, byte-identical files: equal scores, a tie on the leaderboard
    _write_jsonl(subs / "delta__tied.jsonl", tied)
    _write_jsonl(subs / "echo__tied.jsonl", tied)

    # Malformed: line 58 repeats the id of line 12; line 100 is cut off mid-object.
    dup = [dict(r) for r in very_good]
    dup[57]["id"] = dup[11]["id"]
    _write_jsonl(subs / "alpha__duplicate_id.jsonl", dup)
    lines = [json.dumps(r) for r in very_good]
    lines[99] = lines[99][: len(lines[99]) // 2]
    (subs / "bravo__not_json.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8",
                                                newline="")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
