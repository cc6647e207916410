"""What the web layer adds on top of the core calls it wraps, measured in one run.

Rows (best of ``--repeat``, in-process ASGI client, no network):
  leaderboard JSON   GET /api/competitions/ID/leaderboard   vs  leaderboard.build() (baseline)
  leaderboard page   GET /c/ID (HTML table + SVG plot)      vs  leaderboard.build()
  upload             POST multipart (streamed to disk)      vs  submit() on the same file
Prints seconds per call and the ratio web/baseline.

    python bench/bench_web.py --teams 60
"""

from __future__ import annotations

import argparse
import gc
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def prepare(tmp: Path) -> Path:
    """The deepfake example without submission limits (the benchmark submits a lot)."""
    target = tmp / "deepfake"
    shutil.copytree(ROOT / "examples" / "deepfake", target, ignore=shutil.ignore_patterns("data", "submissions"))
    subprocess.run([sys.executable, str(target / "generate.py"), str(target)], check=True)
    doc = yaml.safe_load((target / "competition.yaml").read_text())
    doc["limits"] = {}
    (target / "competition.yaml").write_text(yaml.safe_dump(doc))
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teams", type=int, default=60, help="scored entries on the leaderboard")
    ap.add_argument("--uploads", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.leaderboard import build as lbm
    from referee.platform.store import Store
    from referee.platform.web.app import create_app
    from referee.platform.web.auth import create_team_token
    from referee.submissions.submit import submit

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        root = prepare(tmp)
        files = sorted(p for p in (root / "submissions").glob("*.csv")
                       if p.name.split("__")[1].split(".")[0] in ("good", "mediocre", "baseline", "overconfident",
                                                                   "first", "second"))
        store = Store(tmp / "ws")
        comp = load_into_store(store, root / "competition.yaml")
        t0 = time.perf_counter()
        for i in range(args.teams):
            submit(store, comp, f"team{i:03d}", files[i % len(files)])
        Controller(store, comp, poll_interval=0.01).run()
        print(f"setup: {args.teams} scored entries in {time.perf_counter() - t0:.1f} s")
        client = TestClient(create_app(store, run_scheduler=False))
        token = create_team_token(store, comp.id, "uploader", create_team=True)
        auth = {"Authorization": f"Bearer {token}"}

        def get(url: str) -> None:
            r = client.get(url)
            assert r.status_code == 200, r.text

        base_lb = timed(lambda: lbm.build(store, comp), args.repeat)
        api_lb = timed(lambda: get(f"/api/competitions/{comp.id}/leaderboard"), args.repeat)
        page_lb = timed(lambda: get(f"/c/{comp.id}"), args.repeat)

        upload_file = files[0]
        k = iter(range(10**6))

        def direct() -> None:
            for _ in range(args.uploads):
                submit(store, comp, f"direct{next(k)}", upload_file)

        def web() -> None:
            for _ in range(args.uploads):
                with open(upload_file, "rb") as f:
                    r = client.post(f"/api/competitions/{comp.id}/submissions", headers=auth,
                                    files={"file": (upload_file.name, f, "text/csv")})
                assert r.status_code == 201, r.text

        base_up = timed(direct, args.repeat) / args.uploads
        web_up = timed(web, args.repeat) / args.uploads

        print(f"{'row':22} {'baseline ms':>11} {'web ms':>9} {'ratio':>7}")
        for name, base, web_t in (("leaderboard JSON", base_lb, api_lb), ("leaderboard page", base_lb, page_lb),
                                  (f"upload ({upload_file.stat().st_size // 1024} KiB)", base_up, web_up)):
            print(f"{name:22} {base * 1e3:11.2f} {web_t * 1e3:9.2f} {web_t / base:7.2f}")
        client.close()
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
