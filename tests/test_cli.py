"""The console script end to end: demo, load, submit, run, status, leaderboard, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def referee(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "referee.platform.cli", "-w", str(ws), *args],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if check and proc.returncode != 0:
        raise AssertionError(f"referee {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_demo_end_to_end_under_a_minute(tmp_path):
    t0 = time.perf_counter()
    proc = referee(tmp_path / "demo", "demo", "--no-containers")
    elapsed = time.perf_counter() - t0
    assert elapsed < 60
    out = proc.stdout
    for title in ("Deepfake detection", "Speech recognition", "Machine translation"):
        assert title in out
    assert "final / public" in out and "final / private" in out
    assert "rejected" in out and "line " in out
    exports = tmp_path / "demo" / "exports"
    board = json.loads((exports / "deepfake-private.json").read_text())
    assert board["entries"][0]["team"] == "alpha" and board["primary"] == "log_loss"
    assert str(exports) in out.replace("\n", "")


def test_cli_flow_json_and_errors(tmp_path, example):
    d = example("deepfake")
    ws = tmp_path / "ws"
    loaded = json.loads(referee(ws, "competition", "load", str(d / "competition.yaml"), "--json").stdout)
    assert loaded["id"] == "deepfake"
    # teams are records: an unknown --team is refused (a typo never starts a new team)
    typo = referee(ws, "submit", "deepfake", str(d / "submissions/alpha__good.csv"), "--team", "alpah", check=False)
    assert typo.returncode == 1 and "no team 'alpah'" in typo.stderr and "referee team create" in typo.stderr
    referee(ws, "team", "create", "deepfake", "alpha", "c")
    sub = json.loads(referee(ws, "submit", "deepfake", str(d / "submissions/alpha__good.csv"),
                             "--team", "alpha", "--json").stdout)
    assert sub["status"] == "pending"
    bad = referee(ws, "submit", "deepfake", str(d / "submissions/charlie__nan.csv"), "--team", "c", check=False)
    assert bad.returncode == 1 and "line" in bad.stderr and "Traceback" not in bad.stderr
    summary = json.loads(referee(ws, "run", "deepfake", "--json").stdout)
    assert summary["scored"] == 1 and summary["failed"] == 0
    status = json.loads(referee(ws, "status", "deepfake", "--json").stdout)
    assert [s["status"] for s in status] == ["scored"]
    late = referee(ws, "cancel", str(sub["id"]), check=False)  # already scored: says so, exits non-zero
    assert late.returncode == 1 and "already scored" in late.stderr
    detail = json.loads(referee(ws, "status", "deepfake", "--submission", str(sub["id"]), "--json").stdout)
    assert {s["split"] for s in detail["scores"]} == {"public", "private"}
    prov = detail["scores"][0]["provenance"]
    assert prov["submission_sha256"] == sub["sha256"] and len(prov["reference_sha256"]) == 64
    assert "numpy" in prov["libraries"]
    csv_text = referee(ws, "leaderboard", "deepfake", "--split", "private", "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("rank,team,log_loss,accuracy")
    missing = referee(ws, "leaderboard", "nope", check=False)
    assert missing.returncode == 1 and "no competition 'nope'" in missing.stderr
    badspec = tmp_path / "bad.yaml"
    badspec.write_text("id: Bad Id\ntitle: x\n")
    err = referee(ws, "competition", "load", str(badspec), check=False)
    assert err.returncode == 1 and "bad.yaml" in err.stderr and "id:" in err.stderr


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "referee.platform.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert time.perf_counter() - t0 < 5
    for cmd in ("demo", "competition", "submit", "run", "status", "leaderboard", "plugins"):
        assert cmd in out
    heavy = subprocess.run([sys.executable, "-c", "import sys, referee.platform.cli.main as c; "
                            "print(sorted(m for m in ('ray','boto3','torch','docker','fastapi','sacrebleu') "
                            "if m in sys.modules))"], capture_output=True, text=True, check=True).stdout
    assert heavy.strip() == "[]"


def test_demo_refuses_to_replace_a_workspace_it_did_not_make(tmp_path):
    ws = tmp_path / "mine"
    referee(ws, "competition", "list")  # creates a real workspace
    proc = referee(ws, "demo", "--no-containers", check=False)
    assert proc.returncode == 1 and "was not made by `referee demo`" in proc.stderr
    assert (ws / "referee.db").exists()


def test_json_commands_report_errors_as_json_with_stable_codes(tmp_path, example):
    d = example("deepfake")
    ws = tmp_path / "ws"
    referee(ws, "competition", "load", str(d / "competition.yaml"))
    bad = referee(ws, "submit", "deepfake", str(d / "submissions/charlie__nan.csv"), "--team", "c", "--create-team",
                  "--json", check=False)
    err = json.loads(bad.stdout)
    assert bad.returncode == 1 and err["error"] == "submission_rejected" and err["reason"] == "bad_value"
    assert err["line"] > 1 and err["source"] == "charlie__nan.csv" and "not a finite number" in err["message"]
    missing = referee(ws, "status", "nope", "--json", check=False)
    assert missing.returncode == 1 and json.loads(missing.stdout) == {
        "error": "not_found", "message": json.loads(missing.stdout)["message"]}
    usage = referee(ws, "submit", "deepfake", "x.csv", "--json", check=False)  # --team is missing
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"] == "usage_error"
    badspec = tmp_path / "bad.yaml"
    badspec.write_text("id: Bad Id\ntitle: x\n")
    spec = referee(ws, "competition", "load", str(badspec), "--json", check=False)
    assert spec.returncode == 1 and json.loads(spec.stdout)["error"] == "spec_invalid"
