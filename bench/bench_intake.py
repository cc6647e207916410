"""Intake costs: memory to validate a prediction file, and time to check a Dockerfile's build policy.

1. Peak memory / file size while validating 1, 10 and 100 MB probability files (goal: at most 3).
   Each size runs in a fresh interpreter: the reference is loaded first (it is cached per competition
   and not part of a submission's cost), freed memory is handed back (malloc_trim), then the peak
   resident set is reset (/proc/self/clear_refs) and the file validated. The baseline, measured the same way, is reading the same file column-wise
   into Python lists (what intake did before).
2. Build-policy check time per Dockerfile, the median of 21 runs (goal: under 50 ms), against tokenising the same text with
   the standard library's ``shlex`` as a yardstick.

Usage: python bench/bench_intake.py [--sizes 1,10,100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEMORY_GOAL = 3.0
POLICY_GOAL_MS = 50.0

CHILD = r"""
import csv, io, json, sys, time
from pathlib import Path
from typing import Any

def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

workdir, mode = Path(sys.argv[1]), sys.argv[2]
from referee.platform.core.spec import load_competition
from referee.scoring.reference import load_reference
from referee.submissions.intake import validate_predictions
comp = load_competition(workdir / "comp.yaml")
ref = load_reference(comp)
path = workdir / "preds.csv"
import ctypes, gc
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so reused pages do not hide the cost
reset_peak()
base = rss_kib("VmRSS")
t = time.perf_counter()
if mode == "intake":
    preds = validate_predictions(path, comp, ref)
    kept = preds.values
else:  # the baseline: the whole file as text, then column-wise Python lists
    text = path.read_bytes().decode("utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    cols = [[] for _ in header]
    for row in reader:
        for c, v in zip(cols, row):
            c.append(v)
    kept = cols
elapsed = time.perf_counter() - t
peak = rss_kib("VmHWM")
print(json.dumps({"peak_kib": peak - base, "seconds": elapsed}))
"""


def make_files(workdir: Path, megabytes: int) -> int:
    """A probability competition whose prediction file is about ``megabytes`` MB; returns its size."""
    import yaml
    row = len("clip_0000000,0.1234567\n")
    n = max(10, megabytes * 10**6 // row)
    with open(workdir / "ref.csv", "w") as f:
        f.write("id,label,split\n")
        for i in range(n):
            f.write(f"clip_{i:07d},{i % 2},{'public' if i % 3 else 'private'}\n")
    with open(workdir / "preds.csv", "w") as f:
        f.write("id,label\n")
        for i in range(n):
            f.write(f"clip_{i:07d},{(i % 9973) / 9973:.7f}\n")
    spec = {"id": "bench", "title": "bench", "data": {"reference": "ref.csv"}, "split": {"column": "split"},
            "prediction": {"format": "csv", "type": "probability", "columns": ["label"], "max_bytes": "1g"},
            "metrics": [{"scorer": "log_loss"}]}
    (workdir / "comp.yaml").write_text(yaml.safe_dump(spec))
    return (workdir / "preds.csv").stat().st_size


def measure(workdir: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(workdir), mode], capture_output=True, text=True, env=env,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_memory(sizes: list[int]) -> bool:
    print("== memory to validate a prediction file (peak RSS growth / file size)")
    print(f"{'file':>8} {'intake':>9} {'ratio':>6} {'time':>7} | {'baseline':>9} {'ratio':>6} | verdict (goal <= "
          f"{MEMORY_GOAL:g}x)")
    ok = True
    for mb in sizes:
        with tempfile.TemporaryDirectory(prefix="referee-bench-intake-") as tmp:
            workdir = Path(tmp)
            size = make_files(workdir, mb)
            new = measure(workdir, "intake")
            old = measure(workdir, "baseline")
        ratio = new["peak_kib"] * 1024 / size
        old_ratio = old["peak_kib"] * 1024 / size
        verdict = "ok" if ratio <= MEMORY_GOAL else "OVER"
        ok = ok and ratio <= MEMORY_GOAL
        print(f"{size / 1e6:6.1f}MB {new['peak_kib'] / 1024:7.1f}MB {ratio:6.2f} {new['seconds']:6.2f}s | "
              f"{old['peak_kib'] / 1024:7.1f}MB {old_ratio:6.2f} | {verdict}")
    return ok


DOCKERFILES = {
    "example (deepfake/good)": (ROOT / "examples/deepfake/code/good/Dockerfile").read_text(),
    "multi-stage with ARGs": ("ARG BASE=referee/base-python:bookworm\nFROM ${BASE} AS build\n"
                              + "RUN echo step \\\n  && echo more \\\n  # note\n  && true\n" * 100
                              + "FROM build AS test\nFROM referee/base-python:bookworm\nCOPY --from=build /a /b\n"
                                "COPY --from=1 /c /d\nCMD [\"python3\", \"/app/predict.py\"]\n"),
    "large (2,000 instructions)": "FROM referee/base-python:bookworm\n" + "".join(
        f"COPY file{i} /app/file{i}\nENV V{i}=\"value {i}\"\n" for i in range(1000)) + "CMD [\"true\"]\n",
}


def _median_ms(fn: Any, rounds: int = 21) -> float:
    """The median of ``rounds`` timings (a shared machine's noise falls on both sides of it)."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def bench_policy() -> bool:
    import shlex

    from referee.submissions.build_policy import check_build_policy
    print("\n== build-policy check time per Dockerfile")
    allowed = {"referee/base-python:bookworm": "sha256:" + "0" * 64}
    ok = True
    for name, text in DOCKERFILES.items():
        data = text.encode()
        ms = _median_ms(lambda: check_build_policy(data, allowed, protected_dirs=("/data/input", "/data/output")))
        base_ms = _median_ms(lambda: shlex.split(text, comments=True))
        verdict = "ok" if ms < POLICY_GOAL_MS else "OVER"
        ok = ok and ms < POLICY_GOAL_MS
        print(f"{name:28} {len(data):>7} bytes  {ms:7.2f} ms  (shlex.split of the same text: {base_ms:6.2f} ms, "
              f"{ms / max(base_ms, 1e-6):4.1f}x)  {verdict} (goal < {POLICY_GOAL_MS:g} ms)")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="prediction file sizes in MB")
    args = parser.parse_args()
    ok = bench_memory([int(s) for s in args.sizes.split(",")])
    ok = bench_policy() and ok
    print("\nverdict:", "all goals met" if ok else "a goal was missed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
