"""Accounts, teams, registrations, organisers and the host's tools, through the HTTP API and the pages.

Every 4xx of the new routes is asserted here: what the server answers to the anonymous, to the
wrong kind of token, to a participant who may not, to a name that is taken or a team that is full.
"""

from __future__ import annotations

import re
import sqlite3

import pytest
import yaml
from conftest import prepare_example
from fastapi.testclient import TestClient

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.participation import host_create_team
from referee.platform.controller.reconcile import Controller
from referee.platform.store import Store
from referee.platform.web.app import create_app
from referee.platform.web.auth import create_host_token, create_team_token, create_user, csrf_token

pytestmark = [pytest.mark.accounts, pytest.mark.lifecycle]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    root = prepare_example("deepfake", tmp_path_factory.mktemp("accounts"))
    for cid, registration, size in (("open", "open", 2), ("approval", "approval", None), ("closed", "closed", None)):
        doc = yaml.safe_load((root / "competition.yaml").read_text())
        doc["id"] = cid
        doc["participation"] = {"registration": registration, **({"max_team_size": size} if size else {})}
        doc["limits"] = {"per_team_per_day": 3, "concurrent": 5}
        (root / f"{cid}.yaml").write_text(yaml.safe_dump(doc))
    return root


class Site:
    def __init__(self, root, ws, **kw):
        self.root = root
        self.store = Store(ws)
        for cid in ("open", "approval", "closed"):
            load_into_store(self.store, root / f"{cid}.yaml")
        self.host = create_host_token(self.store)
        self.client = TestClient(create_app(self.store, run_scheduler=False, **kw))

    def call(self, method: str, url: str, token: str | None = None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, url, headers=headers, **kw)

    def user(self, name: str) -> str:
        """Sign ``name`` up and return a personal token."""
        assert self.call("POST", "/api/users", json={"username": name, "password": PASSWORD}).status_code == 201
        r = self.call("POST", "/api/tokens", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def upload(self, token: str, cid: str, name: str = "alpha__good.csv", **fields: str):
        with open(self.root / "submissions" / name, "rb") as f:
            return self.call("POST", f"/api/competitions/{cid}/submissions", token,
                             files={"file": (name, f, "text/csv")}, data=fields)

    def score(self, cid: str) -> None:
        Controller(self.store, self.store.get_competition(cid), poll_interval=0.01).run()


@pytest.fixture
def site(example_dir, tmp_path):
    s = Site(example_dir, tmp_path / "ws")
    yield s
    s.client.close()
    s.store.close()


def test_sign_up_and_personal_tokens(site):
    r = site.call("POST", "/api/users", json={"username": "Ada", "password": PASSWORD, "email": "ada@example.org"})
    assert r.status_code == 201 and r.json()["username"] == "ada"  # user names are lowercase
    stored = site.store.user_by_name("ada")
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
    assert site.call("POST", "/api/users", json={"username": "ada", "password": PASSWORD}).status_code == 409
    assert site.call("POST", "/api/users", json={"username": "x", "password": PASSWORD}).status_code == 400
    short = site.call("POST", "/api/users", json={"username": "bob", "password": "short"})
    assert short.status_code == 400 and "at least 8" in short.json()["message"]
    assert site.call("POST", "/api/users", json={"username": "bob"}).status_code == 422
    assert site.call("POST", "/api/tokens", json={"username": "ada", "password": "wrong password"}).status_code == 401
    assert site.call("POST", "/api/tokens", json={"username": "nobody", "password": PASSWORD}).status_code == 401
    made = site.call("POST", "/api/tokens", json={"username": "ada", "password": PASSWORD, "label": "laptop"}).json()
    token = made["token"]
    assert token.startswith("rft_") and site.call("GET", "/api/me", token).json()["username"] == "ada"
    listed = site.call("GET", "/api/tokens", token).json()
    assert [t["label"] for t in listed] == ["laptop"] and token not in str(listed)
    assert site.call("GET", "/api/tokens").status_code == 401
    assert site.call("GET", "/api/tokens", site.host).status_code == 403  # a host token is no account
    assert site.call("DELETE", "/api/tokens/ffffffffffff", token).status_code == 404
    assert site.call("DELETE", f"/api/tokens/{made['id']}", token).status_code == 200
    assert site.call("GET", "/api/me", token).status_code == 401


def test_password_guessing_is_throttled_with_retry_after(site):
    site.user("carol")
    for _ in range(5):
        assert site.call("POST", "/api/tokens", json={"username": "carol", "password": "nope nope"}).status_code == 401
    r = site.call("POST", "/api/tokens", json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    page = site.client.post("/login", data={"username": "carol", "password": PASSWORD})
    assert page.status_code == 429 and "Retry-After" in page.headers


def test_signup_can_be_switched_off(example_dir, tmp_path):
    s = Site(example_dir, tmp_path / "ws", allow_signup=False)
    assert s.call("POST", "/api/users", json={"username": "dan", "password": PASSWORD}).status_code == 403
    assert s.client.get("/signup").status_code == 403
    s.store.close()


def test_registration_modes_teams_invites_and_limits(site):
    ada, bob, cid_ = site.user("ada"), site.user("bob"), site.user("cid")
    # closed: the host creates the teams
    r = site.call("POST", "/api/competitions/closed/registration", ada)
    assert r.status_code == 403 and "closed" in r.json()["message"]
    assert site.call("POST", "/api/competitions/nope/registration", ada).status_code == 404
    assert site.call("POST", "/api/competitions/open/registration").status_code == 401
    assert site.call("POST", "/api/competitions/open/registration", site.host).status_code == 403
    # open: approved at once; a team needs a registration first
    r = site.call("POST", "/api/competitions/open/teams", ada, json={"name": "Lovelace"})
    assert r.status_code == 403 and "register" in r.json()["message"]
    assert site.call("POST", "/api/competitions/open/registration", ada).json()["status"] == "approved"
    team = site.call("POST", "/api/competitions/open/teams", ada, json={"name": "Lovelace"})
    assert team.status_code == 201 and team.json()["members"][0] == {**team.json()["members"][0], "role": "captain"}
    code = team.json()["invite_code"]
    assert site.call("POST", "/api/competitions/open/teams", ada, json={"name": "Other"}).status_code == 409
    for who in (bob, cid_):
        assert site.call("POST", "/api/competitions/open/registration", who).status_code == 201
    assert site.call("POST", "/api/competitions/open/teams", bob, json={"name": "lovelace"}).status_code == 409
    assert site.call("POST", "/api/competitions/open/teams", bob, json={"name": "../evil"}).status_code == 400
    assert site.call("POST", "/api/competitions/open/team/join", bob, json={"code": "wrong"}).status_code == 404
    assert site.call("GET", "/api/competitions/open/team", bob).status_code == 404
    joined = site.call("POST", "/api/competitions/open/team/join", bob, json={"code": code})
    assert joined.status_code == 200 and [m["username"] for m in joined.json()["members"]] == ["ada", "bob"]
    assert site.call("POST", "/api/competitions/open/team/join", bob, json={"code": code}).status_code == 409
    full = site.call("POST", "/api/competitions/open/team/join", cid_, json={"code": code})
    assert full.status_code == 409 and "full" in full.json()["message"]  # max_team_size: 2
    # a member submits for the team; the other member sees it, a stranger does not
    sid = site.upload(bob, "open", description="logistic regression").json()["id"]
    sub = site.call("GET", f"/api/submissions/{sid}", ada).json()
    assert sub["team"] == "Lovelace" and sub["description"] == "logistic regression"
    assert site.call("GET", f"/api/submissions/{sid}", cid_).status_code == 404
    assert site.upload(cid_, "open").status_code == 403  # in no team
    assert site.upload(ada, "approval").status_code == 403  # not in that competition
    assert site.call("GET", "/api/competitions/open/leaderboard?split=private", ada).status_code == 403
    # a new invitation code retires the old one; leaving keeps the team and its submissions
    new = site.call("POST", "/api/competitions/open/team/invite", ada).json()["invite_code"]
    assert new != code and site.store.team_by_invite("open", code) is None
    assert site.call("POST", "/api/competitions/open/team/leave", bob).json() == {"left": "Lovelace"}
    assert site.call("POST", "/api/competitions/open/team/leave", bob).status_code == 404
    assert site.call("POST", "/api/competitions/open/team/invite", bob).status_code == 404
    names = site.call("GET", "/api/competitions/open/teams").json()
    assert [(t["name"], t["size"]) for t in names] == [("Lovelace", 1)] and "members" not in names[0]


def test_approval_and_organiser_roles(site):
    ada, olga, vera = site.user("ada"), site.user("olga"), site.user("vera")
    assert site.call("POST", "/api/competitions/approval/registration", ada).json()["status"] == "pending"
    r = site.call("POST", "/api/competitions/approval/teams", ada, json={"name": "A"})
    assert r.status_code == 403 and "approval" in r.json()["message"]
    # organisers: the host token makes owners; owners manage the rest
    assert site.call("PUT", "/api/competitions/approval/organisers/olga", ada, json={"role": "owner"}).status_code == 403
    assert site.call("PUT", "/api/competitions/approval/organisers/olga", json={"role": "owner"}).status_code == 401
    assert site.call("PUT", "/api/competitions/approval/organisers/nobody", site.host,
                     json={"role": "admin"}).status_code == 404
    assert site.call("PUT", "/api/competitions/approval/organisers/olga", site.host,
                     json={"role": "boss"}).status_code == 422
    assert site.call("PUT", "/api/competitions/approval/organisers/olga", site.host, json={"role": "owner"}).json() == \
        {"username": "olga", "role": "owner"}
    assert site.call("PUT", "/api/competitions/approval/organisers/vera", olga, json={"role": "viewer"}).status_code == 200
    assert site.call("DELETE", "/api/competitions/approval/organisers/olga", olga).status_code == 409  # last owner
    # a viewer sees registrations but cannot decide them; an owner (or admin) can
    pending = site.call("GET", "/api/competitions/approval/registrations?status=pending", vera).json()
    assert [r["username"] for r in pending] == ["ada"]
    assert site.call("GET", "/api/competitions/approval/registrations", ada).status_code == 403
    assert site.call("POST", "/api/competitions/approval/registrations/ada", vera,
                     json={"approve": True}).status_code == 403
    assert site.call("POST", "/api/competitions/approval/registrations/nobody", olga,
                     json={"approve": True}).status_code == 404
    assert site.call("POST", "/api/competitions/approval/registrations/ada", olga,
                     json={"approve": True}).json()["status"] == "approved"
    assert site.call("POST", "/api/competitions/approval/teams", ada, json={"name": "A"}).status_code == 201
    # organisers see the private leaderboard and every submission; a viewer acts on none
    sid = site.upload(ada, "approval").json()["id"]
    site.score("approval")
    assert site.call("GET", "/api/competitions/approval/leaderboard?split=private", vera).status_code == 200
    assert {s["split"] for s in site.call("GET", f"/api/submissions/{sid}", vera).json()["scores"]} == \
        {"public", "private"}
    assert site.call("POST", f"/api/submissions/{sid}/rerun", vera).status_code == 403
    assert site.call("POST", f"/api/submissions/{sid}/rerun", olga).status_code == 200
    # an organiser of one competition is nobody in another
    assert site.call("GET", "/api/competitions/open/leaderboard?split=private", olga).status_code == 403
    assert site.call("GET", "/api/competitions/approval/organisers", vera).json()[0]["username"] == "olga"


def test_host_tools_hide_baseline_disqualify_rerun_download(site):
    host = site.host
    for name in ("alpha", "bravo"):
        host_create_team(site.store, "closed", name)
    alpha, bravo = (create_team_token(site.store, "closed", t) for t in ("alpha", "bravo"))
    a = site.upload(alpha, "closed", "alpha__good.csv").json()["id"]
    b = site.upload(bravo, "closed", "bravo__mediocre.csv").json()["id"]
    base = site.upload(host, "closed", "charlie__baseline.csv", baseline="logistic baseline")
    assert base.status_code == 201 and base.json()["team"] == "logistic baseline"
    assert site.upload(host, "closed", "charlie__baseline.csv", team="nobody").status_code == 404
    site.score("closed")

    def board(token=None):
        return site.call("GET", "/api/competitions/closed/leaderboard", token).json()

    lb = board()
    assert [e["team"] for e in lb["entries"]] == ["alpha", "bravo"]  # the baseline is ranked as no team
    assert [(e["team"], e["rank"], e["baseline"]) for e in lb["baselines"]] == [("logistic baseline", None, True)]
    assert lb["baselines"][0]["metrics"]["log_loss"] == pytest.approx(0.693147, abs=1e-5)  # a constant 0.5
    assert any(n.startswith("Baselines (logistic baseline)") for n in lb["notes"])
    export = site.call("GET", "/api/competitions/closed/export?format=csv&split=public", host).text.splitlines()
    assert export[0].endswith(",baseline") and export[-1].startswith(",logistic baseline,")
    assert export[-1].endswith(",yes")
    md = site.call("GET", "/api/competitions/closed/export?format=md&split=public", host).text
    assert "| — | logistic baseline (baseline) |" in md
    page = site.client.get("/c/closed").text
    assert 'data-baseline="logistic baseline"' in page and page.index('data-team="bravo"') < page.index("data-baseline")
    assert site.call("GET", f"/api/submissions/{base.json()['id']}", alpha).status_code == 404
    # hide: off the board with the reason; the team sees why
    assert site.call("POST", f"/api/submissions/{a}/hide", alpha, json={"reason": "x"}).status_code == 403
    assert site.call("POST", f"/api/submissions/{a}/hide", host, json={"reason": ""}).status_code == 422
    assert site.call("POST", "/api/submissions/999/hide", host, json={"reason": "x"}).status_code == 404
    assert site.call("POST", f"/api/submissions/{a}/hide", host, json={"reason": "leaked labels"}).status_code == 200
    lb = board()
    assert [e["team"] for e in lb["entries"]] == ["bravo"]
    assert any("leaked labels" in n and f"#{a}" in n for n in lb["notes"])
    assert site.call("GET", f"/api/submissions/{a}", alpha).json()["hidden_reason"] == "leaked labels"
    site.call("POST", f"/api/submissions/{a}/unhide", host)
    assert [e["team"] for e in board()["entries"]] == ["alpha", "bravo"]
    # disqualify: off the board, named with the reason, no more submissions
    assert site.call("POST", "/api/competitions/closed/teams/nobody/disqualify", host,
                     json={"reason": "x"}).status_code == 404
    assert site.call("POST", "/api/competitions/closed/teams/bravo/disqualify", alpha,
                     json={"reason": "x"}).status_code == 403
    assert site.call("POST", "/api/competitions/closed/teams/bravo/disqualify", host,
                     json={"reason": "two accounts"}).status_code == 200
    assert [e["team"] for e in board()["entries"]] == ["alpha"]
    assert "Team bravo is disqualified: two accounts" in board()["notes"]
    r = site.upload(bravo, "closed", "bravo__mediocre.csv")
    assert r.status_code == 403 and "disqualified" in r.json()["message"]
    site.call("DELETE", "/api/competitions/closed/teams/bravo/disqualify", host)
    # baseline flag on an existing submission
    assert site.call("POST", f"/api/submissions/{b}/baseline", host, json={"baseline": True}).json()["baseline"]
    assert [e["team"] for e in board()["entries"]] == ["alpha"]
    site.call("POST", f"/api/submissions/{b}/baseline", host, json={"baseline": False})
    # bulk re-run in one transaction
    assert site.call("POST", "/api/competitions/closed/rerun", alpha, json={}).status_code == 403
    assert site.call("POST", "/api/competitions/closed/rerun", host, json={"phase": "nope"}).status_code == 400
    r = site.call("POST", "/api/competitions/closed/rerun", host, json={"team": "alpha"})
    assert r.json() == {"count": 1, "ids": [a]} and site.store.get_submission(a).status == "pending"
    assert site.call("POST", f"/api/submissions/{a}/cancel", host).status_code == 200
    late = site.call("POST", f"/api/submissions/{b}/cancel", host)  # already scored: nothing to cancel
    assert late.status_code == 409 and "already scored" in late.json()["message"]
    # downloads: organisers any file, a team its own, nobody else
    original = (site.root / "submissions" / "bravo__mediocre.csv").read_bytes()
    got = site.call("GET", f"/api/submissions/{b}/file", host)
    assert got.status_code == 200 and got.content == original and "attachment" in got.headers["content-disposition"]
    assert site.call("GET", f"/api/submissions/{b}/file", bravo).content == original
    assert site.call("GET", f"/api/submissions/{b}/file", alpha).status_code == 404
    assert site.call("GET", f"/api/submissions/{b}/file").status_code == 401


def test_paged_lists_and_retry_after(site):
    host_create_team(site.store, "closed", "alpha")
    alpha = create_team_token(site.store, "closed", "alpha")
    ids = [site.upload(alpha, "closed").json()["id"] for _ in range(3)]
    r = site.upload(alpha, "closed")  # per_team_per_day: 3
    assert r.status_code == 429 and 86000 <= int(r.headers["Retry-After"]) <= 86400
    assert r.json()["retry_after"] == int(r.headers["Retry-After"])
    page = site.call("GET", "/api/competitions/closed/submissions?limit=2", site.host)
    assert [s["id"] for s in page.json()] == ids[:2] and page.headers["X-Total-Count"] == "3"
    assert "offset=2" in page.headers["Link"] and 'rel="next"' in page.headers["Link"]
    rest = site.call("GET", "/api/competitions/closed/submissions?limit=2&offset=2", site.host)
    assert [s["id"] for s in rest.json()] == ids[2:] and "Link" not in rest.headers
    assert site.call("GET", "/api/competitions/closed/submissions?limit=0", site.host).status_code == 422


def test_pages_sign_up_team_and_host_forms(site):
    c = site.client
    r = c.post("/signup", data={"username": "ada", "email": "", "password": PASSWORD, "password2": "different"})
    assert r.status_code == 400 and "differ" in r.text
    r = c.post("/signup", data={"username": "ada", "email": "", "password": PASSWORD, "password2": PASSWORD,
                                "next": "/c/open/team"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/c/open/team"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "rfs_" in cookie
    session = c.cookies.get("referee_token")
    assert site.call("GET", "/api/me", session).status_code == 401  # a page session is no API token
    page = c.get("/c/open/team")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    assert csrf == csrf_token(session) and 'id="register-form"' in page.text
    assert c.post("/c/open/register", data={"csrf": "0" * 32}).status_code == 403
    assert c.post("/c/open/register", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert 'id="create-team-form"' in c.get("/c/open/team").text
    bad = c.post("/c/open/team/create", data={"csrf": csrf, "name": "  "})
    assert bad.status_code == 400 and 'id="team-error"' in bad.text
    c.post("/c/open/team/create", data={"csrf": csrf, "name": "Analytical Engines"})
    mine = c.get("/c/open/team").text
    assert "Analytical Engines" in mine and re.search(r'id="invite-code">[\w-]+<', mine)
    with open(site.root / "submissions" / "alpha__good.csv", "rb") as f:
        ok = c.post("/c/open/submit", data={"csrf": csrf, "description": "first try"},
                    files={"file": ("good.csv", f, "text/csv")}, follow_redirects=False)
    assert ok.status_code == 303
    sid = int(ok.headers["location"].rsplit("/", 1)[1])
    assert site.store.get_submission(sid).team == "Analytical Engines"
    assert "first try" in c.get(f"/submissions/{sid}").text
    assert c.get(f"/submissions/{sid}/file").status_code == 200
    assert c.get("/c/open/host").status_code == 403  # a participant is no organiser
    board = c.get("/c/open")
    assert board.status_code == 200 and "ada (team Analytical Engines)" in board.text
    assert c.get("/c/open?split=private").status_code == 403
    assert "Analytical Engines" in c.get("/c/open/submissions").text
    # sign out ends the session on the server too
    assert c.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    c.cookies.clear()
    c.cookies.set("referee_token", session)
    assert c.get("/account", follow_redirects=False).status_code == 303
    c.cookies.clear()
    # sign in again with the password; the account page makes a personal token
    r = c.post("/login", data={"username": "ada", "password": "wrong password"})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = c.post("/login", data={"username": "ada", "password": PASSWORD, "next": "/account"}, follow_redirects=False)
    assert r.status_code == 303
    csrf = csrf_token(c.cookies.get("referee_token"))
    made = c.post("/account/tokens", data={"csrf": csrf, "label": "ci"})
    token = re.search(r'<pre class="token">(rft_[\w-]+)</pre>', made.text).group(1)
    assert made.status_code == 201 and site.call("GET", "/api/me", token).json()["username"] == "ada"
    # the host page: approve, teams, organisers
    c.cookies.clear()
    c.cookies.set("referee_token", site.host)
    host_csrf = csrf_token(site.host)
    assert "Analytical Engines" in c.get("/c/open/host").text
    r = c.post("/c/open/host/organisers", data={"csrf": host_csrf, "username": "ada", "role": "viewer"},
               follow_redirects=False)
    assert r.status_code == 303 and site.store.organiser_role("open", site.store.user_by_name("ada").id) == "viewer"
    r = c.post("/c/open/host/rerun", data={"csrf": host_csrf, "status": "all"})
    assert r.status_code == 200 and "0 submission(s) queued" in r.text  # pending ones are not finished
    r = c.post(f"/submissions/{sid}/hide", data={"csrf": host_csrf, "reason": "duplicate"}, follow_redirects=False)
    assert r.status_code == 303 and site.store.get_submission(sid).hidden_reason == "duplicate"


def test_docs_are_served_from_packaged_assets(site):
    page = site.client.get("/docs")
    assert page.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text.replace("http://testserver", "") and "https://" not in page.text
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    js = site.client.get("/static/swagger/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 500_000
    assert site.client.get("/static/swagger/LICENSE").status_code == 200


def test_old_workspaces_are_migrated(tmp_path):
    """A workspace from before accounts: its columns are added and its team names become teams."""
    ws = tmp_path / "old"
    ws.mkdir()
    db = sqlite3.connect(ws / "referee.db")
    db.executescript("""
        CREATE TABLE competitions (id TEXT PRIMARY KEY, spec_json TEXT NOT NULL, spec_sha256 TEXT NOT NULL,
            source_path TEXT, loaded_at TEXT NOT NULL);
        CREATE TABLE submissions (id INTEGER PRIMARY KEY AUTOINCREMENT, competition_id TEXT NOT NULL,
            team TEXT NOT NULL, phase TEXT NOT NULL, kind TEXT NOT NULL, sha256 TEXT NOT NULL, filename TEXT,
            size INTEGER, status TEXT NOT NULL, failure_reason TEXT, failure_message TEXT, log_tail TEXT,
            counts_toward_quota INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            metadata_json TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE web_tokens (token_sha256 TEXT PRIMARY KEY, role TEXT NOT NULL, competition_id TEXT,
            team TEXT, label TEXT, created_at TEXT NOT NULL, revoked_at TEXT);
        INSERT INTO submissions(competition_id, team, phase, kind, sha256, status, created_at, updated_at)
            VALUES ('c1', 'legacy', 'main', 'predictions', 'x', 'scored', '2025-01-01', '2025-01-01');
        INSERT INTO web_tokens(token_sha256, role, competition_id, team, created_at)
            VALUES ('ab', 'team', 'c1', 'token-only', '2025-01-02');
    """)
    db.commit()
    db.close()
    store = Store(ws)
    assert sorted(t.name for t in store.teams("c1")) == ["legacy", "token-only"]
    sub = store.get_submission(1)
    assert sub.baseline == 0 and sub.hidden_reason is None and sub.attempt_base == 0
    store.close()
    again = Store(ws)  # the data migration runs once
    assert len(again.teams("c1")) == 2 and again._query("PRAGMA user_version")[0][0] >= 1
    again.close()


def test_library_submit_and_user_creation_rules(site):
    from referee.submissions.submit import submit
    comp = site.store.get_competition("closed")
    host_create_team(site.store, "closed", "Alpha")
    sid = submit(site.store, comp, "ALPHA", site.root / "submissions" / "alpha__good.csv")
    assert site.store.get_submission(sid).team == "Alpha"  # the team's own spelling
    with pytest.raises(Exception, match="lowercase"):
        create_user(site.store, "Not Valid!", PASSWORD)
