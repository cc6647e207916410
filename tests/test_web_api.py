"""The web service through an HTTP client: uploads, access rules, limits, host actions, pages, tokens."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from conftest import prepare_example
from referee.platform.competitions import load_into_store
from referee.platform.scheduler import Scheduler
from referee.platform.store import Store
from referee.platform.web.app import create_app
from referee.platform.web.auth import authenticate, create_host_token, create_team_token, csrf_token, list_tokens
from referee.platform.web.uploads import receive_upload

SMALL_LIMIT = 20_000  # bytes; the deepfake sample submissions are about 40 kB


@pytest.fixture(scope="session")
def deepfake_dir(tmp_path_factory) -> Path:
    """The deepfake example, generated once, plus a copy of its spec with a small upload limit."""
    root = prepare_example("deepfake", tmp_path_factory.mktemp("web-example"))
    doc = yaml.safe_load((root / "competition.yaml").read_text())
    doc["id"] = "deepfake-small"
    doc["prediction"]["max_bytes"] = SMALL_LIMIT
    (root / "small.yaml").write_text(yaml.safe_dump(doc))
    return root


class Env:
    """A workspace with the deepfake competition loaded, tokens, and a client for the app."""

    def __init__(self, root: Path, ws: Path, **app_kw):
        self.root = root
        self.store = Store(ws)
        self.comp = load_into_store(self.store, root / "competition.yaml")
        self.host = create_host_token(self.store)
        self.alpha = create_team_token(self.store, "deepfake", "alpha")
        self.bravo = create_team_token(self.store, "deepfake", "bravo")
        self.client = TestClient(create_app(self.store, **app_kw))

    def file(self, name: str) -> Path:
        return self.root / "submissions" / name

    def upload(self, token: str | None, name: str, cid: str = "deepfake", **data: str):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with open(self.file(name), "rb") as f:
            return self.client.post(f"/api/competitions/{cid}/submissions", headers=headers,
                                    files={"file": (name, f, "text/csv")}, data=data)

    def get(self, url: str, token: str | None = None, **kw):
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kw.pop("headers", {})}
        return self.client.get(url, headers=headers, **kw)

    def post(self, url: str, token: str | None = None, **kw):
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kw.pop("headers", {})}
        return self.client.post(url, headers=headers, **kw)

    def score(self) -> None:
        Scheduler(self.store, self.comp, poll_interval=0.01).run()


@pytest.fixture
def env(deepfake_dir, tmp_path):
    e = Env(deepfake_dir, tmp_path / "ws", run_scheduler=False)
    yield e
    e.client.close()
    e.store.close()


def test_upload_is_scored_and_ranked(env):
    r = env.upload(env.alpha, "alpha__good.csv")
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["status"] == "pending" and r.json()["team"] == "alpha"
    assert env.upload(env.bravo, "bravo__mediocre.csv").status_code == 201
    assert env.get(f"/api/submissions/{sid}", env.alpha).json()["status"] == "pending"
    env.score()
    d = env.get(f"/api/submissions/{sid}", env.alpha).json()
    assert d["status"] == "scored" and d["filename"] == "alpha__good.csv"
    assert {s["split"] for s in d["scores"]} == {"public"}, "a team never sees private-split scores"
    assert all(s["signature"].startswith(f"name:{s['metric']}|") for s in d["scores"])
    lb = env.get("/api/competitions/deepfake/leaderboard").json()  # public: anyone
    assert [e["team"] for e in lb["entries"]] == ["alpha", "bravo"]
    assert lb["entries"][0]["rank"] == 1 and lb["entries"][0]["submission_id"] == sid
    assert lb["entries"][0]["metrics"]["log_loss"] < lb["entries"][1]["metrics"]["log_loss"]
    host_view = env.get(f"/api/submissions/{sid}", env.host).json()
    assert {s["split"] for s in host_view["scores"]} == {"public", "private"}
    mine = env.get("/api/competitions/deepfake/submissions", env.bravo).json()
    assert [m["team"] for m in mine] == ["bravo"]
    assert len(env.get("/api/competitions/deepfake/submissions", env.host).json()) == 2


def test_teams_never_see_private_boards_or_other_teams(env, deepfake_dir):
    sid = env.upload(env.alpha, "alpha__good.csv").json()["id"]
    env.store.set_submission(sid, log_tail="alpha's secret log line")
    assert env.get(f"/api/submissions/{sid}", env.bravo).status_code == 404
    assert env.get("/api/submissions/999999", env.bravo).status_code == 404  # same answer as a foreign id
    assert env.get(f"/api/submissions/{sid}").status_code == 401
    assert env.get(f"/api/submissions/{sid}", "rft_not-a-real-token").status_code == 401
    assert env.get(f"/api/submissions/{sid}", env.alpha).json()["log_tail"] == "alpha's secret log line"
    r = env.get("/api/competitions/deepfake/leaderboard?split=private", env.alpha)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert env.get("/api/competitions/deepfake/leaderboard?split=private").status_code == 401
    assert env.get("/api/competitions/deepfake/leaderboard?split=private", env.host).status_code == 200
    # a token of another competition cannot submit here
    load_into_store(env.store, deepfake_dir / "small.yaml")
    other = create_team_token(env.store, "deepfake-small", "alpha")
    assert env.upload(other, "alpha__good.csv").status_code == 403
    assert env.get(f"/api/submissions/{sid}", other).status_code == 404
    # a page for another team's submission is a 404 too, and the log stays hidden
    env.client.cookies.set("referee_token", env.bravo)
    page = env.client.get(f"/submissions/{sid}")
    assert page.status_code == 404 and "secret log" not in page.text
    env.client.cookies.set("referee_token", env.alpha)
    assert "secret log line" in env.client.get(f"/submissions/{sid}").text
    # revoking a token locks it out
    tid = next(t["id"] for t in list_tokens(env.store) if t["team"] == "alpha" and t["competition_id"] == "deepfake")
    from referee.platform.web.auth import revoke_token
    revoke_token(env.store, tid)
    assert env.get(f"/api/submissions/{sid}", env.alpha).status_code == 401


def test_unknown_competition_and_bad_requests(env):
    assert env.get("/api/competitions/nope/leaderboard").status_code == 404
    assert env.upload(env.alpha, "alpha__good.csv", cid="nope").status_code == 404
    assert env.upload(None, "alpha__good.csv").status_code == 401
    r = env.post("/api/competitions/deepfake/submissions", env.alpha, content=b"id,label\n",
                 headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    r = env.client.post("/api/competitions/deepfake/submissions", headers={"Authorization": f"Bearer {env.alpha}"},
                        data={"phase": "final"}, files={"other": ("x.csv", b"id,label\n", "text/csv")})
    assert r.status_code == 422 and "field 'file'" in r.json()["message"]
    r = env.upload(env.alpha, "alpha__good.csv", phase="no-such-phase")
    assert r.status_code == 400 and "no-such-phase" in r.json()["message"]
    assert env.get("/api/competitions/deepfake/leaderboard?mode=weird").status_code == 422
    assert env.store.submissions("deepfake") == []


def test_rejections_and_limits_are_clear(env):
    r = env.upload(env.alpha, "charlie__nan.csv")
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "submission_rejected" and body["line"] == 413 and "nan" in body["message"]
    for _ in range(env.comp.limits.concurrent):
        assert env.upload(env.alpha, "alpha__good.csv").status_code == 201
    r = env.upload(env.alpha, "alpha__good.csv")
    assert r.status_code == 429 and "waiting or running" in r.json()["message"]
    assert env.upload(env.bravo, "bravo__mediocre.csv").status_code == 201  # other teams are unaffected
    assert list((env.store.root / "uploads").iterdir()) == []  # temp files are cleaned up


def test_upload_size_limit_is_413_and_leaves_nothing(env, deepfake_dir):
    load_into_store(env.store, deepfake_dir / "small.yaml")
    tok = create_team_token(env.store, "deepfake-small", "alpha")
    blobs_before = sorted(p.name for p in (env.store.root / "blobs").rglob("*") if p.is_file())
    r = env.upload(tok, "alpha__good.csv", cid="deepfake-small")
    assert r.status_code == 413 and str(SMALL_LIMIT) in r.json()["message"]
    assert env.store.submissions("deepfake-small") == []
    assert sorted(p.name for p in (env.store.root / "blobs").rglob("*") if p.is_file()) == blobs_before
    assert list((env.store.root / "uploads").iterdir()) == []


def test_image_tarball_goes_to_the_container_kind(env, tmp_path):
    """The upload keeps its suffix, so kind detection works as in the CLI (a .tar is an image archive)."""
    junk = tmp_path / "junk.tar"
    junk.write_bytes(bytes(range(256)) * 16)
    with open(junk, "rb") as f:
        r = env.client.post("/api/competitions/deepfake/submissions", headers={"Authorization": f"Bearer {env.alpha}"},
                            files={"file": ("my image.tar", f, "application/x-tar")})
    assert r.status_code == 422 and "tar archive" in r.json()["message"] and r.json()["source"] == "my_image.tar"
    capped = TestClient(create_app(env.store, run_scheduler=False, max_upload_bytes=1000))
    with open(junk, "rb") as f:
        r = capped.post("/api/competitions/deepfake/submissions", headers={"Authorization": f"Bearer {env.alpha}"},
                        files={"file": ("image.tar", f, "application/x-tar")})
    assert r.status_code == 413 and r.json()["limit"] == 1000


def test_upload_stops_reading_past_the_limit(tmp_path):
    """The body is streamed: past the limit the parser stops pulling chunks and the partial file is removed."""
    boundary = "xyzBOUNDARY"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode()
    chunks_pulled = 0

    async def body():
        nonlocal chunks_pulled
        yield head
        for _ in range(1000):  # 64 MB if fully read
            chunks_pulled += 1
            yield b"x" * 65536

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with pytest.raises(Exception) as info:
        asyncio.run(receive_upload(headers, body(), tmp_path, lambda name: 200_000))
    assert getattr(info.value, "status", None) == 413
    assert chunks_pulled <= 5
    assert list(tmp_path.iterdir()) == []
    # a declared Content-Length past the limit is refused before any chunk is read
    chunks_pulled = 0
    with pytest.raises(Exception) as info:
        asyncio.run(receive_upload({**headers, "content-length": str(64 << 20)}, body(), tmp_path, lambda n: 1000))
    assert getattr(info.value, "status", None) == 413 and chunks_pulled == 0


def test_host_rerun_cancel_and_export(env):
    sid = env.upload(env.alpha, "alpha__good.csv").json()["id"]
    pending = env.upload(env.bravo, "bravo__mediocre.csv").json()["id"]
    assert env.post(f"/api/submissions/{pending}/cancel", env.alpha).status_code == 403
    r = env.post(f"/api/submissions/{pending}/cancel", env.host)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    env.score()
    def values() -> dict:
        scores = env.get(f"/api/submissions/{sid}", env.host).json()["scores"]
        return {(s["metric"], s["split"]): s["value"] for s in scores}

    before = values()
    assert len(before) == 4
    assert env.post(f"/api/submissions/{sid}/rerun", env.alpha).status_code == 403
    r = env.post(f"/api/submissions/{sid}/rerun", env.host)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert values() == {}  # the old scores are not shown while it waits; the next run replaces them
    assert env.post(f"/api/submissions/{sid}/rerun", env.host).status_code == 409  # still pending
    assert env.get("/api/competitions/deepfake/leaderboard").json()["entries"] == []
    env.score()
    assert values() == pytest.approx(before)
    assert env.post("/api/submissions/424242/rerun", env.host).status_code == 404
    # a host uploads on behalf of a named team
    r = env.upload(env.host, "charlie__baseline.csv", team="charlie")
    assert r.status_code == 201 and r.json()["team"] == "charlie"
    assert env.upload(env.host, "charlie__baseline.csv").status_code == 422
    # exports: host only, in three formats
    assert env.get("/api/competitions/deepfake/export?format=csv", env.alpha).status_code == 403
    csv_text = env.get("/api/competitions/deepfake/export?format=csv&split=private", env.host)
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert csv_text.text.splitlines()[1].startswith("1,alpha,")
    md = env.get("/api/competitions/deepfake/export?format=md", env.host).text
    assert "| 1 | alpha |" in md and "private" in md
    js = env.get("/api/competitions/deepfake/export?format=json&split=public", env.host).json()
    assert js["split"] == "public" and js["entries"][0]["team"] == "alpha"


def test_rerun_is_atomic(env):
    sid = env.upload(env.alpha, "alpha__good.csv").json()["id"]
    env.score()
    n_scores = len(env.store.scores(sid))
    # make the status reset fail after the scores were deleted: nothing may change
    env.store.execute("CREATE TRIGGER refuse_reset BEFORE UPDATE OF status ON submissions "
                      "WHEN NEW.status = 'pending' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.IntegrityError):
        env.client.post(f"/api/submissions/{sid}/rerun", headers={"Authorization": f"Bearer {env.host}"})
    assert len(env.store.scores(sid)) == n_scores
    assert env.store.get_submission(sid).status == "scored"


def test_openapi_and_docs(env):
    spec = env.get("/openapi.json").json()
    for path in ("/api/competitions/{cid}/submissions", "/api/submissions/{sid}", "/api/competitions/{cid}/leaderboard",
                 "/api/submissions/{sid}/rerun", "/api/submissions/{sid}/cancel", "/api/competitions/{cid}/export"):
        assert path in spec["paths"], path
    body = spec["paths"]["/api/competitions/{cid}/submissions"]["post"]["requestBody"]
    assert "multipart/form-data" in body["content"]
    assert "/c/{cid}" not in spec["paths"]  # pages are not API
    assert env.get("/docs").status_code == 200


def test_pages_login_upload_form_and_views(env):
    c = env.client
    env.upload(env.bravo, "bravo__mediocre.csv")
    env.score()
    page = c.get("/c/deepfake")
    assert page.status_code == 200 and "content-security-policy" in page.headers
    assert 'data-team="bravo"' in page.text and "<svg" in page.text and "Private leaderboard" not in page.text
    r = c.get("/c/deepfake?split=private", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    assert c.get("/c/nope").status_code == 404
    missing = c.get("/no/such/page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert env.get("/api/no-such-route").json()["error"] == "not_found"
    r = c.post("/login", data={"token": "rft_wrong", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "unknown" in r.text
    r = c.post("/login", data={"token": env.alpha, "next": "//evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/c/deepfake"  # never the foreign host
    form = c.get("/c/deepfake/submit")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text).group(1)
    assert csrf == csrf_token(env.alpha)
    with open(env.file("alpha__good.csv"), "rb") as f:
        bad = c.post("/c/deepfake/submit", data={"csrf": "0" * 32}, files={"file": ("a.csv", f, "text/csv")},
                     follow_redirects=False)
    assert bad.status_code == 403 and env.store.submissions("deepfake", team="alpha") == []
    with open(env.file("charlie__nan.csv"), "rb") as f:
        rejected = c.post("/c/deepfake/submit", data={"csrf": csrf}, files={"file": ("n.csv", f, "text/csv")})
    assert rejected.status_code == 422 and "line 413" in rejected.text and 'id="upload-error"' in rejected.text
    with open(env.file("alpha__good.csv"), "rb") as f:
        ok = c.post("/c/deepfake/submit", data={"csrf": csrf}, files={"file": ("good.csv", f, "text/csv")},
                    follow_redirects=False)
    assert ok.status_code == 303
    sub_page = c.get(ok.headers["location"])
    assert "PENDING" in sub_page.text.upper() and 'http-equiv="refresh"' in sub_page.text
    env.score()
    sid = int(ok.headers["location"].rsplit("/", 1)[1])
    scored = c.get(f"/submissions/{sid}").text
    assert "status-scored" in scored and "name:log_loss" in scored and 'http-equiv="refresh"' not in scored
    board = c.get("/c/deepfake").text
    assert re.search(r'data-team="alpha" data-rank="1"', board) and f'href="/submissions/{sid}"' in board
    # the host sees the private tab, rerun button and a failure explained
    env.store.set_submission(sid, status="failed", failure_reason="no_output",
                             failure_message="predictions.csv missing")
    c.cookies.set("referee_token", env.host)
    host_page = c.get(f"/submissions/{sid}").text
    assert "without writing the prediction file" in host_page and "Re-run" in host_page
    assert "Private leaderboard" in c.get("/c/deepfake?split=private").text
    assert c.get("/c/deepfake/export?format=csv").text.startswith("rank,team,")


def test_background_scoring_loop(deepfake_dir, tmp_path):
    e = Env(deepfake_dir, tmp_path / "ws", run_scheduler=True, scheduler_interval=0.2, poll_interval=0.02)
    with e.client:  # runs the lifespan: starts and stops the loop
        assert e.get("/api/health").json()["scheduler"] is True
        sid = e.upload(e.alpha, "alpha__good.csv").json()["id"]
        deadline = time.monotonic() + 60
        while e.get(f"/api/submissions/{sid}", e.alpha).json()["status"] != "scored":
            assert time.monotonic() < deadline, "the background loop did not score the upload"
            time.sleep(0.1)
        assert e.get("/api/competitions/deepfake/leaderboard").json()["entries"][0]["team"] == "alpha"
    assert not e.client.app.state.scoring_loop.alive
    e.store.close()


def test_token_commands(deepfake_dir, tmp_path):
    from referee.platform.cli import cli
    ws = str(tmp_path / "ws")
    store = Store(ws)
    load_into_store(store, deepfake_dir / "competition.yaml")
    runner = CliRunner()
    team = runner.invoke(cli, ["-w", ws, "token", "create", "deepfake", "--team", "alpha"])
    assert team.exit_code == 0, team.output
    who = authenticate(store, team.output.strip())
    assert who is not None and who.team == "alpha" and who.competition_id == "deepfake" and not who.is_host
    host1 = runner.invoke(cli, ["-w", ws, "token", "host"]).output.strip()
    host2 = runner.invoke(cli, ["-w", ws, "token", "host", "--revoke-others"]).output.strip()
    assert authenticate(store, host1) is None and authenticate(store, host2).is_host
    listing = runner.invoke(cli, ["-w", ws, "token", "list"]).output
    assert "deepfake/alpha" in listing and team.output.strip() not in listing
    rows = store.query("SELECT token_sha256 FROM web_tokens")
    assert all(len(r["token_sha256"]) == 64 and not r["token_sha256"].startswith("rft_") for r in rows)
    bad = runner.invoke(cli, ["-w", ws, "token", "create", "nope", "--team", "x"])
    assert bad.exit_code != 0 and "nope" in str(bad.exception)
    tid = who.token_id
    assert runner.invoke(cli, ["-w", ws, "token", "revoke", tid]).exit_code == 0
    assert authenticate(store, team.output.strip()) is None
    store.close()
