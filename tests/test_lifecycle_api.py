"""A two-phase competition through the HTTP API and the pages: rules, data, quotas per phase, final
picks, publishing the private leaderboard, and every 4xx of these routes.

Time moves the way a host moves it: the phases' dates are rewritten and the competition reloaded
(its data snapshots stay the same, so nothing is re-scored).
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest
from conftest import prepare_example
from fastapi.testclient import TestClient
from phase_support import challenge, set_phases

from referee.platform.controller.competitions import load
from referee.platform.controller.participation import host_create_team
from referee.platform.controller.reconcile import Controller
from referee.platform.store import Store
from referee.platform.web.app import create_app
from referee.platform.web.auth import (
    create_host_token,
    create_team_token,
    create_user_token,
    csrf_token,
    hash_password,
)

pytestmark = pytest.mark.lifecycle
PASSWORD = "correct horse battery"


class Site:
    def __init__(self, root, ws):
        self.root = root
        self.store = Store(ws)
        load(self.store, root)
        self.host = create_host_token(self.store)
        self.client = TestClient(create_app(self.store, run_scheduler=False))
        self._hash = hash_password(PASSWORD)  # one argon2 hash for every test account

    def call(self, method, url, token=None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, url, headers=headers, **kw)

    def user(self, name):
        uid = self.store.add_user(name, self._hash)
        return create_user_token(self.store, uid)

    def upload(self, token, files_of, name="good.csv", **fields):
        """Upload ``submissions/<files_of>/<name>`` (the sample files made for that phase's data)."""
        with open(self.root / "submissions" / files_of / name, "rb") as f:
            return self.call("POST", "/api/competitions/challenge/submissions", token,
                             files={"file": (name, f, "text/csv")}, data=fields)

    def score(self):
        Controller(self.store, self.store.get_competition("challenge"), poll_interval=0.01).run()

    def move_to(self, *, dev_end, final_end):
        set_phases(self.root, dev_end=dev_end, final_end=final_end)
        result = load(self.store, self.root)
        assert result.changed == [] and result.stale == []  # same data: nothing to re-run


@pytest.fixture
def site(tmp_path):
    s = Site(challenge(tmp_path), tmp_path / "ws")
    yield s
    s.client.close()
    s.store.close()


def team_of(site, *names):
    """Register users, the first creating team A, the others joining it; returns their tokens."""
    tokens = [site.user(n) for n in names]
    for t in tokens:
        assert site.call("POST", "/api/competitions/challenge/registration", t).status_code == 201
    made = site.call("POST", "/api/competitions/challenge/teams", tokens[0], json={"name": f"team-{names[0]}"})
    assert made.status_code == 201
    for t in tokens[1:]:
        r = site.call("POST", "/api/competitions/challenge/team/join", t, json={"code": made.json()["invite_code"]})
        assert r.status_code == 200
    return tokens


def test_two_phases_from_rules_to_the_published_private_rank(site):
    now = dt.datetime.now(dt.timezone.utc)
    ada, bob = team_of(site, "ada", "bob")
    (cy,) = team_of(site, "cy")
    c = "/api/competitions/challenge"

    # rules first: no download, no submission before accepting them
    files = {f["name"]: f for f in site.call("GET", f"{c}/files").json()}
    assert files["challenge-dev-input.zip"]["phases"] == ["dev"]
    assert files["challenge-input.zip"]["phases"] == ["final"] and "challenge-starting-kit.zip" in files
    assert site.call("GET", f"{c}/files/challenge-dev-input.zip").status_code == 401
    r = site.call("GET", f"{c}/files/challenge-dev-input.zip", ada)
    assert r.status_code == 403 and "accept the rules" in r.json()["message"]
    r = site.upload(ada, "dev")
    assert r.status_code == 403 and "accept the rules" in r.json()["message"]
    rules = site.call("GET", f"{c}/rules", ada).json()
    assert rules["required"] and rules["accepted_at"] is None and "# Rules" in rules["markdown"]
    for t in (ada, bob, cy):
        assert site.call("POST", f"{c}/rules/accept", t).status_code == 200
    assert site.call("GET", f"{c}/rules", ada).json()["accepted_at"]
    zipped = site.call("GET", f"{c}/files/challenge-dev-input.zip", bob)
    assert zipped.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(zipped.content)).namelist() == ["input/features.csv"]
    kit = site.call("GET", f"{c}/files/challenge-starting-kit.zip", bob)
    assert "starting_kit/baseline.py" in zipfile.ZipFile(io.BytesIO(kit.content)).namelist()

    # development phase: its own data, its own quota
    r = site.upload(ada, "dev", description="logistic regression")
    assert r.status_code == 201 and r.json()["phase"] == "dev"
    dev_sid = r.json()["id"]
    r = site.upload(bob, "final")  # the final set's file does not fit the dev phase's data
    assert r.status_code == 422 and "item_00401" in r.json()["message"]
    r = site.upload(ada, "final", phase="final")  # not open yet
    assert r.status_code == 422 and r.json()["message"].startswith("phase 'final' of 'challenge' is not open")
    site.score()
    assert site.upload(cy, "dev", "fair.csv").status_code == 201
    site.score()
    mine = site.call("GET", f"{c}/submissions", bob).json()
    assert [(s["id"], s["phase"], set(s["scores"])) for s in mine] == [(dev_sid, "dev", {"public"})]
    assert mine[0]["description"] == "logistic regression"
    assert site.call("GET", f"{c}/quota", ada).json()["remaining"] == 19
    lb = site.call("GET", f"{c}/leaderboard", bob).json()
    assert lb["phase"] == "dev" and lb["your_entry"]["rank"] == 1 and lb["metric_order"] == ["log_loss"]

    # the development phase closes; the final phase opens with a fresh quota
    site.move_to(dev_end=now - dt.timedelta(seconds=1), final_end=now + dt.timedelta(days=1))
    r = site.upload(ada, "dev", phase="dev")
    assert r.status_code == 422 and "not open now" in r.json()["message"]
    q = site.call("GET", f"{c}/quota", ada).json()
    assert (q["phase"], q["used_total"], q["remaining_total"], q["remaining"]) == ("final", 0, 10, 3)
    good = site.upload(ada, "final", "good.csv").json()["id"]
    site.score()
    poor = site.upload(bob, "final", "poor.csv").json()["id"]
    site.score()
    fair_cy = site.upload(cy, "final", "fair.csv").json()["id"]
    site.score()
    assert site.call("GET", f"{c}/quota", bob).json()["remaining"] == 1  # 3 a day, counted per team
    detail = site.call("GET", f"/api/submissions/{good}", ada).json()
    assert {s["split"] for s in detail["scores"]} == {"public"}  # private scores stay hidden

    # pick: team ada picks its poor submission (only picks count on the private board)
    r = site.call("POST", f"/api/submissions/{poor}/pick", ada)
    assert r.status_code == 200 and r.json()["picks"] == [poor]
    picks = site.call("GET", f"{c}/picks", bob).json()
    assert picks["rule"] == "pick" and picks["open"] and [p["submission_id"] for p in picks["picks"]] == [poor]
    assert site.call("GET", f"{c}/picks", site.host).json()["picks"][0]["team"] == "team-ada"

    # the private leaderboard: 403 for teams until the host publishes it
    private = f"{c}/leaderboard?phase=final&split=private"
    assert site.call("GET", private, ada).status_code == 403
    assert site.call("GET", private).status_code == 401
    host_view = site.call("GET", private, site.host).json()
    assert {e["team"]: e["submission_id"] for e in host_view["entries"]} == {"team-ada": poor, "team-cy": fair_cy}
    r = site.call("POST", f"{c}/phases/final/publish", site.host)
    assert r.status_code == 200 and r.json()["visibility"] == "public" and r.json()["switched_by"] == "host"
    board = site.call("GET", private, bob).json()
    assert board["visibility"] == "public"
    assert board["your_entry"]["submission_id"] == poor and board["your_entry"]["rank"] == 2
    assert site.call("GET", private).status_code == 200  # published: anyone sees it
    detail = site.call("GET", f"/api/submissions/{good}", ada).json()
    assert {s["split"] for s in detail["scores"]} == {"public", "private"}
    assert set(site.call("GET", f"{c}/submissions", ada).json()[-1]["scores"]) == {"public", "private"}
    r = site.call("DELETE", f"/api/submissions/{poor}/pick", ada)  # picks are final once published
    assert r.status_code == 409 and "picks are final" in r.json()["message"]
    phases = {p["name"]: p for p in site.call("GET", f"{c}/phases").json()}
    assert phases["final"]["leaderboards"]["private"]["visibility"] == "public"
    assert phases["dev"]["ended"] and phases["final"]["open"]


