"""Phases as first-class: their own data, metrics and limits, snapshots per phase, visibility, final picks.

The competition is ``examples/challenge``: a development phase with its own data (all public, log
loss only) and a final phase on the competition's data (public and private, two metrics, a fresh
quota, teams pick up to two final submissions, the private leaderboard published at the end).
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from phase_support import challenge, set_phases

from referee.platform.controller import phases
from referee.platform.controller.competitions import load
from referee.platform.controller.reconcile import Controller
from referee.platform.controller.verify import verify_competition
from referee.platform.core.errors import (
    Conflict,
    LimitExceeded,
    NotAllowed,
    SpecError,
    SubmissionRejected,
)
from referee.platform.core.spec import load_competition
from referee.platform.leaderboard import build as lbm
from referee.submissions.submit import submit

pytestmark = pytest.mark.lifecycle
NOW = dt.datetime.now(dt.timezone.utc)
IN_FINAL = NOW + dt.timedelta(days=1, hours=1)
AFTER = NOW + dt.timedelta(days=3)


@pytest.fixture
def comp_dir(tmp_path):
    return challenge(tmp_path, now=NOW)


def run(store, comp):
    return Controller(store, comp, poll_interval=0.01).run()


def scored(store, comp, *args, **kw):
    """Submit and score at once (the challenge lets a team have at most 2 waiting)."""
    sid = submit(store, comp, *args, **kw)
    run(store, comp)
    return sid


def scores(store, sid):
    return {(r.metric, r.split): r for r in store.scores(sid)}


def test_each_phase_scores_against_its_own_data_with_its_own_metrics(store, comp_dir):
    comp = load(store, comp_dir).competition
    subs = comp_dir / "submissions"
    dev = submit(store, comp, "a", subs / "dev" / "good.csv")
    assert store.get_submission(dev).phase == "dev"
    with pytest.raises(SubmissionRejected, match="item_00401"):  # the final file's ids are not the dev set's
        submit(store, comp, "a", subs / "final" / "good.csv")
    fin = submit(store, comp, "a", subs / "final" / "good.csv", phase="final", now=IN_FINAL)
    assert store.get_submission(fin).phase == "final"
    assert run(store, comp).scored == 2

    dev_scores, fin_scores = scores(store, dev), scores(store, fin)
    assert set(dev_scores) == {("log_loss", "public")}  # the dev phase: one metric, every item public
    assert dev_scores[("log_loss", "public")].n_items == 400
    assert set(fin_scores) == {(m, s) for m in ("log_loss", "accuracy") for s in ("public", "private")}
    assert (fin_scores[("log_loss", "public")].n_items, fin_scores[("log_loss", "private")].n_items) == (300, 700)
    # each score names the reference it was computed against: the phase's own snapshot
    ref_dev = dev_scores[("log_loss", "public")].provenance["reference_sha256"]
    assert ref_dev != fin_scores[("log_loss", "public")].provenance["reference_sha256"]
    assert str(comp.for_phase("dev").reference_path).startswith(str(store.root / "data"))

    dev_lb, fin_lb = lbm.build(store, comp, phase="dev"), lbm.build(store, comp, phase="final")
    assert dev_lb.metric_order == ["log_loss"] and [e.submission_id for e in dev_lb.entries] == [dev]
    assert fin_lb.metric_order == ["log_loss", "accuracy"] and [e.submission_id for e in fin_lb.entries] == [fin]
    assert lbm.build(store, comp, phase="final", split="private").entries[0].submission_id == fin
    assert {v.status for v in verify_competition(store, comp)} == {"same"}  # each against its phase's data


def test_quotas_are_fresh_in_each_phase(store, comp_dir):
    comp = load(store, comp_dir).competition
    subs = comp_dir / "submissions"
    for _ in range(4):  # dev allows 20 a day
        scored(store, comp, "a", subs / "dev" / "fair.csv")
    for _ in range(3):  # the final phase allows 3 a day: the dev submissions do not count
        scored(store, comp, "a", subs / "final" / "fair.csv", phase="final", now=IN_FINAL)
    with pytest.raises(LimitExceeded, match="3 submissions per 24 hours .* in phase 'final'"):
        submit(store, comp, "a", subs / "final" / "fair.csv", phase="final", now=IN_FINAL)
    q = phases.quota(store, comp, "a", "final", now=IN_FINAL)
    assert (q.used_today, q.remaining_today, q.used_total, q.remaining_total, q.remaining) == (3, 0, 3, 7, 0)
    assert q.next_slot_at is not None
    assert phases.quota(store, comp, "a", "dev").remaining == 16
    assert phases.quota(store, comp, "b", "final", now=IN_FINAL).remaining == 3


def test_reload_snapshots_each_phase_and_reruns_only_the_changed_one(store, comp_dir):
    comp = load(store, comp_dir).competition
    subs = comp_dir / "submissions"
    dev = submit(store, comp, "a", subs / "dev" / "good.csv")
    fin = submit(store, comp, "a", subs / "final" / "good.csv", phase="final", now=IN_FINAL)
    run(store, comp)
    ref = comp_dir / "data" / "dev" / "reference.csv"
    lines = ref.read_text().splitlines()
    lines[1] = lines[1].replace(",0,", ",1,") if ",0," in lines[1] else lines[1].replace(",1,", ",0,")
    ref.write_text("\n".join(lines) + "\n")
    # the snapshot keeps scoring as it was until the host reloads
    assert store.get_competition("challenge").for_phase("dev").reference_path == comp.for_phase("dev").reference_path
    result = load(store, comp_dir)
    assert result.changed == ["reference (phase dev)"] and result.stale == [dev]
    assert fin not in result.stale
    again = load(store, comp_dir)
    assert again.changed == [] and again.stale == []


def test_final_picks_decide_the_private_entry(store, comp_dir):
    comp = load(store, comp_dir).competition
    subs = comp_dir / "submissions" / "final"
    a_good = scored(store, comp, "a", subs / "good.csv", phase="final", now=IN_FINAL)
    a_poor = scored(store, comp, "a", subs / "poor.csv", phase="final", now=IN_FINAL)
    a_fair = scored(store, comp, "a", subs / "fair.csv", phase="final", now=IN_FINAL)
    b_fair = scored(store, comp, "b", subs / "fair.csv", phase="final", now=IN_FINAL)

    def private_entry(team):
        lb = lbm.build(store, comp, phase="final", split="private")
        return next(e.submission_id for e in lb.entries if e.team == team), lb.notes

    assert private_entry("a")[0] == a_good  # no picks: the best on the public split
    phases.pick(store, comp, a_poor, "a", by="ada", now=IN_FINAL)
    entry, notes = private_entry("a")
    assert entry == a_poor and any("best of the submissions it picked (at most 2)" in n for n in notes)
    phases.pick(store, comp, a_fair, "a", by="ada", now=IN_FINAL)
    assert private_entry("a")[0] == a_fair  # the better of the two picks on the private split
    assert private_entry("b")[0] == b_fair  # picked none: best-public
    with pytest.raises(Conflict, match="already picked 2"):
        phases.pick(store, comp, a_good, "a", by="ada", now=IN_FINAL)
    with pytest.raises(Exception, match="no submission #"):  # another team's submission
        phases.pick(store, comp, b_fair, "a", by="ada", now=IN_FINAL)
    assert phases.unpick(store, comp, a_poor, "a", by="ada", now=IN_FINAL)
    phases.pick(store, comp, a_good, "a", by="ada", now=IN_FINAL)
    assert {p.submission_id for p in store.picks("challenge", "final", "a")} == {a_fair, a_good}
    # picks are final once the phase has ended, or once the private leaderboard is published
    with pytest.raises(Conflict, match="picks are final"):
        phases.unpick(store, comp, a_good, "a", by="ada", now=AFTER)
    phases.publish(store, comp, "final", by="host")
    with pytest.raises(Conflict, match="picks are final"):
        phases.pick(store, comp, a_poor, "a", by="ada", now=IN_FINAL)
    with pytest.raises(NotAllowed, match="nothing to pick"):  # dev: best-public, no picks
        phases.pick(store, comp, submit(store, comp, "a", comp_dir / "submissions" / "dev" / "good.csv"), "a",
                    by="ada")


def test_leaderboard_visibility_by_spec_end_and_host(store, comp_dir):
    comp = load(store, comp_dir).competition

    def vis(phase, split, now=IN_FINAL):
        return phases.board_state(store, comp, phase, split, now).visibility

    assert (vis("final", "public"), vis("final", "private"), vis("dev", "private")) == ("public", "hidden", "hidden")
    assert vis("final", "private", AFTER) == "public"  # publish_at_end
    assert vis("dev", "private", AFTER) == "hidden"  # dev's private board is never published by itself
    assert phases.team_score_splits(store, comp, "final", IN_FINAL) == ["public"]
    assert phases.team_score_splits(store, comp, "final", AFTER) == ["public", "private"]
    state = phases.set_visibility(store, comp, "dev", "public", "host", by="olga")
    assert (state.visibility, state.switched_by, state.setting) == ("host", "olga", "public")
    assert phases.team_score_splits(store, comp, "dev") == ["public"]  # host: teams still see their scores
    phases.set_visibility(store, comp, "dev", "public", "hidden", by="olga")
    assert phases.team_score_splits(store, comp, "dev") == []
    phases.set_visibility(store, comp, "dev", "public", None, by="olga")  # back to the spec
    assert vis("dev", "public") == "public"
    assert phases.publish(store, comp, "final", by="olga").published
    assert vis("final", "private") == "public"
    with pytest.raises(SpecError, match="no phase named 'nope'"):
        phases.publish(store, comp, "nope", by="olga")
    with pytest.raises(Exception, match="visibility must be one of"):
        phases.set_visibility(store, comp, "dev", "public", "everyone", by="olga")
    info = {p["name"]: p for p in phases.phase_info(store, comp, IN_FINAL)}
    assert info["final"]["leaderboards"]["private"]["visibility"] == "public"
    assert info["final"]["final_selection"] == {"rule": "pick", "max": 2} and not info["final"]["picks_open"]
    assert info["dev"]["metrics"] == [{"key": "log_loss", "scorer": "log_loss", "primary": True}]
    assert "reference" not in str(info)  # no data paths


def test_phase_spec_errors_name_the_phase_field(comp_dir):
    spec = comp_dir / "competition.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["phases"][0]["metrics"] = [{"scorer": "log_loss"}, {"scorer": "log_loss"}]
    spec.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"phases\[0\]: metrics: duplicate metric names \['log_loss'\]"):
        load_competition(spec)
    doc["phases"][0]["metrics"] = [{"scorer": "log_los"}]
    doc["phases"][0]["data"]["reference"] = "data/dev/missing.csv"
    doc["phases"][1]["final_selection"] = "pick"
    doc["phases"][1]["private_leaderboard"] = "sometimes"
    spec.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"phases\[1\]\.private_leaderboard"):
        load_competition(spec)
    doc["phases"][1]["private_leaderboard"] = "publish_at_end"
    spec.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"phases\[0\]\.data\.reference: file not found"):
        load_competition(spec)
    doc["phases"][0]["data"]["reference"] = "data/dev/reference.csv"
    spec.write_text(yaml.safe_dump(doc))
    comp = load_competition(spec)
    assert comp.phases[1].final_selection.rule == "pick" and comp.phases[1].final_selection.max == 2
    from referee.platform.controller.competitions import validate
    with pytest.raises(SpecError, match=r"phases\[0\]\.metrics\[0\]\.scorer: no scorer named 'log_los'"):
        validate(comp)


def test_single_phase_views_are_the_competition(store, example):
    comp = load(store, example("deepfake")).competition
    view = comp.for_phase()
    assert view.phase_name == "final" and view.reference_path == comp.reference_path
    assert view.metrics == comp.metrics and view.limits == comp.limits
    with pytest.raises(ValueError, match="not a competition spec"):
        view.to_json()  # a view is never stored
    assert comp.for_phase("gone", strict=False) is comp


def test_a_phase_that_closes_takes_no_more_submissions(store, comp_dir):
    set_phases(comp_dir, dev_end=NOW - dt.timedelta(minutes=1), final_end=NOW + dt.timedelta(days=1))
    comp = load(store, comp_dir).competition
    with pytest.raises(SubmissionRejected, match="phase 'dev' of 'challenge' is not open now"):
        submit(store, comp, "a", comp_dir / "submissions" / "dev" / "good.csv", phase="dev")
    sid = submit(store, comp, "a", comp_dir / "submissions" / "final" / "good.csv")
    assert store.get_submission(sid).phase == "final"


def test_a_phase_names_only_the_limits_it_changes(comp_dir):
    comp = load_competition(comp_dir)
    assert comp.limits.model_dump() == {"per_team_per_day": 10, "total": None, "concurrent": 2}
    assert comp.for_phase("dev").limits.model_dump() == {"per_team_per_day": 20, "total": None, "concurrent": 2}
    assert comp.for_phase("final").limits.model_dump() == {"per_team_per_day": 3, "total": 10, "concurrent": 2}


def test_plugins_derive_for_each_phase_with_its_own_data(store, comp_dir):
    """``referee_derive_competition`` sees the competition and each phase view with its own data; what it
    derives for a phase is used when that phase's submissions are scored."""
    from referee.platform.core.spec import Derived
    from referee.plugins import hookimpl
    from referee.plugins.manager import PluginManager, reset_runtime

    seen = []

    class Clipper:
        __name__ = "clipper"

        @hookimpl
        def referee_derive_competition(self, competition):
            seen.append(competition.phase_name)
            eps = 0.2 if competition.phase_name == "dev" else 1e-15
            return Derived(metric_params={"log_loss": {"eps": eps}})

    reset_runtime(PluginManager(entrypoints=False, extra=[Clipper()]))
    comp = load(store, comp_dir).competition
    assert seen == [None, "dev"]  # the final phase has no data of its own: the competition's is its
    assert comp.for_phase("dev").metric_params("log_loss")["eps"] == 0.2
    assert comp.for_phase("final").metric_params("log_loss")["eps"] == 1e-15
    sid = scored(store, comp, "a", comp_dir / "submissions" / "dev" / "good.csv")
    (row,) = store.scores(sid)
    assert row.provenance["params"]["eps"] == 0.2
