"""Paired significance: agreement with sacrebleu, corrections, tiers, and the leaderboard columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import prepare_example

from referee.platform.core.errors import SpecError
from referee.platform.core.predictions import Predictions
from referee.platform.leaderboard.render import render_leaderboard
from referee.plugins.builtin.scorers import referee_scorers
from referee.scoring.significance import (
    PairedTest,
    SignificanceSettings,
    adjust_p_values,
    assign_tiers,
    correction_can_reject,
)

SCORERS = {s.name: s for s in referee_scorers()}
WORDS = ("the cat dog house runs quickly slowly over under a an big small red blue green "
         "hello world model data learning system paper results table river city").split()
RESAMPLES = 1000


def _systems() -> tuple[list[str], list[tuple[str, list[str]]]]:
    """References and six systems: the first as baseline, then near-ties to clear losers."""
    rng = np.random.default_rng(3)
    refs = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 16)))) for _ in range(300)]

    def noisy(rate: float, seed: int) -> list[str]:
        r = np.random.default_rng(seed)
        return [" ".join(w if r.random() > rate else str(r.choice(WORDS)) for w in ref.split()) for ref in refs]

    rates = (0.30, 0.30, 0.31, 0.33, 0.36, 0.45)
    return refs, [(f"sys{i}", noisy(rate, i + 1)) for i, rate in enumerate(rates)]


@pytest.fixture(scope="module")
def mt_systems():
    refs, systems = _systems()
    stats = {}
    for metric in ("bleu", "chrf"):
        stats[metric] = [SCORERS[metric].statistics(
            Predictions(type="text", columns=["text"], values=h, raw={"text": h}), refs, {}) for _, h in systems]
    return refs, systems, stats


def _sacrebleu_p_values(monkeypatch, refs, systems, metric: str, test_type: str, seed: int) -> list[float]:
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest as SacrePairedTest

    monkeypatch.setenv("SACREBLEU_SEED", str(seed))
    cls = {"bleu": BLEU, "chrf": CHRF}[metric]
    _, scores = SacrePairedTest(systems, {metric: cls()}, [refs], test_type=test_type, n_samples=RESAMPLES)()
    results = next(v for k, v in scores.items() if k != "System")
    return [r.p_value for r in results[1:]]


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
@pytest.mark.parametrize("method,test_type", [("paired_bootstrap", "bs"), ("approximate_randomization", "ar")])
def test_p_values_agree_with_sacrebleu(monkeypatch, mt_systems, metric, method, test_type):
    refs, systems, stats = mt_systems
    sacre = np.array(_sacrebleu_p_values(monkeypatch, refs, systems, metric, test_type, seed=999))
    others = np.arange(1, len(systems))
    baseline = np.zeros(len(others), dtype=int)

    # Independent draws (our seed is not sacrebleu's): equal within Monte Carlo error.
    ours = PairedTest.from_systems(SCORERS[metric].aggregate, {}, stats[metric], method=method,
                                   resamples=RESAMPLES, seed=12345).p_values(baseline, others)
    se = np.sqrt(2 * np.maximum(sacre * (1 - sacre), 1e-3) / RESAMPLES)
    assert np.all(np.abs(ours - sacre) <= 4 * se + 2 / RESAMPLES), (ours, sacre)
    assert 0.02 < sacre.max() < 0.99 and sacre.min() < 0.01  # the systems span the interesting range

    # The same seed draws the same resamples as sacrebleu: the same p-values up to float32 rounding.
    same = PairedTest.from_systems(SCORERS[metric].aggregate, {}, stats[metric], method=method,
                                   resamples=RESAMPLES, seed=999).p_values(baseline, others)
    np.testing.assert_allclose(same, sacre, atol=2.5 / RESAMPLES)


def test_all_pairs_share_resamples_and_the_matrix_is_symmetric(mt_systems):
    _, systems, stats = mt_systems
    test = PairedTest.from_systems(SCORERS["bleu"].aggregate, {}, stats["bleu"], resamples=300)
    m = test.p_matrix()
    assert m.shape == (len(systems),) * 2
    np.testing.assert_array_equal(m, m.T)
    assert np.isnan(np.diag(m)).all()
    # p of one pair does not depend on which other systems are in the test (same draws per item)
    pair = PairedTest.from_systems(SCORERS["bleu"].aggregate, {}, [stats["bleu"][0], stats["bleu"][3]],
                                   resamples=300)
    assert pair.p_values([0], [1])[0] == pytest.approx(m[0, 3])


def test_holm_and_bonferroni_adjustments():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjust_p_values(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(adjust_p_values(p, "none"), p)
    assert adjust_p_values([0.5, 0.9], "holm").max() <= 1.0
    with pytest.raises(ValueError):
        adjust_p_values(p, "sidak")


def _accuracy_stats(correct: np.ndarray) -> np.ndarray:
    return np.stack([correct.astype(float), np.ones(len(correct))], axis=1)


@pytest.mark.parametrize("method", ["paired_bootstrap", "approximate_randomization"])
def test_identical_systems_share_a_tier_clearly_different_ones_do_not(method):
    rng = np.random.default_rng(8)
    strong = rng.random(800) < 0.9
    weak = rng.random(800) < 0.6
    near_weak = weak.copy()
    near_weak[np.flatnonzero(weak)[:3]] = False  # three items worse: not a detectable difference
    systems = [strong, strong.copy(), weak, near_weak]
    test = PairedTest.from_systems(SCORERS["accuracy"].aggregate, {}, [_accuracy_stats(s) for s in systems],
                                   method=method, resamples=500, seed=1)
    assert test.p_values([0], [1])[0] == 1.0  # equal scores: no evidence of a difference
    tiers = assign_tiers(4, lambda h, js: test.p_values(np.full(len(js), h), js), alpha=0.05, correction="holm")
    assert tiers.tier == [1, 1, 2, 2]
    assert tiers.head == [0, 0, 2, 2]
    assert tiers.p_vs_head[2] < 0.01 and tiers.p_vs_head_adjusted[3] > 0.05
    # three items apart, all one way
    p = test.p_values([2], [3])[0]
    if method == "approximate_randomization":  # estimates the exact sign test: 2/8
        assert abs(p - 0.25) < 0.08, p
    else:  # sacrebleu's formula on the same draws (rng.choice), written out as a loop
        idx = np.random.default_rng(1).choice(800, size=(500, 800), replace=True)
        diffs = np.array([abs(weak[i].mean() - near_weak[i].mean()) for i in idx])
        observed = abs(weak.mean() - near_weak.mean())
        assert p == pytest.approx((np.sum(diffs - diffs.mean() > observed) + 1) / 501, abs=1e-12)
        assert p < 0.2  # resampling three discordant items makes the bootstrap bolder than the sign test


def test_tier_walk_compares_with_the_tier_head_not_the_neighbour():
    # a chain of small steps: each entry ties with its neighbour, but the fourth is far below the first
    table = {(0, 1): 0.5, (0, 2): 0.2, (0, 3): 0.001, (3, 4): 0.6}

    def p_against(head, others):
        return np.array([table.get((head, int(j)), 0.9) for j in others])

    tiers = assign_tiers(5, p_against, alpha=0.05, correction="none")
    assert tiers.tier == [1, 1, 1, 2, 2]
    # with Holm over the family of 4 comparisons 0.001 * 4 still rejects; Bonferroni at alpha 0.003 not
    assert assign_tiers(5, p_against, alpha=0.05, correction="holm").tier == [1, 1, 1, 2, 2]
    assert assign_tiers(5, p_against, alpha=0.003, correction="bonferroni").tier == [1] * 5


def test_settings_and_resample_floor():
    s = SignificanceSettings.from_mapping({"method": "approximate_randomization"}, resamples=50, seed=None)
    assert (s.method, s.resamples, s.seed) == ("approximate_randomization", 50, 12345)
    with pytest.raises(ValueError, match="alpha"):
        SignificanceSettings.from_mapping({"alpha": 2})
    assert correction_can_reject(10, SignificanceSettings(resamples=1000))
    assert not correction_can_reject(100, SignificanceSettings(resamples=1000))  # 1/1001 * 99 > 0.05
    assert correction_can_reject(100, SignificanceSettings(resamples=1000, correction="none"))


# -------------------------------------------------------------------------- through the platform

@pytest.fixture(scope="module")
def translation_ws(tmp_path_factory):
    """The translation example loaded, its five good samples submitted and scored by the Controller."""
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    root = tmp_path_factory.mktemp("significance")
    ex = prepare_example("translation", root)
    store = Store(root / "ws")
    comp = load_into_store(store, ex / "competition.yaml")
    for name in ("alpha__very_good", "bravo__medium", "charlie__poor", "delta__tied", "echo__tied"):
        submit(store, comp, name.split("__")[0], ex / "submissions" / f"{name}.jsonl")
    summary = Controller(store, comp).run()
    assert summary.scored == 5
    yield store, comp, ex
    store.close()


def test_leaderboard_shows_interval_and_tier(translation_ws):
    from referee.platform.leaderboard.build import build

    store, comp, _ = translation_ws
    lb = build(store, comp, split="public")
    assert lb.columns_extra[-3:] == ["tier", "p_vs_leader", "p_vs_prev"] or \
        {"tier", "p_vs_leader", "p_vs_prev"} <= set(lb.columns_extra)
    by_team = {e.team: e for e in lb.entries}
    assert [e.team for e in lb.entries][0] == "alpha"
    for e in lb.entries:
        lo, hi = e.intervals["bleu"]
        assert lo < e.metrics["bleu"] < hi
    assert by_team["alpha"].extra["tier"] == 1 and by_team["alpha"].extra["p_vs_leader"] is None
    assert by_team["delta"].extra["tier"] == by_team["echo"].extra["tier"]  # identical files
    tiers = [e.extra["tier"] for e in lb.entries]
    assert tiers == sorted(tiers) and len(set(tiers)) >= 3  # very good, medium, tied pair, poor
    assert by_team["charlie"].extra["tier"] > by_team["alpha"].extra["tier"]
    second = lb.entries[1]
    assert second.extra["p_vs_prev"] == second.extra["p_vs_leader"] < 0.05
    md = render_leaderboard(lb, "md")
    assert "| tier |" in md and " [" in md
    assert any("share a tier" in n for n in lb.notes)
    csv_head = render_leaderboard(lb, "csv").splitlines()[0].split(",")
    assert "tier" in csv_head and "bleu_ci_low" in csv_head
    private = build(store, comp, split="private")
    assert {e.team for e in private.entries} == set(by_team) and "tier" in private.columns_extra


def test_significance_command_prints_matrix_and_tiers(translation_ws):
    from click.testing import CliRunner

    from referee.platform.cli.main import cli

    store, comp, _ = translation_ws
    runner = CliRunner()
    res = runner.invoke(cli, ["-w", str(store.root), "significance", comp.id, "--json",
                              "--method", "approximate_randomization", "--resamples", "500"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["method"] == "approximate_randomization" and data["resamples"] == 500
    m = np.array([[np.nan if v is None else v for v in row] for row in data["p_values"]])
    assert m.shape == (5, 5) and np.allclose(m, m.T, equal_nan=True)
    teams = [e["team"] for e in data["entries"]]
    d, e = teams.index("delta"), teams.index("echo")
    assert m[d, e] == 1.0 and data["entries"][d]["tier"] == data["entries"][e]["tier"]
    table = runner.invoke(cli, ["-w", str(store.root), "significance", comp.id, "--split", "private"])
    assert table.exit_code == 0, table.output
    assert "tier" in table.output and "alpha" in table.output


def test_entry_without_statistics_gets_no_tier_and_a_note(translation_ws, tmp_path):
    from referee.platform.leaderboard.build import build
    from referee.plugins.manager import get_runtime

    store, comp, _ = translation_ws
    lb = build(store, comp, split="public", enrich=False)
    charlie = next(e for e in lb.entries if e.team == "charlie")
    sha = store._query("SELECT stats_sha256 FROM scores WHERE submission_id=? AND metric='bleu'",
                      (charlie.submission_id,))[0][0]
    blob = store.blob_path(sha)
    moved = tmp_path / "blob"
    blob.rename(moved)
    try:
        get_runtime().clear()  # the cached comparison still holds charlie's statistics
        lb = build(store, comp, split="public")
        row = next(e for e in lb.entries if e.team == "charlie")
        assert "tier" not in row.extra
        assert any("has no tier" in n and "charlie" in n for n in lb.notes)
        assert all("tier" in e.extra for e in lb.entries if e.team != "charlie")
    finally:
        moved.rename(blob)
        get_runtime().clear()


def test_bad_significance_settings_are_a_typed_error(translation_ws, tmp_path):
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.store import Store

    _, _, ex = translation_ws
    spec = yaml.safe_load((ex / "competition.yaml").read_text())
    spec["leaderboard"] = {"significance": {"method": "t-test"}}
    bad = ex / "bad_significance.yaml"
    bad.write_text(yaml.safe_dump(spec))
    store = Store(tmp_path / "ws")
    try:
        with pytest.raises(SpecError, match="leaderboard.significance"):
            load_into_store(store, bad)
    finally:
        store.close()


def test_resampled_scores_equal_an_explicit_loop_with_shared_columns():
    # accuracy's second column (1 per item) is the same for every system and is resampled once
    from referee.scoring.significance import shared_columns

    rng = np.random.default_rng(12)
    stats = [_accuracy_stats(rng.random(150) < q) for q in (0.5, 0.6, 0.7)]
    test = PairedTest.from_systems(SCORERS["accuracy"].aggregate, {}, stats, resamples=40, seed=4)
    assert shared_columns(np.concatenate(stats, axis=1), 2) == [1]
    idx = np.random.default_rng(4).choice(150, size=(40, 150), replace=True)
    for s, st in enumerate(stats):
        expected = [st[i, 0].sum() / st[i, 1].sum() for i in idx]
        np.testing.assert_allclose(test.resampled[:, s], expected, rtol=1e-12)