def test_publish_at_end_and_the_host_switches(site):
    now = dt.datetime.now(dt.timezone.utc)
    (ada,) = team_of(site, "ada")
    site.call("POST", "/api/competitions/challenge/rules/accept", ada)
    site.move_to(dev_end=now - dt.timedelta(seconds=1), final_end=now + dt.timedelta(days=1))
    assert site.upload(ada, "final").status_code == 201
    site.score()
    private = "/api/competitions/challenge/leaderboard?phase=final&split=private"
    assert site.call("GET", private, ada).status_code == 403
    # the phase ends: publish_at_end makes the private board public by itself
    site.move_to(dev_end=now - dt.timedelta(days=2), final_end=now - dt.timedelta(seconds=1))
    assert site.call("GET", private, ada).json()["your_entry"]["rank"] == 1
    # the host may still hide it again, or hand it back to the spec
    vis = "/api/competitions/challenge/phases/final/visibility"
    r = site.call("PUT", vis, site.host, json={"split": "private", "visibility": "host"})
    assert r.status_code == 200 and r.json()["visibility"] == "host"
    assert site.call("GET", private, ada).status_code == 403
    sid = site.store.submissions("challenge", team="team-ada")[0].id
    assert {s["split"] for s in site.call("GET", f"/api/submissions/{sid}", ada).json()["scores"]} == \
        {"public", "private"}  # host: the board is the organisers', the team still sees its own scores
    r = site.call("PUT", vis, site.host, json={"split": "public", "visibility": "hidden"})
    assert r.status_code == 200
    assert site.call("GET", "/api/competitions/challenge/leaderboard?phase=final", ada).status_code == 403
    # hidden: not even the team's own scores of that split
    assert {s["split"] for s in site.call("GET", f"/api/submissions/{sid}", ada).json()["scores"]} == {"private"}
    assert site.call("PUT", vis, site.host, json={"split": "private", "visibility": None}).json()["visibility"] \
        == "public"


