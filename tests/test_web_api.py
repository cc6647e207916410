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
from conftest import prepare_example
from fastapi.testclient import TestClient

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.participation import host_create_team
from referee.platform.controller.reconcile import Controller
from referee.platform.store import Store
from referee.platform.web.app import create_app
from referee.platform.web.auth import (
    authenticate,
    create_host_token,
    create_team_token,
    csrf_token,
    list_tokens,
)
from referee.platform.web.uploads import (
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    MAX_FIELDS_TOTAL,
    MULTIPART_OVERHEAD,
    receive_upload,
    upload_limit,
)

SMALL_LIMIT = 20_000  # bytes; the deepfake sample submissions are about 40 kB


@pytest.fixture(scope="session")
def deepfake_dir(tmp_path_factory) -> Path:
    """The deepfake example, generated once, plus a copy of its spec with a small upload limit."""
    root = prepare_example("deepfake", tmp_path_factory.mktemp("web-example"))
    doc = yaml.safe_load((root / "competition.yaml").read_text())
    doc["id"] = "deepfake-small"
    doc["prediction"]["max_bytes"] = SMALL_LIMIT
    (root / "small.yaml").write_text(yaml.safe_dump(doc))
    local = yaml.safe_load((root / "competition.yaml").read_text())
    local["id"], local["backend"] = "deepfake-local", {"name": "local"}  # cannot run container images
    (root / "local.yaml").write_text(yaml.safe_dump(local))
    phased = yaml.safe_load((root / "competition.yaml").read_text())
    phased["id"] = "deepfake-phased"
    phased["phases"] = [{"name": "warmup", "start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"},
                        {"name": "final", "start": "2021-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}]
    (root / "phased.yaml").write_text(yaml.safe_dump(phased))
    return root


class Env:
    """A workspace with the deepfake competition loaded, tokens, and a client for the app."""

    def __init__(self, root: Path, ws: Path, **app_kw):
        self.root = root
        self.store = Store(ws)
        self.comp = load_into_store(self.store, root / "competition.yaml")
        self.host = create_host_token(self.store)
        self.alpha = create_team_token(self.store, "deepfake", "alpha", create_team=True)
        self.bravo = create_team_token(self.store, "deepfake", "bravo", create_team=True)
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
        Controller(self.store, self.comp, poll_interval=0.01).run()


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
    env.store.set_log_tail(sid, "alpha's secret log line")
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
    other = create_team_token(env.store, "deepfake-small", "alpha", create_team=True)
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
    assert env.store.submissions("deepfake") == []


def test_request_validation_errors_look_like_the_other_errors(env):
    r = env.get("/api/competitions/deepfake/leaderboard?mode=weird")
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == "invalid_request"
    assert body["message"].startswith("mode: ") and "'best'" in body["message"]
    r = env.get("/api/submissions/not-a-number", env.alpha)
    assert r.status_code == 422 and r.json()["message"].startswith("sid: ")
    page = env.client.get("/submissions/not-a-number")  # a page answers with a page
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html") and "sid:" in page.text


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
    tok = create_team_token(env.store, "deepfake-small", "alpha", create_team=True)
    blobs_before = sorted(p.name for p in (env.store.root / "blobs").rglob("*") if p.is_file())
    r = env.upload(tok, "alpha__good.csv", cid="deepfake-small")
    assert r.status_code == 413 and str(SMALL_LIMIT) in r.json()["message"]
    assert env.store.submissions("deepfake-small") == []
    assert sorted(p.name for p in (env.store.root / "blobs").rglob("*") if p.is_file()) == blobs_before
    assert list((env.store.root / "uploads").iterdir()) == []


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]], *, close: bool = True) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def _raw_upload(env, body: bytes, token: str, boundary: str = "xyzBOUNDARY", **headers: str):
    return env.client.post("/api/competitions/deepfake/submissions", content=body,
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": f"multipart/form-data; boundary={boundary}", **headers})


def test_malformed_multipart_is_400_not_500(env):
    good = env.file("alpha__good.csv").read_bytes()
    huge_header = (b"--xyzBOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n"
                   b"X-Padding: " + b"p" * 20_000 + b"\r\n\r\n" + good + b"\r\n--xyzBOUNDARY--\r\n")
    too_many_headers = (b"--xyzBOUNDARY\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(50))
                        + b"Content-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n" + good
                        + b"\r\n--xyzBOUNDARY--\r\n")
    bulky_headers = (b"--xyzBOUNDARY\r\n" + b"".join(b"X-H%d: " % i + b"v" * 3000 + b"\r\n" for i in range(7))
                     + b"Content-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n" + good
                     + b"\r\n--xyzBOUNDARY--\r\n")
    for body in (huge_header, too_many_headers, bulky_headers, b"this is not multipart at all",
                 _multipart("xyzBOUNDARY", [("file", "a.csv", good)], close=False)):  # truncated: never submitted
        r = _raw_upload(env, body, env.alpha)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error", "message"} and r.json()["error"] == "bad_request"
    r = _raw_upload(env, b"--" + b"b" * 300 + b"--\r\n", env.alpha, boundary="b" * 300)  # too long a boundary
    assert r.status_code == 400 and "boundary" in r.json()["message"].lower()
    assert env.store.submissions("deepfake") == []
    assert list((env.store.root / "uploads").iterdir()) == []


def test_form_fields_are_bounded(env):
    good = env.file("alpha__good.csv").read_bytes()
    many = [(f"f{i}", None, b"x") for i in range(MAX_FIELDS + 1)] + [("file", "a.csv", good)]
    r = _raw_upload(env, _multipart("xyzBOUNDARY", many), env.alpha)
    assert r.status_code == 400 and "too many form fields" in r.json()["message"]
    nameless = [("", None, b"x")] * (MAX_FIELDS + 1) + [("file", "a.csv", good)]  # counted as well
    assert _raw_upload(env, _multipart("xyzBOUNDARY", nameless), env.alpha).status_code == 400
    long_one = [("phase", None, b"x" * (MAX_FIELD_BYTES + 1)), ("file", "a.csv", good)]
    r = _raw_upload(env, _multipart("xyzBOUNDARY", long_one), env.alpha)
    assert r.status_code == 400 and "longer than" in r.json()["message"]
    n = MAX_FIELDS_TOTAL // MAX_FIELD_BYTES + 1
    assert n <= MAX_FIELDS
    bulky = [(f"f{i}", None, b"x" * MAX_FIELD_BYTES) for i in range(n)] + [("file", "a.csv", good)]
    r = _raw_upload(env, _multipart("xyzBOUNDARY", bulky), env.alpha)
    assert r.status_code == 400 and "together" in r.json()["message"]
    ok = [(f"f{i}", None, b"x") for i in range(MAX_FIELDS)] + [("file", "a.csv", good)]
    assert _raw_upload(env, _multipart("xyzBOUNDARY", ok), env.alpha).status_code == 201
    assert list((env.store.root / "uploads").iterdir()) == []


def test_chunked_upload_without_content_length_is_capped(env, deepfake_dir):
    load_into_store(env.store, deepfake_dir / "small.yaml")
    tok = create_team_token(env.store, "deepfake-small", "alpha", create_team=True)
    body = _multipart("xyzBOUNDARY", [("file", "big.csv", b"x" * (SMALL_LIMIT * 3))])

    def chunks():  # a generator body: sent chunked, with no Content-Length
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    r = env.client.post("/api/competitions/deepfake-small/submissions", content=chunks(),
                        headers={"Authorization": f"Bearer {tok}",
                                 "Content-Type": "multipart/form-data; boundary=xyzBOUNDARY"})
    assert r.status_code == 413 and r.json()["limit"] == SMALL_LIMIT
    assert env.store.submissions("deepfake-small") == []
    assert list((env.store.root / "uploads").iterdir()) == []


def test_raw_body_is_capped_past_the_closing_boundary(tmp_path):
    """An endless epilogue (or preamble) after a small file is not read forever, Content-Length or not."""
    pulled = 0

    async def body():
        nonlocal pulled
        yield _multipart("xyzBOUNDARY", [("file", "a.csv", b"id,label\n")])
        for _ in range(100_000):  # 6.4 GB if fully read
            pulled += 1
            yield b"e" * 65536

    headers = {"content-type": "multipart/form-data; boundary=xyzBOUNDARY"}
    with pytest.raises(Exception) as info:
        asyncio.run(receive_upload(headers, body(), tmp_path, lambda name: 100_000))
    assert getattr(info.value, "status", None) == 413
    assert pulled <= (100_000 + MULTIPART_OVERHEAD) // 65536 + 2
    assert list(tmp_path.iterdir()) == []


def test_before_file_check_runs_before_the_file_is_read(tmp_path):
    """A refusal from the fields before the file (the form's CSRF value) stops the upload at the
    file part's headers: none of the file is read or written."""
    from referee.platform.web.access import WebError
    pulled = 0
    seen = []

    async def body():
        nonlocal pulled
        yield _multipart("xyzBOUNDARY", [("csrf", None, b"forged")], close=False) + \
            b'--xyzBOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        for _ in range(1000):
            pulled += 1
            yield b"x" * 65536

    def refuse(filename, fields):
        seen.append((filename, fields))
        raise WebError(403, "forbidden", "bad csrf")

    headers = {"content-type": "multipart/form-data; boundary=xyzBOUNDARY"}
    with pytest.raises(WebError) as info:
        asyncio.run(receive_upload(headers, body(), tmp_path, lambda name: 10 << 30, before_file=refuse))
    assert info.value.status == 403 and pulled == 0 and seen == [("big.csv", {"csrf": "forged"})]
    assert list(tmp_path.iterdir()) == []


def test_image_tarball_needs_a_backend_that_runs_images(env, deepfake_dir, tmp_path):
    comp = load_into_store(env.store, deepfake_dir / "local.yaml")
    tok = create_team_token(env.store, "deepfake-local", "alpha", create_team=True)
    # a local-backend competition allows no more than a prediction file, tarball or not
    assert upload_limit(comp, "image.tar") == upload_limit(comp) == comp.prediction.max_bytes
    assert upload_limit(env.comp, "image.tar") > env.comp.prediction.max_bytes  # docker: the sandbox's limit
    junk = tmp_path / "image.tar"
    junk.write_bytes(bytes(range(256)) * 16)
    for name in ("image.tar", "image.tgz", "IMAGE.TAR.GZ"):
        with open(junk, "rb") as f:
            r = env.client.post("/api/competitions/deepfake-local/submissions",
                                headers={"Authorization": f"Bearer {tok}"},
                                files={"file": (name, f, "application/x-tar")})
        assert r.status_code == 422, r.text
        assert "cannot run container images" in r.json()["message"] and "'local'" in r.json()["message"]
    # a multi-GB declared body is answered from its first bytes, with the reason, not read
    head = _multipart("xyzBOUNDARY", [("file", "image.tar", b"")], close=False)[:-2]
    pulled = 0

    async def body():
        nonlocal pulled
        yield head
        for _ in range(1000):
            pulled += 1
            yield b"x" * 65536

    from referee.platform.web.access import WebError
    from referee.platform.web.uploads import accept_upload

    class FakeRequest:
        headers = {"content-type": "multipart/form-data; boundary=xyzBOUNDARY", "content-length": str(5 << 30)}

        def stream(self):
            return body()

    who = authenticate(env.store, tok)
    with pytest.raises(WebError) as info:
        asyncio.run(accept_upload(FakeRequest(), env.store, comp, who))
    assert info.value.status == 422 and "container images" in str(info.value) and pulled == 0
    # the page says nothing about tarballs for such a competition
    env.client.cookies.set("referee_token", tok)
    assert ".tar" not in env.client.get("/c/deepfake-local/submit").text
    env.client.cookies.set("referee_token", env.alpha)
    assert ".tar" in env.client.get("/c/deepfake/submit").text
    assert env.store.submissions("deepfake-local") == []
    assert list((env.store.root / "uploads").iterdir()) == []


def test_a_team_cannot_submit_to_a_closed_phase(env, deepfake_dir):
    load_into_store(env.store, deepfake_dir / "phased.yaml")
    tok = create_team_token(env.store, "deepfake-phased", "alpha", create_team=True)
    r = env.upload(tok, "alpha__good.csv", cid="deepfake-phased", phase="warmup")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "submission_rejected" and "warmup" in r.json()["message"]
    assert env.store.submissions("deepfake-phased") == []
    r = env.upload(tok, "alpha__good.csv", cid="deepfake-phased", phase="final")
    assert r.status_code == 201 and r.json()["phase"] == "final"
    # the host may still file a late submission for a team in a closed phase
    host_create_team(env.store, "deepfake-phased", "charlie")
    r = env.upload(env.host, "charlie__baseline.csv", cid="deepfake-phased", team="charlie", phase="warmup")
    assert r.status_code == 201 and r.json()["phase"] == "warmup"


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
    # a declared Content-Length past the limit is refused at the file part's headers, before any of the file
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
    # a host uploads on behalf of a named team, which must exist (a typo creates no new team)
    r = env.upload(env.host, "charlie__baseline.csv", team="charlie")
    assert r.status_code == 404 and "referee team create deepfake" in r.json()["message"]
    host_create_team(env.store, "deepfake", "charlie")
    r = env.upload(env.host, "charlie__baseline.csv", team="Charlie")
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
    env.store._execute("CREATE TRIGGER refuse_reset BEFORE UPDATE OF status ON submissions "
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
    env.store._execute("UPDATE submissions SET status='failed', failure_reason='no_output', "
                       "failure_message='predictions.csv missing' WHERE id=?", (sid,))
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
    from referee.platform.cli.main import cli
    ws = str(tmp_path / "ws")
    store = Store(ws)
    load_into_store(store, deepfake_dir / "competition.yaml")
    runner = CliRunner()
    unknown = runner.invoke(cli, ["-w", ws, "token", "create", "deepfake", "--team", "alpha"])
    assert unknown.exit_code != 0 and "no team 'alpha'" in str(unknown.exception)
    assert runner.invoke(cli, ["-w", ws, "team", "create", "deepfake", "alpha"]).exit_code == 0
    team = runner.invoke(cli, ["-w", ws, "token", "create", "deepfake", "--team", "alpha"])
    assert team.exit_code == 0, team.output
    who = authenticate(store, team.output.strip())
    assert who is not None and who.team == "alpha" and who.competition_id == "deepfake" and not who.is_host
    host1 = runner.invoke(cli, ["-w", ws, "token", "host"]).output.strip()
    host2 = runner.invoke(cli, ["-w", ws, "token", "host", "--revoke-others"]).output.strip()
    assert authenticate(store, host1) is None and authenticate(store, host2).is_host
    listing = runner.invoke(cli, ["-w", ws, "token", "list"]).output
    assert "deepfake/alpha" in listing and team.output.strip() not in listing
    rows = store._query("SELECT token_sha256 FROM web_tokens")
    assert all(len(r["token_sha256"]) == 64 and not r["token_sha256"].startswith("rft_") for r in rows)
    bad = runner.invoke(cli, ["-w", ws, "token", "create", "nope", "--team", "x"])
    assert bad.exit_code != 0 and "nope" in str(bad.exception)
    tid = who.token_id
    assert runner.invoke(cli, ["-w", ws, "token", "revoke", tid]).exit_code == 0
    assert authenticate(store, team.output.strip()) is None
    store.close()


def test_cross_site_posts_are_refused(env):
    c = env.client
    evil = {"Origin": "http://evil.example"}
    r = c.post("/login", data={"token": env.alpha, "next": "/"}, headers=evil, follow_redirects=False)
    assert r.status_code == 403 and "referee_token" not in r.headers.get("set-cookie", "")  # no login CSRF
    for headers in ({"Origin": "null"}, {"Referer": "http://evil.example/page"}, {"Origin": "http://testserver.evil"},
                    {"Origin": "https://testserver:8443"}):
        assert c.post("/login", data={"token": env.alpha}, headers=headers,
                      follow_redirects=False).status_code == 403, headers
    for headers in ({"Origin": "http://testserver"}, {"Referer": "http://testserver/login"}, {},
                    {"Origin": "https://referee.example", "X-Forwarded-Host": "referee.example"},
                    {"Origin": "http://TestServer:80"}):
        r = c.post("/login", data={"token": env.alpha}, headers=headers, follow_redirects=False)
        assert r.status_code == 303, headers
    c.cookies.set("referee_token", env.alpha)
    csrf = csrf_token(env.alpha)
    with open(env.file("alpha__good.csv"), "rb") as f:
        r = c.post("/c/deepfake/submit", data={"csrf": csrf}, files={"file": ("a.csv", f, "text/csv")},
                   headers=evil, follow_redirects=False)
    assert r.status_code == 403 and env.store.submissions("deepfake") == []
    assert c.post("/logout", data={"csrf": csrf}, headers=evil).status_code == 403
    sid = env.upload(env.alpha, "alpha__good.csv").json()["id"]
    c.cookies.set("referee_token", env.host)
    host_csrf = csrf_token(env.host)
    assert c.post(f"/submissions/{sid}/cancel", data={"csrf": host_csrf}, headers=evil).status_code == 403
    assert env.store.get_submission(sid).status == "pending"
    r = c.post(f"/submissions/{sid}/cancel", data={"csrf": host_csrf}, headers={"Origin": "http://testserver"},
               follow_redirects=False)
    assert r.status_code == 303 and env.store.get_submission(sid).status == "cancelled"


def test_upload_form_csrf_must_come_before_the_file(env):
    c = env.client
    c.cookies.set("referee_token", env.alpha)
    csrf = csrf_token(env.alpha)
    good = env.file("alpha__good.csv").read_bytes()
    body = _multipart("xyzBOUNDARY", [("file", "a.csv", good), ("csrf", None, csrf.encode())])
    r = c.post("/c/deepfake/submit", content=body, follow_redirects=False,
               headers={"Content-Type": "multipart/form-data; boundary=xyzBOUNDARY"})
    assert r.status_code == 403 and env.store.submissions("deepfake") == []
    body = _multipart("xyzBOUNDARY", [("csrf", None, csrf.encode()), ("file", "a.csv", good)])
    r = c.post("/c/deepfake/submit", content=body, follow_redirects=False,
               headers={"Content-Type": "multipart/form-data; boundary=xyzBOUNDARY"})
    assert r.status_code == 303
    page = c.get("/c/deepfake/submit").text
    assert page.index('name="csrf"') < page.index('name="file"')  # the form sends it first
    assert list((env.store.root / "uploads").iterdir()) == []


def test_secure_cookies(env, deepfake_dir, tmp_path, monkeypatch):
    r = env.client.post("/login", data={"token": env.alpha}, follow_redirects=False)
    assert "secure" not in r.headers["set-cookie"].lower()  # plain http, no flag: the cookie must work
    secure = TestClient(create_app(env.store, run_scheduler=False, secure_cookies=True))
    r = secure.post("/login", data={"token": env.alpha}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert r.status_code == 303 and "; secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    secure.cookies.set("referee_token", env.alpha)
    r = secure.post("/logout", data={"csrf": csrf_token(env.alpha)}, follow_redirects=False)
    assert r.status_code == 303 and "; secure" in r.headers["set-cookie"].lower()
    # referee serve --secure-cookies hands the flag to the app
    import uvicorn

    import referee.platform.web.app as app_module
    from referee.platform.cli.main import cli
    seen = {}
    real = app_module.create_app

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(app_module, "create_app", spy)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    ws = str(env.store.root)
    out = CliRunner().invoke(cli, ["-w", ws, "serve", "--port", "0", "--no-scheduler", "--secure-cookies"])
    assert out.exit_code == 0, out.output
    assert seen["secure_cookies"] is True
    assert CliRunner().invoke(cli, ["-w", ws, "serve", "--port", "0", "--no-scheduler"]).exit_code == 0
    assert seen["secure_cookies"] is False
