"""Leaderboards: best-per-team vs latest, public/private selection, ties, exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
import yaml

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.leaderboard import build as lbm
from referee.platform.leaderboard.render import render_leaderboard
from referee.submissions.submit import submit

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def comp(tmp_path, store):
    # 4 public rows (p*), 4 private rows (q*); label = 1 everywhere
    rows = [f"p{i},1,public" for i in range(4)] + [f"q{i},1,private" for i in range(4)]
    (tmp_path / "ref.csv").write_text("id,label,split\n" + "\n".join(rows) + "\n")
    spec = {"id": "lb", "title": "LB", "data": {"reference": "ref.csv"}, "split": {"column": "split"},
            "prediction": {"type": "label", "columns": ["label"]},
            "metrics": [{"scorer": "accuracy", "primary": True}]}
    (tmp_path / "lb.yaml").write_text(yaml.safe_dump(spec))
    return load_into_store(store, tmp_path / "lb.yaml")


def sub(tmp_path, store, comp, team, pub_right, priv_right, minutes):
    """A submission with ``pub_right`` of 4 public and ``priv_right`` of 4 private rows correct."""
    lines = [f"p{i},{1 if i < pub_right else 0}" for i in range(4)] + \
            [f"q{i},{1 if i < priv_right else 0}" for i in range(4)]
    p = tmp_path / f"{team}-{minutes}.csv"
    p.write_text("id,label\n" + "\n".join(lines) + "\n")
    return submit(store, comp, team, p, now=T0 + dt.timedelta(minutes=minutes))


def test_best_latest_private_selection_and_ties(tmp_path, store, comp):
    a1 = sub(tmp_path, store, comp, "a", 4, 1, 0)   # best public, poor private
    a2 = sub(tmp_path, store, comp, "a", 2, 4, 1)   # worse public, best private (latest)
    b1 = sub(tmp_path, store, comp, "b", 3, 3, 2)
    c1 = sub(tmp_path, store, comp, "c", 3, 2, 3)   # ties b on public, submitted later
    Controller(store, comp).run()

    pub = lbm.build(store, comp, split="public")
    assert [(e.team, e.rank, e.submission_id) for e in pub.entries] == [("a", 1, a1), ("b", 2, b1), ("c", 2, c1)]
    assert pub.entries[0].metrics["accuracy"] == 1.0 and pub.entries[0].n_submissions == 2

    priv = lbm.build(store, comp, split="private")  # a's entry is chosen by public score: a1
    assert [(e.team, e.submission_id) for e in priv.entries] == [("b", b1), ("c", c1), ("a", a1)]
    assert any("best submission on the public split" in n for n in priv.notes)

    peek = lbm.build(store, comp, split="private", selection="split")
    assert peek.entries[0].submission_id == a2

    latest = lbm.build(store, comp, split="public", mode="latest")
    assert {e.team: e.submission_id for e in latest.entries}["a"] == a2

    everything = lbm.build(store, comp, split="public", mode="all")
    assert len(everything.entries) == 4


def test_exports_round_trip(tmp_path, store, comp):
    sub(tmp_path, store, comp, "a", 4, 1, 0)
    sub(tmp_path, store, comp, "b", 1, 3, 1)
    Controller(store, comp).run()
    lb = lbm.build(store, comp, split="public")
    data = json.loads(lb.to_json())
    assert data["primary"] == "accuracy" and data["entries"][0]["team"] == "a"
    rows = list(csv.DictReader(io.StringIO(render_leaderboard(lb, "csv"))))
    assert [r["team"] for r in rows] == ["a", "b"] and float(rows[1]["accuracy"]) == 0.25
    md = render_leaderboard(lb, "md")
    assert md.splitlines()[2].startswith("| rank | team | accuracy")
    assert "| 1 | a | 1.00000" in md


def test_failed_and_rejected_never_ranked(tmp_path, store, comp):
    sub(tmp_path, store, comp, "a", 4, 4, 0)
    Controller(store, comp).run()
    store._execute("UPDATE submissions SET status='failed'")
    assert lbm.build(store, comp).entries == []


def test_primary_metric_first_and_direction(example, store):
    comp = load_into_store(store, example("deepfake") / "competition.yaml")
    good = comp.source_path.parent / "submissions"
    for f, team in (("alpha__good.csv", "alpha"), ("charlie__baseline.csv", "charlie"),
                    ("delta__overconfident.csv", "delta")):
        submit(store, comp, team, good / f)
    Controller(store, comp).run()
    lb = lbm.build(store, comp, split="private")
    assert lb.metric_order[0] == "log_loss" and lb.direction == "minimize"
    values = [e.metrics["log_loss"] for e in lb.entries]
    assert values == sorted(values) and lb.entries[0].team == "alpha"
