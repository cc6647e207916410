"""Deterministic re-scoring: `referee verify` re-scores stored predictions and finds any difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.controller.verify import verify_competition
from referee.platform.core.spec import load_competition
from referee.submissions.submit import submit


def test_verify_same_then_detects_tampering_and_changed_reference(example, store):
    d = example("translation")
    comp = load_into_store(store, d / "competition.yaml")
    for f in ("alpha__very_good.jsonl", "bravo__medium.jsonl", "charlie__poor.jsonl"):
        submit(store, comp, f.split("__")[0], d / "submissions" / f)
    Controller(store, comp).run()
    verdicts = verify_competition(store, comp)
    assert [v.status for v in verdicts] == ["same"] * 3 and not any(v.notes for v in verdicts)
    prov = store.scores(verdicts[0].submission_id)[0].provenance
    assert prov["predictions_sha256"] == prov["submission_sha256"] == store.get_submission(1).sha256

    store._execute("UPDATE scores SET value = value + 0.5 WHERE submission_id=2 AND metric='bleu' AND split='public'")
    env = {**os.environ, "REFEREE_WORKSPACE": str(store.root)}
    out = subprocess.run([sys.executable, "-m", "referee.platform.cli", "verify", comp.id, "--json"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 1
    by_id = {v["submission_id"]: v for v in json.loads(out.stdout)}
    assert by_id[2]["status"] == "different" and by_id[1]["status"] == by_id[3]["status"] == "same"
    (diff,) = by_id[2]["differences"]
    assert diff["metric"] == "bleu" and diff["split"] == "public" and diff["stored"] - diff["now"] == 0.5

    ref = load_competition(d / "competition.yaml").reference_path  # the host's source file
    lines = ref.read_text().splitlines()
    row = json.loads(lines[0])
    row["text"] = row["text"] + " extra"
    ref.write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    comp = load_into_store(store, d / "competition.yaml")  # the workspace keeps its snapshot until a reload
    verdicts = {v.submission_id: v for v in verify_competition(store, comp)}
    assert verdicts[1].status == "different"
    assert any("reference data changed" in n for n in verdicts[1].notes)


def test_container_outputs_are_kept_for_verification(tmp_path, store):
    from test_scheduler import job_comp, submit_jobs
    comp = job_comp(tmp_path, store)
    (sid,) = submit_jobs(store, comp, ["a"])
    Controller(store, comp, poll_interval=0.05).run()
    prov = store.scores(sid)[0].provenance
    assert prov["submission_sha256"] == store.get_submission(sid).sha256
    assert prov["predictions_sha256"] != prov["submission_sha256"]
    assert store.blob_path(prov["predictions_sha256"]).read_text().startswith("id,label")
    assert [v.status for v in verify_competition(store, comp)] == ["same"]


def test_leaderboard_notes_entries_scored_against_other_reference(example, store):
    from referee.platform.leaderboard import build as lbm
    d = example("deepfake")
    comp = load_into_store(store, d / "competition.yaml")
    a = submit(store, comp, "alpha", d / "submissions" / "alpha__good.csv")
    Controller(store, comp).run()
    assert not any("different reference" in n for n in lbm.build(store, comp).notes)
    ref = load_competition(d / "competition.yaml").reference_path  # the host's source file
    ref.write_text(ref.read_text().replace(",1,", ",0,", 1))
    assert not any("different reference" in n for n in lbm.build(store, store.get_competition(comp.id)).notes)
    comp = load_into_store(store, d / "competition.yaml")  # a reload takes the edit
    lb = lbm.build(store, comp)
    assert any(f"#{a} were scored against different reference data" in n for n in lb.notes)
