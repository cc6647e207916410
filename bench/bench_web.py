"""Load test of the web app: participants browsing and uploading against a real ``referee serve``.

A two-phase competition (``examples/challenge``, its development phase open, no submission limits)
is served by ``referee serve`` (uvicorn on 127.0.0.1, background scoring on). ``--participants``
signed-up participants in teams of two spend ``--duration`` seconds, each with its own keep-alive
connection, on a mix of: the leaderboard page and its JSON, the team's submissions page, one of its
submission pages, the overview page, and uploads through the API, with random think times between
requests (exponential, mean ``--think`` s); they arrive over the first tenth of the run. The
leaderboard starts with one scored entry per team. The participants are asyncio tasks of one
process (a light client: its own CPU use barely delays the server).

Accounts are made before the timed part: argon2 hashing costs most of a second per sign-up on a
loaded machine, so every bench account shares one hash computed once (the same password), and the
cost of a real sign-up through the server is measured and printed on its own.

While the load runs, another process makes, against the same workspace, the calls each route makes
without HTTP, authentication and templates (the "direct call": the competition and
``leaderboard.build``; the seat, the submission list with scores and the quota; the visible
submission's detail; the competition's public facts and its overview page; ``submit()``), so both
see the same machine. Printed per row: requests, p50 and p95 over HTTP and of the direct call, and
the ratio of the p95s (goal: at most 3x). Verdicts, from what was measured: no 5xx; every accepted upload
scored exactly once (each reaches ``scored`` with one score row per metric and split, and no score
row was ever replaced). A FAIL exits 1; a ratio above the goal is reported as BELOW GOAL.

    python bench/bench_web.py                                   # 100 participants, 120 s
    python bench/bench_web.py --participants 20 --duration 20   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import multiprocessing
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


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


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


def serve(workspace: Path) -> tuple[subprocess.Popen, str, int]:
    """``referee serve --port 0`` with background scoring; returns the process, host and port once it answers."""
    cmd = [sys.executable, "-m", "referee.platform.cli", "-w", str(workspace), "serve", "--port", "0",
           "--interval", "0.5", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    out = proc.stdout
    for line in out:
        if "http://" not in line:
            continue
        host, port = line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)
        threading.Thread(target=out.read, daemon=True).start()  # keep the pipe drained
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the socket is bound before uvicorn listens on it
            try:
                c = http.client.HTTPConnection(host, int(port), timeout=5)
                c.request("GET", "/api/health")
                if c.getresponse().status == 200:
                    return proc, host, int(port)
            except OSError:
                time.sleep(0.1)
        break
    raise SystemExit(f"referee serve did not start (exit code {proc.poll()})")


# -- the participants: asyncio tasks with a minimal HTTP/1.1 keep-alive client ------------------------------
class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                return await self._once(method, path, headers, body)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()  # the server closed a kept-alive connection: open a new one once
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        fields: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        else:  # chunked
            parts = []
            while (size := int((await self.reader.readline()).strip() or b"0", 16)):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            data = b"".join(parts)
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, data


class Participant:
    """One participant: a connection, a personal token, its uploads."""

    def __init__(self, host: str, port: int, token: str, files: list[Path], seed: int):
        self.conn = Connection(host, port)
        self.auth = {"Authorization": f"Bearer {token}", "Cookie": f"referee_token={token}"}
        self.files = files
        self.rng = random.Random(seed)
        self.own: list[int] = []

    async def act(self, kind: str) -> tuple[int, bytes]:
        get = {"leaderboard page": f"/c/{CID}", "leaderboard JSON": f"/api/competitions/{CID}/leaderboard",
               "submissions page": f"/c/{CID}/submissions", "overview page": f"/c/{CID}/overview"}
        if kind in get:
            return await self.conn.request("GET", get[kind], self.auth)
        if kind == "submission page":
            return await self.conn.request("GET", f"/submissions/{self.rng.choice(self.own)}", self.auth)
        f = self.rng.choice(self.files)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nbench\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f.name}\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + f.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return await self.conn.request("POST", f"/api/competitions/{CID}/submissions",
                                       {**self.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                                       body)

    async def run(self, start: float, end: float, think: float, record: Callable[[str, int, float], None],
                  accepted: list[int]) -> None:
        kinds, weights = list(ACTIONS), list(ACTIONS.values())
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while True:
            await asyncio.sleep(self.rng.expovariate(1.0 / think))
            if time.monotonic() >= end:
                break
            kind = self.rng.choices(kinds, weights)[0]
            if kind == "submission page" and not self.own:
                kind = "leaderboard page"
            t0 = time.perf_counter()
            try:
                status, body = await self.act(kind)
            except Exception:  # noqa: BLE001 - a dropped connection counts as a server error
                status, body = 599, b""
            record(kind, status, time.perf_counter() - t0)
            if kind == "upload" and status == 201:
                sid = int(json.loads(body)["id"])
                self.own.append(sid)
                accepted.append(sid)
        self.conn.close()


async def load(host: str, port: int, tokens: list[str], files: list[Path], duration: float, think: float,
               record: Callable[[str, int, float], None], accepted: list[int], start: float) -> None:
    end = start + duration
    await asyncio.gather(*(Participant(host, port, tok, files, seed=i).run(
        start + random.Random(i).uniform(0, duration / 10), end, think, record, accepted)
        for i, tok in enumerate(tokens)))


# -- the direct calls: another process, the same workspace ----------------------------------------------------
def direct_worker(workspace: str, username: str, sample_sid: int, team: str, files: list[str], start_wall: float,
                  end_wall: float, out: Any) -> None:
    """Make each route's calls without HTTP, round robin, from ``start_wall`` to ``end_wall`` (wall
    clock); put ``(durations per row, submission ids it made)`` on ``out``."""
    from referee.platform.controller import phases
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
    from referee.platform.web.auth import Principal
    from referee.platform.web.listing import scored_rows
    from referee.platform.web.participate import page_html
    from referee.submissions.submit import submit

    store = Store(workspace)
    user = store.user_by_name(username)
    assert user is not None
    me = Principal(role="user", user_id=user.id, username=user.username)
    made: list[int] = []

    def my_submissions() -> Any:
        comp, place = store.get_competition(CID), seat(store, me, CID)
        return (scored_rows(store, comp, store.submissions_page(CID, team=place.team, limit=50)[0], place),
                phases.quota(store, comp, team))

    def my_submission() -> Any:
        sub, place = visible_submission(store, me, sample_sid)
        return redact_detail(submission_detail(store, sample_sid), place, team_splits(store, place, sub))

    calls: dict[str, Callable[[], Any]] = {
        "leaderboard page": lambda: lbm.build(store, store.get_competition(CID)),
        "leaderboard JSON": lambda: lbm.build(store, store.get_competition(CID)).to_dict(),
        "submissions page": my_submissions,
        "submission page": my_submission,
        "overview page": lambda: (public_competition(store.get_competition(CID), store),
                                  page_html(store, CID, "overview")),
        "upload": lambda: made.append(submit(store, store.get_competition(CID), "direct", random.choice(files))),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    time.sleep(max(0.0, start_wall - time.time()))
    while time.time() < end_wall:
        for kind, call in calls.items():
            t = time.perf_counter()
            call()
            times[kind].append(time.perf_counter() - t)
            time.sleep(0.25)  # about one participant's worth of load
    store.close()
    out.put((times, made))


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
    from referee.platform.controller.competitions import load as load_competition
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store
    from referee.platform.web.auth import create_user_token, hash_password
    from referee.submissions.submit import submit

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    proc: subprocess.Popen | None = None
    try:
        root = prepare(tmp)
        files = sorted((root / "submissions" / "dev").glob("*.csv"))
        store = Store(tmp / "ws")
        comp = load_competition(store, root).competition
        t0 = time.perf_counter()
        shared_hash = hash_password(PASSWORD)  # one argon2 hash for every bench account
        tokens, teams = [], []
        for i in range(args.participants):
            uid = store.add_user(f"user{i:03d}", shared_hash)
            pt.register(store, comp, uid)
            phases.accept_rules(store, comp, uid)
            if i % 2 == 0:
                team = pt.create_team(store, comp, uid, f"team{i // 2:03d}")
                submit(store, comp, team.name, files[(i // 2) % len(files)])  # an entry on the board
            else:
                pt.join_team(store, comp, uid, team.invite_code or "")
            tokens.append(create_user_token(store, uid))
            teams.append(team.name)
        Controller(store, comp, poll_interval=0.01).run()
        pt.host_create_team(store, CID, "direct")
        sample_sid = store.submissions(CID, team=teams[0])[0].id
        print(f"setup: {args.participants} participants in {len(set(teams))} teams, one scored entry each, "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)

        proc, host, port = serve(tmp / "ws")
        signup = []
        for i in range(args.signups):
            c = http.client.HTTPConnection(host, port, timeout=60)
            t = time.perf_counter()
            c.request("POST", "/api/users", body=json.dumps({"username": f"signup{i}", "password": PASSWORD}),
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

        def record(kind: str, status: int, seconds: float) -> None:
            statuses[status] = statuses.get(status, 0) + 1
            if status < 400:
                times[kind].append(seconds)

        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        start_wall = time.time() + 3.0  # the direct process has started and imported by then
        direct = ctx.Process(target=direct_worker, args=(str(tmp / "ws"), "user000", sample_sid, teams[0],
                                                         [str(f) for f in files], start_wall,
                                                         start_wall + args.duration, results))
        direct.start()
        asyncio.run(load(host, port, tokens, files, args.duration, args.think, record, accepted,
                         start=time.monotonic() + (start_wall - time.time())))
        direct_times, direct_made = results.get(timeout=120)
        direct.join(30)
        accepted += direct_made

        # -- scoring catches up; then the verdicts -------------------------------------------------------
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.settle:
            if not store.submissions(CID, status=("pending", "running")):
                break
            time.sleep(0.5)
        settle = time.perf_counter() - t0
        served = sum(statuses.values())
        print(f"\nload: {args.participants} participants for {args.duration:.0f} s: {served} requests "
              f"({served / args.duration:.1f}/s), {len(accepted)} uploads accepted ({len(direct_made)} of them "
              f"direct); statuses {dict(sorted(statuses.items()))}; scoring caught up {settle:.1f} s after the load")
        print(f"\n{'row':18} {'requests':>8} {'p50 ms':>7} {'direct':>7} {'p95 ms':>8} {'direct':>8} "
              f"{'p95 ratio':>9}  verdict")
        for kind in ACTIONS:
            web, base = times[kind], direct_times[kind]
            ratio = p95(web) / p95(base) if web and base else float("nan")
            verdict = "PASS" if ratio <= GOAL else f"BELOW GOAL ({GOAL:g}x)"
            print(f"{kind:18} {len(web):8d} {median(web) * 1e3:7.1f} {median(base) * 1e3:7.1f} "
                  f"{p95(web) * 1e3:8.1f} {p95(base) * 1e3:8.1f} {ratio:9.2f}  {verdict}")
        verdicts = []
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