def test_every_4xx_of_the_phase_routes(site):
    now = dt.datetime.now(dt.timezone.utc)
    ada, = team_of(site, "ada")
    (dan,) = team_of(site, "dan")
    cy = site.user("cy")  # signed up, in no team
    olga = site.user("olga")
    assert site.call("PUT", "/api/competitions/challenge/organisers/olga", site.host,
                     json={"role": "viewer"}).status_code == 200
    host_create_team(site.store, "challenge", "tokens")
    team_token = create_team_token(site.store, "challenge", "tokens")
    c = "/api/competitions/challenge"

    # phases, publish, visibility
    assert site.call("GET", "/api/competitions/nope/phases").status_code == 404
    pub = f"{c}/phases/final/publish"
    assert site.call("POST", pub).status_code == 401
    for who in (ada, cy, team_token, olga):  # participants, a team token, a viewer: not allowed
        r = site.call("POST", pub, who)
        assert r.status_code == 403, r.text
    assert site.call("POST", "/api/competitions/nope/phases/final/publish", site.host).status_code == 404
    r = site.call("POST", f"{c}/phases/nope/publish", site.host)
    assert r.status_code == 404 and "its phases: dev, final" in r.json()["message"]
    assert site.call("POST", pub, site.host, json={"split": "everything"}).status_code == 422
    vis = f"{c}/phases/dev/visibility"
    assert site.call("PUT", vis, json={"split": "public", "visibility": "host"}).status_code == 401
    assert site.call("PUT", vis, ada, json={"split": "public", "visibility": "host"}).status_code == 403
    assert site.call("PUT", vis, site.host, json={"split": "public", "visibility": "everyone"}).status_code == 422
    assert site.call("PUT", vis, site.host, json={"visibility": "host"}).status_code == 422
    assert site.call("PUT", f"{c}/phases/nope/visibility", site.host,
                     json={"split": "public", "visibility": "host"}).status_code == 404
    assert site.call("PUT", "/api/competitions/nope/phases/dev/visibility", site.host,
                     json={"split": "public", "visibility": "host"}).status_code == 404

    # leaderboards and exports
    assert site.call("GET", f"{c}/leaderboard?phase=nope").status_code == 404
    assert site.call("GET", f"{c}/leaderboard?split=private").status_code == 401
    assert site.call("GET", f"{c}/leaderboard?split=private", ada).status_code == 403
    assert site.call("GET", f"{c}/leaderboard?split=private", olga).status_code == 200  # organisers see it
    assert site.call("GET", f"{c}/export?phase=nope", site.host).status_code == 404

    # pages, files, rules
    assert site.call("GET", f"{c}/pages/overview").json()["markdown"].startswith("# Two-phase")
    assert site.call("GET", f"{c}/pages/secret").status_code == 404
    assert site.call("GET", "/api/competitions/nope/pages/overview").status_code == 404
    assert site.call("GET", "/api/competitions/nope/files").status_code == 404
    assert site.call("GET", f"{c}/files/challenge-input.zip").status_code == 401
    assert site.call("GET", f"{c}/files/challenge-input.zip", ada).status_code == 403
    assert site.call("GET", f"{c}/files/challenge-input.zip", team_token).status_code == 200  # a host's token
    assert site.call("GET", f"{c}/files/challenge-input.zip", olga).status_code == 200  # organisers
    assert site.call("POST", f"{c}/rules/accept", ada).status_code == 200
    assert site.call("GET", f"{c}/files/reference.csv", ada).status_code == 404  # never the references
    assert site.call("GET", "/api/competitions/nope/files/challenge-input.zip", ada).status_code == 404
    assert site.call("GET", "/api/competitions/nope/rules").status_code == 404
    assert site.call("POST", f"{c}/rules/accept").status_code == 401
    assert site.call("POST", f"{c}/rules/accept", team_token).status_code == 403
    assert site.call("POST", f"{c}/rules/accept", site.host).status_code == 403
    assert site.call("POST", "/api/competitions/nope/rules/accept", ada).status_code == 404
    load(site.store, prepare_example("deepfake", site.root.parent))  # a competition without a rules page
    r = site.call("POST", "/api/competitions/deepfake/rules/accept", ada)
    assert r.status_code == 404 and "no rules page" in r.json()["message"]
    assert site.call("GET", "/api/competitions/deepfake/files/deepfake-input.zip").status_code == 200  # no rules

    # quota and picks
    assert site.call("GET", f"{c}/quota").status_code == 401
    assert site.call("GET", "/api/competitions/nope/quota", ada).status_code == 404
    assert site.call("GET", f"{c}/quota", cy).status_code == 403
    assert site.call("GET", f"{c}/quota?phase=nope", ada).status_code == 404
    assert site.call("GET", f"{c}/quota?team=nobody", site.host).status_code == 404
    assert site.call("GET", f"{c}/quota?team=team-ada", site.host).json()["phase"] == "dev"
    assert site.call("GET", f"{c}/picks").status_code == 401
    assert site.call("GET", f"{c}/picks", cy).status_code == 403
    assert site.call("GET", f"{c}/picks?phase=nope", ada).status_code == 404
    dev_sid = site.upload(ada, "dev").json()["id"]
    site.score()
    r = site.call("POST", f"/api/submissions/{dev_sid}/pick", ada)
    assert r.status_code == 403 and "nothing to pick" in r.json()["message"]  # dev: best-public
    site.call("POST", f"{c}/rules/accept", dan)
    site.move_to(dev_end=now - dt.timedelta(seconds=1), final_end=now + dt.timedelta(days=1))
    subs = [site.upload(ada, "final", n).json()["id"] for n in ("good.csv", "fair.csv")]
    site.score()
    bad = site.upload(ada, "final", "poor.csv").json()["id"]
    site.call("POST", f"/api/submissions/{bad}/cancel", site.host)
    dan_sid = site.upload(dan, "final").json()["id"]
    assert site.call("POST", f"/api/submissions/{subs[0]}/pick").status_code == 401
    assert site.call("POST", f"/api/submissions/{dan_sid}/pick", ada).status_code == 404  # another team's
    assert site.call("POST", "/api/submissions/99999/pick", ada).status_code == 404
    assert site.call("POST", f"/api/submissions/{subs[0]}/pick", site.host).status_code == 404  # in no team
    r = site.call("POST", f"/api/submissions/{bad}/pick", ada)
    assert r.status_code == 403 and "cancelled" in r.json()["message"]
    third = site.upload(ada, "final", "poor.csv").json()["id"]  # the cancelled one did not count
    site.score()
    r = site.upload(ada, "final", "poor.csv")  # the final phase: 3 a day, whatever dev took
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    for sid in subs:
        assert site.call("POST", f"/api/submissions/{sid}/pick", ada).status_code == 200
    assert site.call("POST", f"/api/submissions/{subs[0]}/pick", ada).status_code == 200  # again: no change
    r = site.call("POST", f"/api/submissions/{third}/pick", ada)
    assert r.status_code == 409 and "already picked 2" in r.json()["message"]
    assert site.call("DELETE", f"/api/submissions/{dan_sid}/pick", ada).status_code == 404
    site.move_to(dev_end=now - dt.timedelta(days=2), final_end=now - dt.timedelta(seconds=1))
    r = site.call("DELETE", f"/api/submissions/{subs[0]}/pick", ada)
    assert r.status_code == 409 and "picks are final" in r.json()["message"]


