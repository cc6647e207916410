"""The participant's command line (``referee remote``) against a real ``referee serve`` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml
from conftest import prepare_example
from test_web_e2e import _serve

from referee.platform.controller.competitions import load_into_store
from referee.platform.store import Store

pytestmark = [pytest.mark.accounts, pytest.mark.lifecycle]
PASSWORD = "s3cret pass phrase"


def referee(env: dict, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "referee.platform.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"referee {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def server(tmp_path):
    root = prepare_example("deepfake", tmp_path)
    doc = yaml.safe_load((root / "competition.yaml").read_text())
    doc["participation"] = {"registration": "open"}
    doc["limits"] = {"per_team_per_day": 2}
    (root / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(tmp_path / "ws")
    load_into_store(store, root / "competition.yaml")
    store.close()
    proc, url = _serve(tmp_path / "ws")
    yield url, root
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_login_submit_status_leaderboard(server, tmp_path):
    import httpx
    url, root = server
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
    env.pop("REFEREE_TOKEN", None)
    # sign up and form a team through the API (the web pages do the same)
    assert httpx.post(f"{url}/api/users", json={"username": "ada", "password": PASSWORD}).status_code == 201
    none = referee(env, "remote", "status", "deepfake", check=False)
    assert none.returncode == 1 and "remote login" in none.stderr
    bad = referee(env, "remote", "login", url, "--username", "ada", "--password-stdin", stdin="wrong\n", check=False)
    assert bad.returncode == 1 and "401" in bad.stderr and "Traceback" not in bad.stderr
    out = referee(env, "remote", "login", url, "--username", "ada", "--password-stdin", stdin=PASSWORD + "\n")
    assert "signed in" in out.stdout and "as ada" in out.stdout
    creds = tmp_path / "config" / "referee" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    token = json.loads(creds.read_text())["servers"][url]["token"]
    assert token.startswith("rft_") and PASSWORD not in creds.read_text()
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{url}/api/competitions/deepfake/registration", headers=auth).status_code == 201
    assert httpx.post(f"{url}/api/competitions/deepfake/teams", headers=auth, json={"name": "Engines"}).status_code == 201

    good = str(root / "submissions" / "alpha__good.csv")
    sub = json.loads(referee(env, "remote", "submit", "deepfake", good, "--description", "gradient boosting",
                             "--wait", "--json").stdout)
    assert sub["status"] == "scored" and sub["team"] == "Engines" and sub["description"] == "gradient boosting"
    assert {s["split"] for s in sub["scores"]} == {"public"}
    rejected = referee(env, "remote", "submit", "deepfake", str(root / "submissions" / "charlie__nan.csv"),
                       check=False)
    assert rejected.returncode == 1 and "422" in rejected.stderr and "line" in rejected.stderr
    referee(env, "remote", "submit", "deepfake", good)
    limited = referee(env, "remote", "submit", "deepfake", good, check=False)
    assert limited.returncode == 1 and "429" in limited.stderr and "retry after" in limited.stderr
    listing = referee(env, "remote", "status", "deepfake").stdout
    assert f"#{sub['id']}" in listing and "gradient boosting" in listing
    assert "public 0." in listing and "phase final: 0 submission(s) left" in listing  # scores and quota
    pick = referee(env, "remote", "pick", str(sub["id"]), check=False)  # one phase, best-public: no picks
    assert pick.returncode == 1 and "403" in pick.stderr and "nothing to pick" in pick.stderr
    detail = referee(env, "remote", "status", "deepfake", "--submission", str(sub["id"])).stdout
    assert "scored" in detail and "log_loss" in detail
    board = referee(env, "remote", "leaderboard", "deepfake").stdout
    assert "Engines" in board and "primary log_loss" in board and "your team Engines ranks 1 of 1" in board
    private = referee(env, "remote", "leaderboard", "deepfake", "--split", "private", check=False)
    assert private.returncode == 1 and "403" in private.stderr
    # logout revokes the token on the server and forgets it here
    referee(env, "remote", "logout")
    assert httpx.get(f"{url}/api/me", headers=auth).status_code == 401
    assert url not in json.loads(creds.read_text())["servers"]
