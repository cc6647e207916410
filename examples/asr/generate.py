"""Generate the speech-recognition example: reference transcripts and sample hypothesis files.

Usage: ``python generate.py [OUTDIR]`` (default: this file's directory). Writes
``OUTDIR/data/reference.tsv`` (id, text, split) and ``OUTDIR/submissions/<team>__<label>.txt``
(one transcript per line, line i = i-th reference row). There is no audio: the "utterances" are
synthetic English-like sentences from a small lowercase vocabulary, and the hypotheses are the
references with random word substitutions, deletions and insertions. Pure numpy + stdlib, fixed
seed: the output is byte-identical on every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 4242
N_UTTERANCES = 300
PUBLIC_FRACTION = 0.5

DETS = ["the", "a", "this", "that", "every", "my", "your", "our"]
ADJS = ["small", "big", "red", "green", "quiet", "loud", "old", "new", "happy", "bright", "cold", "warm"]
NOUNS = ["cat", "dog", "bird", "river", "house", "train", "garden", "window", "teacher", "child",
         "market", "song", "letter", "city", "boat", "tree"]
VERBS = ["sees", "finds", "likes", "follows", "carries", "watches", "paints", "opens", "hears", "builds"]
PREPS = ["near", "under", "behind", "beside", "over", "into", "from", "across"]
ADVS = ["slowly", "quickly", "often", "never", "always", "quietly"]
VOCAB = sorted(set(DETS + ADJS + NOUNS + VERBS + PREPS + ADVS + ["an", "and", "then"]))

# file -> (team, expect); the manifest (examples/manifest.yaml) lists the same files.
SUBMISSIONS = {
    "alpha__errors05.txt": ("alpha", "scored"),
    "bravo__errors15.txt": ("bravo", "scored"),
    "charlie__errors30.txt": ("charlie", "scored"),
    "delta__case_punct.txt": ("delta", "scored"),
    "echo__empty_lines.txt": ("echo", "scored"),
    "alpha__wrong_line_count.txt": ("alpha", "rejected"),
    "bravo__bad_utf8.txt": ("bravo", "rejected"),
}


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator) -> list[str]:
    out = [_pick(rng, DETS)]
    if rng.random() < 0.5:
        out.append(_pick(rng, ADJS))
    out.append(_pick(rng, NOUNS))
    if out[0] == "a" and out[1][0] in "aeiou":
        out[0] = "an"
    return out


def _clause(rng: np.random.Generator) -> list[str]:
    out = _noun_phrase(rng)
    if rng.random() < 0.3:
        out.append(_pick(rng, ADVS))
    out.append(_pick(rng, VERBS))
    out += _noun_phrase(rng)
    if rng.random() < 0.5:
        out.append(_pick(rng, PREPS))
        out += _noun_phrase(rng)
    return out


def sentence(rng: np.random.Generator) -> str:
    words = _clause(rng)
    if rng.random() < 0.25:
        words += [_pick(rng, ["and", "then"])] + _clause(rng)
    return " ".join(words)


def corrupt(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word is, with probability ``rate``, substituted, deleted or followed by an inserted word."""
    out: list[str] = []
    for word in text.split():
        if rng.random() >= rate:
            out.append(word)
            continue
        op = int(rng.integers(3))
        if op == 0:  # substitution
            out.append(_pick(rng, [v for v in VOCAB if v != word]))
        elif op == 1:  # insertion
            out += [word, _pick(rng, VOCAB)]
        # op == 2: deletion
    return " ".join(out)


def case_punct_noise(text: str, rng: np.random.Generator) -> str:
    """Same words; random capitalisation, commas and a final mark. ``transform: normalize`` undoes it."""
    words = text.split()
    out = []
    for k, w in enumerate(words):
        r = rng.random()
        if k == 0 or r < 0.1:
            w = w.capitalize()
        elif r < 0.15:
            w = w.upper()
        if k < len(words) - 1 and rng.random() < 0.1:
            w += ","
        out.append(w)
    return " ".join(out) + _pick(rng, [".", ".", "?", "!"])


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8", newline="")


def generate(outdir: Path) -> None:
    outdir = Path(outdir)
    data, subs = outdir / "data", outdir / "submissions"
    for d in (data, subs):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    refs = [sentence(rng) for _ in range(N_UTTERANCES)]
    ids = [f"utt_{i:04d}" for i in range(1, N_UTTERANCES + 1)]
    public = np.zeros(N_UTTERANCES, dtype=bool)
    public[rng.permutation(N_UTTERANCES)[: int(round(PUBLIC_FRACTION * N_UTTERANCES))]] = True
    rows = ["id\ttext\tsplit"] + [f"{i}\t{t}\t{'public' if p else 'private'}" for i, t, p in zip(ids, refs, public)]
    _write_lines(data / "reference.tsv", rows)

    # Hypotheses at three word-error rates (the WER comes out at roughly 2/3 of the rate plus
    # 1/3 for insertions: about the rate itself).
    _write_lines(subs / "alpha__errors05.txt", [corrupt(t, 0.05, rng) for t in refs])
    _write_lines(subs / "bravo__errors15.txt", [corrupt(t, 0.15, rng) for t in refs])
    _write_lines(subs / "charlie__errors30.txt", [corrupt(t, 0.30, rng) for t in refs])
    # Right words, noisy case and punctuation: WER 0 after normalisation; CER (default transform) is not 0.
    _write_lines(subs / "delta__case_punct.txt", [case_punct_noise(t, rng) for t in refs])
    # 10% errors, and 20 utterances left empty (empty lines, never the last line): every reference
    # word of those counts as a deletion.
    hyps = [corrupt(t, 0.10, rng) for t in refs]
    for k in sorted(rng.choice(N_UTTERANCES - 1, size=20, replace=False).tolist()):
        hyps[k] = ""
    _write_lines(subs / "echo__empty_lines.txt", hyps)

    # Malformed: three lines short, and invalid UTF-8 on line 42.
    good = [corrupt(t, 0.05, rng) for t in refs]
    _write_lines(subs / "alpha__wrong_line_count.txt", good[:-3])
    raw = "".join(f"{line}\n" for line in good).encode("utf-8").split(b"\n")
    raw[41] = raw[41][:5] + b"\xff\xfe" + raw[41][5:]
    (subs / "bravo__bad_utf8.txt").write_bytes(b"\n".join(raw))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
