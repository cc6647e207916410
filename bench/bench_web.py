"""Load test of the web app: participants browsing and uploading against a real ``referee serve``.

A two-phase competition (``examples/challenge``, its development phase open, no submission limits)
is served by ``referee serve`` (uvicorn on 127.0.0.1, background scoring on). ``--participants``
signed-up participants in teams of two spend ``--duration`` seconds, each in its own thread with its
own keep-alive connection, on a mix of: the leaderboard page and its JSON, the team's submissions
page, one of its submission pages, the overview page, and uploads through the API, with random
think times between requests (exponential, mean ``--think`` s). The leaderboard starts with one
scored entry per team.

Accounts are made before the timed part: argon2 hashing costs most of a second per sign-up on a
loaded machine, so every bench account shares one hash computed once (the same password), and the
cost of a real sign-up through the server is measured and printed on its own.

While the load runs, a thread of this process makes, against the same workspace, the calls each
route makes without HTTP, authentication and templates (the "direct call": the competition and
``leaderboard.build``; the seat, the submission list with scores and the quota; the visible
submission's detail; the competition's public facts and its overview page; ``submit()``), so both
see the same machine.
Printed per row: requests, p50 and p95 over HTTP, p95 of the direct call, and their ratio (goal: at
most 3x). Verdicts, from what was measured: no 5xx; every accepted upload scored exactly once (every
one reaches ``scored`` with one score row per metric and split, and no score row was ever replaced).
A FAIL exits 1; a ratio above the goal is reported as BELOW GOAL.

    python bench/bench_web.py                                   # 100 participants, 120 s
    python bench/bench_web.py --participants 20 --duration 20   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
GOAL = 3.0
CID = "challenge"
PASSWORD = "bench pass phrase"
# what a participant does next, with weights
ACTIONS = {"leaderboard page": 25, "leaderboard JSON": 15, "submissions page": 15, "submission page": 10,
           "overview page": 10, "upload": 25}


def p95(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def prepare(tmp: Path) -> Path:
    """The challenge with its development phase open and no submission limits."""
    target = tmp / CID
    shutil.copytree(ROOT / "examples" / CID, target, ignore=shutil.ignore_patterns("data", "submissions"))
    subprocess.run([sys.executable, str(target / "generate.py"), str(target)], check=True)
    doc = yaml.safe_load((target / "competition.yaml").read_text())
    now = dt.datetime.now(dt.timezone.utc)
    dev, final = doc["phases"]
    dev["start"], dev["end"] = (now - dt.timedelta(days=1)).isoformat(), (now + dt.timedelta(days=1)).isoformat()
    final["start"], final["end"] = dev["end"], (now + dt.timedelta(days=2)).isoformat()
    doc["limits"], dev["limits"] = {}, {}
    (target / "competition.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def serve(workspace: Path) -> tuple[subprocess.Popen, str, str]:
    """``referee serve --port 0`` with background scoring; returns the process, host and port."""
    cmd = [sys.executable, "-m", "referee.platform.cli", "-w", str(workspace), "serve", "--port", "0",
           "--interval", "0.5", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    out = proc.stdout
    for line in out:
        if "http://" in line:
            hostport = line.split("http://", 1)[1].split("/", 1)[0]
            threading.Thread(target=lambda: out.read(), daemon=True).start()  # keep the pipe drained
            host, port = hostport.rsplit(":", 1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the socket is bound before uvicorn listens on it
                try:
                    c = http.client.HTTPConnection(host, int(port), timeout=5)
                    c.request("GET", "/api/health")
                    if c.getresponse().status == 200:
                        return proc, host, port
                except OSError:
                    time.sleep(0.1)
            break
    raise SystemExit(f"referee serve did not start (exit code {proc.poll()})")


class Participant:
    """One participant: a keep-alive connection, a personal token, a team, its uploads."""

    def __init__(self, host: str, port: str, token: str, team: str, files: list[Path], seed: int):
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.token, self.team, self.files = token, team, files
        self.rng = random.Random(seed)
        self.own: list[int] = []

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        hdrs = {"Authorization": f"Bearer {self.token}", "Cookie": f"referee_token={self.token}", **(headers or {})}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()  # the server closed a kept-alive connection: open a new one once
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def upload(self) -> tuple[int, bytes]:
        f = self.rng.choice(self.files)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nbench\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f.name}\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + f.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", f"/api/competitions/{CID}/submissions", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def act(self, kind: str) -> tuple[int, bytes]:
        if kind == "leaderboard page":
            return self.request("GET", f"/c/{CID}")
        if kind == "leaderboard JSON":
            return self.request("GET", f"/api/competitions/{CID}/leaderboard")
        if kind == "submissions page":
            return self.request("GET", f"/c/{CID}/submissions")
        if kind == "submission page":
            return self.request("GET", f"/submissions/{self.rng.choice(self.own)}")
        if kind == "overview page":
            return self.request("GET", f"/c/{CID}/overview")
        return self.upload()


def run_participant(p: Participant, start: float, end: float, think: float,
                    record: Callable[[str, int, float], None], accepted: list[int], lock: threading.Lock) -> None:
    import json
    kinds, weights = list(ACTIONS), list(ACTIONS.values())
    time.sleep(max(0.0, start - time.monotonic()))
    while True:
        time.sleep(p.rng.expovariate(1.0 / think))
        if time.monotonic() >= end:
            return
        kind = p.rng.choices(kinds, weights)[0]
        if kind == "submission page" and not p.own:
            kind = "leaderboard page"
        t0 = time.perf_counter()
        try:
            status, body = p.act(kind)
        except Exception:  # noqa: BLE001 - a dropped connection counts as a server error
            status, body = 599, b""
        record(kind, status, time.perf_counter() - t0)
        if kind == "upload" and status == 201:
            sid = int(json.loads(body)["id"])
            p.own.append(sid)
            with lock:
                accepted.append(sid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=100)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    ap.add_argument("--think", type=float, default=5.0, help="mean seconds between a participant's requests")
    ap.add_argument("--signups", type=int, default=3, help="real sign-ups to time (argon2) before the load")
    ap.add_argument("--settle", type=float, default=300.0, help="seconds to wait for scoring after the load")
    args = ap.parse_args()

    from referee.platform.controller import participation as pt
    from referee.platform.controller import phases
    from referee.platform.controller.competitions import load
    from referee.platform.controller.reconcile import Controller
    from referee.platform.leaderboard import build as lbm
    from referee.platform.reports.views import submission_detail
    from referee.platform.store import Store
    from referee.platform.web.access import (
        public_competition,
        redact_detail,
        seat,
        team_splits,
        visible_submission,
    )
    from referee.platform.web.auth import Principal, create_user_token, hash_password
    from referee.platform.web.listing import scored_rows
    from referee.platform.web.participate import page_html
    from referee.submissions.submit import submit

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    proc: subprocess.Popen | None = None
    try:
        root = prepare(tmp)
        files = sorted((root / "submissions" / "dev").glob("*.csv"))
        store = Store(tmp / "ws")
        comp = load(store, root).competition
        t0 = time.perf_counter()
        shared_hash = hash_password(PASSWORD)  # one argon2 hash for every bench account
        people: list[tuple[str, str]] = []  # (token, team)
        for i in range(args.participants):
            uid = store.add_user(f"user{i:03d}", shared_hash)
            pt.register(store, comp, uid)
            phases.accept_rules(store, comp, uid)
            if i % 2 == 0:
                team = pt.create_team(store, comp, uid, f"team{i // 2:03d}")
                submit(store, comp, team.name, files[(i // 2) % len(files)])  # an entry on the board
            else:
                pt.join_team(store, comp, uid, team.invite_code or "")
            people.append((create_user_token(store, uid), team.name))
        Controller(store, comp, poll_interval=0.01).run()
        direct_team = pt.host_create_team(store, CID, "direct").name
        print(f"setup: {args.participants} participants in {len(people) // 2 + len(people) % 2} teams, one scored "
              f"entry each, in {time.perf_counter() - t0:.1f} s", flush=True)

        proc, host, port = serve(tmp / "ws")
        signup = []
        for i in range(args.signups):
            c = http.client.HTTPConnection(host, int(port), timeout=60)
            t = time.perf_counter()
            c.request("POST", "/api/users", body=f'{{"username": "signup{i}", "password": "{PASSWORD}"}}',
                      headers={"Content-Type": "application/json"})
            assert c.getresponse().status == 201
            signup.append(time.perf_counter() - t)
            c.close()
        if signup:
            print(f"a real sign-up through the server (argon2id): {statistics.mean(signup):.2f} s each "
                  f"(x{args.participants} would be {statistics.mean(signup) * args.participants:.0f} s; the bench "
                  "accounts were made before the timed part)", flush=True)

        # -- the timed part ----------------------------------------------------------------------------
        times: dict[str, list[float]] = {k: [] for k in ACTIONS}
        statuses: dict[int, int] = {}
        accepted: list[int] = []
        lock = threading.Lock()

        def record(kind: str, status: int, seconds: float) -> None:
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status < 400:
                    times[kind].append(seconds)

        start = time.monotonic() + 1.0
        end = start + args.duration
        threads = []
        for i, (token, team) in enumerate(people):
            p = Participant(host, port, token, team, files, seed=i)
            # arrivals spread over the first tenth of the run
            t = threading.Thread(target=run_participant, daemon=True,
                                 args=(p, start + random.Random(i).uniform(0, args.duration / 10), end, args.think,
                                       record, accepted, lock))
            threads.append(t)
            t.start()

        direct: dict[str, list[float]] = {k: [] for k in ACTIONS}
        first = store.user_by_name("user000")
        assert first is not None
        me_principal = Principal(role="user", user_id=first.id, username=first.username)
        sample_sid = store.submissions(CID, team=people[0][1])[0].id

        def keep(sid: int) -> None:
            with lock:
                accepted.append(sid)

        # what each route computes, without HTTP, authentication and templates
        def my_submissions() -> Any:
            comp, place = store.get_competition(CID), seat(store, me_principal, CID)
            return scored_rows(store, comp, store.submissions_page(CID, team=place.team, limit=50)[0], place), \
                phases.quota(store, comp, people[0][1])

        def my_submission() -> Any:
            sub, place = visible_submission(store, me_principal, sample_sid)
            return redact_detail(submission_detail(store, sample_sid), place, team_splits(store, place, sub))

        direct_calls: dict[str, Callable[[], Any]] = {
            "leaderboard page": lambda: lbm.build(store, store.get_competition(CID)),
            "leaderboard JSON": lambda: lbm.build(store, store.get_competition(CID)).to_dict(),
            "submissions page": my_submissions,
            "submission page": my_submission,
            "overview page": lambda: (public_competition(store.get_competition(CID), store),
                                      page_html(store, CID, "overview")),
            "upload": lambda: keep(submit(store, store.get_competition(CID), direct_team, random.choice(files))),
        }

        time.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < end:
            for kind, call in direct_calls.items():
                t = time.perf_counter()
                call()
                direct[kind].append(time.perf_counter() - t)
                time.sleep(0.25)  # about one participant's worth of load
        for t in threads:
            t.join(60)

        # -- scoring catches up; then the verdicts -------------------------------------------------------
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.settle:
            if not store.submissions(CID, status=("pending", "running")):
                break
            time.sleep(0.5)
        settle = time.perf_counter() - t0
        served = sum(statuses.values())
        print(f"\nload: {args.participants} participants for {args.duration:.0f} s: {served} requests "
              f"({served / args.duration:.1f}/s), {len(accepted)} uploads accepted; statuses "
              f"{dict(sorted(statuses.items()))}; scoring caught up {settle:.1f} s after the load")
        print(f"\n{'row':18} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'direct p95 ms':>14} {'ratio':>6}  verdict")
        verdicts = []
        for kind in ACTIONS:
            web, base = times[kind], direct[kind]
            ratio = p95(web) / p95(base) if web and base else float("nan")
            verdict = "PASS" if ratio <= GOAL else f"BELOW GOAL ({GOAL:g}x)"
            print(f"{kind:18} {len(web):8d} {statistics.median(web) * 1e3 if web else float('nan'):8.1f} "
                  f"{p95(web) * 1e3:8.1f} {p95(base) * 1e3:14.1f} {ratio:6.2f}  {verdict}")
        errors = sum(n for s, n in statuses.items() if s >= 500)
        verdicts.append(("no 5xx", errors == 0, f"{errors} of {served} responses were 5xx (or dropped)"))
        subs = {s.id: s for s in store.submissions(CID)}
        not_scored = [sid for sid in accepted if subs[sid].status.value != "scored"]
        rows_wrong = [sid for sid in accepted if len(store.scores(sid)) != 1]  # dev: log_loss on the public split
        kept, written = store.score_rows_written()
        verdicts.append(("every accepted upload scored exactly once",
                         not not_scored and not rows_wrong and kept == written,
                         f"{len(accepted)} accepted, {len(accepted) - len(not_scored)} scored, "
                         f"{len(rows_wrong)} with the wrong number of score rows; score rows kept {kept}, "
                         f"ever written {written}"))
        print()
        for name, ok, detail in verdicts:
            print(f"verdict: {'PASS' if ok else 'FAIL'} {name} ({detail})")
        store.close()
        return 0 if all(ok for _, ok, _ in verdicts) else 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