def test_team_pages_for_a_participant(site):
    now = dt.datetime.now(dt.timezone.utc)
    ada, bob = team_of(site, "ada", "bob")
    c = site.client
    c.cookies.set("referee_token", ada)
    csrf = csrf_token(ada)
    for path, needle in (("overview", "Predict whether each item is positive"), ("data", "Accept the"),
                         ("rules", "I accept the rules"), ("evaluation", "log_loss|")):
        r = c.get(f"/c/challenge/{path}")
        assert r.status_code == 200 and needle in r.text, path
        assert 'id="comp-nav"' in r.text
    assert c.get("/c/challenge/files/challenge-dev-input.zip").status_code == 403
    assert c.post("/c/challenge/rules/accept", data={"csrf": "stale"}).status_code == 403
    r = c.post("/c/challenge/rules/accept", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/c/challenge/data"
    page = c.get("/c/challenge/data").text
    assert 'href="/c/challenge/files/challenge-dev-input.zip"' in page and "public inputs of phase dev" in page
    assert c.get("/c/challenge/files/challenge-dev-input.zip").status_code == 200
    assert "You accepted these rules" in c.get("/c/challenge/rules").text
    evaluation = c.get("/c/challenge/evaluation").text
    assert 'data-phase="dev"' in evaluation and 'data-phase="final"' in evaluation and "teams pick" not in evaluation
    assert "the best on the private split of the (at most 2) submissions a team picks" in evaluation
    assert 'id="quota" data-remaining="20"' in c.get("/c/challenge/submit").text

    site.call("POST", "/api/competitions/challenge/rules/accept", bob)
    site.move_to(dev_end=now - dt.timedelta(seconds=1), final_end=now + dt.timedelta(days=1))
    sid = site.upload(bob, "final", description="gradient boosting").json()["id"]
    site.score()
    page = c.get("/c/challenge/submissions").text
    assert 'data-phase="final" data-remaining="2"' in page and "gradient boosting" in page
    assert f'action="/submissions/{sid}/pick"' in page
    assert c.post(f"/submissions/{sid}/pick", data={"csrf": "stale"}).status_code == 403
    r = c.post(f"/submissions/{sid}/pick", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    page = c.get("/c/challenge/submissions").text
    assert f'action="/submissions/{sid}/unpick"' in page and 'class="picked"' in page
    assert c.get("/c/challenge?phase=final&split=private").status_code == 403
    # the host publishes on the Organise page
    c.cookies.set("referee_token", site.host)
    host = c.get("/c/challenge/host").text
    assert 'action="/c/challenge/host/phases/final/visibility"' in host
    r = c.post("/c/challenge/host/phases/final/visibility",
               data={"csrf": csrf_token(site.host), "split": "private", "visibility": "public"})
    assert r.status_code == 200 and "is now public" in r.text
    c.cookies.set("referee_token", ada)
    board = c.get("/c/challenge?phase=final&split=private")
    assert board.status_code == 200 and 'id="my-rank"' in board.text and 'data-rank="1"' in board.text
    assert c.get("/c/nope/overview").status_code == 404
    # the host's form: participants may not switch a leaderboard
    r = c.post("/c/challenge/host/phases/final/visibility", data={"csrf": csrf, "split": "private",
                                                                  "visibility": "hidden"})
    assert r.status_code == 403
    c.cookies.clear()
    r = c.get("/c/challenge/files/challenge-input.zip", follow_redirects=False)  # the rules ask for a sign-in
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_phase_commands(site):
    import json
    import subprocess
    import sys

    def referee(*args, check=True):
        proc = subprocess.run([sys.executable, "-m", "referee.platform.cli", "-w", str(site.store.root), *args],
                              capture_output=True, text=True, timeout=120)
        assert not check or proc.returncode == 0, proc.stderr
        return proc

    listing = referee("phase", "list", "challenge").stdout
    assert "dev open" in listing and "final not open yet" in listing and "pick up to 2" in listing
    assert "private hidden (publish_at_end)" in listing
    out = referee("phase", "publish", "challenge", "final").stdout
    assert out.strip() == "the private leaderboard of phase 'final' is public (set by the host)"
    out = referee("phase", "visibility", "challenge", "dev", "public", "hidden").stdout
    assert "public leaderboard of phase 'dev' is hidden" in out
    info = {p["name"]: p for p in json.loads(referee("phase", "list", "challenge", "--json").stdout)}
    assert info["dev"]["leaderboards"]["public"]["switched_by"] == "host (cli)"
    assert info["final"]["leaderboards"]["private"]["visibility"] == "public"
    referee("phase", "visibility", "challenge", "dev", "public", "spec")
    assert site.call("GET", "/api/competitions/challenge/phases").json()[0]["leaderboards"]["public"][
        "visibility"] == "public"
    bad = referee("phase", "publish", "challenge", "nope", check=False)
    assert bad.returncode != 0 and "no phase named 'nope'" in bad.stderr and "Traceback" not in bad.stderr
