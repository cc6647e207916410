"""Bootstrap confidence intervals: coverage, determinism, block-size independence, backends, engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import need, prepare_example

from referee.platform.core.errors import SpecError
from referee.plugins.builtin.scorers import referee_scorers
from referee.scoring import bootstrap as bs
from referee.scoring.bootstrap import (
    IntervalSettings,
    Resampler,
    bootstrap_scores,
    confidence_interval,
)

SCORERS = {s.name: s for s in referee_scorers()}
BUILTIN = {"log_loss", "accuracy", "wer", "cer", "bleu", "chrf", "ter"}
# example -> a sample submission that is scored
SAMPLES = {"deepfake": "alpha__good.csv", "asr": "bravo__errors15.txt", "translation": "bravo__medium.jsonl"}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    return {name: prepare_example(name, root) for name in SAMPLES}


def ratio_stats(values: np.ndarray) -> np.ndarray:
    return np.stack([values, np.ones_like(values)], axis=1)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_p, n, trials = 0.7, 200, 300
    settings = IntervalSettings(resamples=400, seed=5)
    hits = 0
    for _ in range(trials):
        stats = ratio_stats((rng.random(n) < true_p).astype(float))
        lo, hi, _ = confidence_interval(SCORERS["accuracy"], stats, {}, settings)
        hits += lo <= true_p <= hi
    coverage = hits / trials
    # binomial sd of the coverage estimate is about 0.013; the percentile bootstrap runs slightly low
    assert 0.88 <= coverage <= 0.99, coverage


def test_interval_width_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(2)
    widths = []
    for n in (400, 6400):
        lo, hi, _ = confidence_interval(SCORERS["log_loss"], ratio_stats(rng.exponential(size=n)), {},
                                        IntervalSettings(resamples=500))
        widths.append(hi - lo)
    assert 3.0 < widths[0] / widths[1] < 5.5  # sqrt(16) = 4


def test_bootstrap_scores_equal_an_explicit_loop_over_sacrebleu_style_indices():
    rng = np.random.default_rng(3)
    stats = rng.integers(0, 5, size=(57, 10)).astype(float)
    stats[:, 1] += 1
    params = {}
    fast = bootstrap_scores(SCORERS["bleu"].aggregate, stats, params, resamples=64, seed=11)
    idx = np.random.default_rng(11).choice(len(stats), size=(64, len(stats)), replace=True)
    slow = [float(SCORERS["bleu"].aggregate(stats[i].sum(axis=0), params)) for i in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


@pytest.mark.parametrize("kind", ["bootstrap", "randomization"])
@pytest.mark.parametrize("n", [37, 64])
def test_weights_do_not_depend_on_the_block_size(kind, n, monkeypatch):
    whole = Resampler(n, 100, seed=9, kind=kind, block_bytes=10**9)
    small = Resampler(n, 100, seed=9, kind=kind, block_bytes=8 * n * 3)
    assert small.block_rows < 100
    a = np.concatenate([w for _, w in bs._generate(n, 100, 9, kind, whole.block_rows)])
    b = np.concatenate([w for _, w in bs._generate(n, 100, 9, kind, small.block_rows)])
    np.testing.assert_array_equal(a, b)
    # drawn into one reused array (a block is valid until the next): the same numbers
    out = np.full((small.block_rows, n), -1.0)
    c = np.concatenate([w.copy() for _, w in bs._generate(n, 100, 9, kind, small.block_rows, out)])
    np.testing.assert_array_equal(a, c)
    # bootstrap indices drawn a row at a time, or a few rows (not dividing the block), as for many items
    for rows_per_draw in (1, 7):
        monkeypatch.setattr(bs, "DRAW_BYTES", 8 * n * rows_per_draw)
        d = np.concatenate([w for _, w in bs._generate(n, 100, 9, kind, whole.block_rows)])
        np.testing.assert_array_equal(a, d)
    if kind == "bootstrap":  # counts sum to n; the same draws as sacrebleu's rng.choice
        assert (a.sum(axis=1) == n).all()
        idx = np.random.default_rng(9).choice(n, size=(100, n), replace=True)
        np.testing.assert_array_equal(a, [np.bincount(r, minlength=n) for r in idx])
    else:
        np.testing.assert_array_equal(a, np.random.default_rng(9).integers(2, size=(100, n), dtype=bool))


def test_same_seed_same_interval_other_seed_other_interval():
    stats = ratio_stats(np.random.default_rng(4).normal(size=300))
    agg = SCORERS["log_loss"]
    a = confidence_interval(agg, stats, {}, IntervalSettings(seed=1, resamples=300))
    b = confidence_interval(agg, stats, {}, IntervalSettings(seed=1, resamples=300))
    c = confidence_interval(agg, stats, {}, IntervalSettings(seed=2, resamples=300))
    assert a == b
    assert a[:2] != c[:2]


def test_basic_interval_reflects_the_percentile_one():
    samples = np.array([1.0, 2.0, 3.0, 10.0])
    lo, hi = bs.interval_from_samples(samples, 3.0, 0.5, "percentile")
    blo, bhi = bs.interval_from_samples(samples, 3.0, 0.5, "basic")
    assert (blo, bhi) == pytest.approx((6.0 - hi, 6.0 - lo))
    assert bs.interval_from_samples(np.array([np.nan, np.inf]), 1.0) is None


def test_torch_backend_gives_the_numpy_numbers():
    try:
        import torch
    except ImportError as exc:
        need(False, f"PyTorch ({exc}; pip install torch==2.13.0)")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(513, 12))
    for kind in ("bootstrap", "randomization"):
        r = Resampler(513, 130, seed=3, kind=kind, block_bytes=8 * 513 * 40)
        np.testing.assert_allclose(bs.resampled_sums(x, r, "torch"), bs.resampled_sums(x, r, "numpy"),
                                   rtol=1e-12, atol=1e-9)
    stats = ratio_stats(rng.random(400))
    a = confidence_interval(SCORERS["accuracy"], stats, {}, IntervalSettings(backend="numpy"))
    b = confidence_interval(SCORERS["accuracy"], stats, {}, IntervalSettings(backend="torch"))
    assert a[2] == b[2]
    np.testing.assert_allclose(a[:2], b[:2], rtol=1e-12)
    # auto takes torch only where it has a CUDA device to run on
    assert bs.resolve_backend("auto") == ("torch" if torch.cuda.is_available() else "numpy")


def test_settings_are_checked_and_named():
    assert IntervalSettings.from_mapping(None) == IntervalSettings()
    s = IntervalSettings.from_mapping({"resamples": 200, "seed": 3, "confidence": 0.9})
    assert s.signature() == "bootstrap:200|seed:3|ci:90%"
    for bad, word in (({"resamples": 0}, "resamples"), ({"confidence": 1.5}, "confidence"),
                      ({"method": "bca"}, "method"), ({"sead": 1}, "sead"), ({"backend": "jax"}, "backend")):
        with pytest.raises(ValueError, match=word):
            IntervalSettings.from_mapping(bad)


def _with_leaderboard(src: Path, dest: Path, leaderboard: dict) -> Path:
    spec = yaml.safe_load(src.read_text())
    spec["leaderboard"] = leaderboard
    dest.write_text(yaml.safe_dump(spec))
    return dest


def test_every_builtin_scorer_gets_an_interval_through_the_engine(examples):
    from referee.platform.controller.scoring import score_file
    from referee.platform.core.spec import load_competition

    covered = set()
    for name, sample in SAMPLES.items():
        comp = load_competition(examples[name] / "competition.yaml")
        for r in score_file(comp, examples[name] / "submissions" / sample):
            covered.add(r.provenance["scorer"])
            assert r.ci_low is not None and np.isfinite([r.ci_low, r.ci_high]).all(), r
            assert r.ci_low < r.ci_high
            assert r.ci_low - (r.ci_high - r.ci_low) <= r.value <= r.ci_high + (r.ci_high - r.ci_low)
            assert r.provenance["signature"].endswith("|bootstrap:1000|seed:12345|ci:95%")
            assert r.provenance["interval"] == {"method": "percentile", "resamples": 1000, "seed": 12345,
                                                "confidence": 0.95}
    assert BUILTIN <= covered


def test_interval_settings_reach_the_signature_and_can_be_switched_off(examples, tmp_path):
    from referee.platform.controller.scoring import score_file
    from referee.platform.core.spec import load_competition

    ex = examples["deepfake"]
    sub = ex / "submissions" / SAMPLES["deepfake"]
    spec = _with_leaderboard(ex / "competition.yaml", ex / "custom.yaml",
                             {"intervals": {"resamples": 200, "seed": 7, "confidence": 0.9}})
    narrow = score_file(load_competition(spec), sub)
    assert all(r.provenance["signature"].endswith("|bootstrap:200|seed:7|ci:90%") for r in narrow)
    wide = {(r.metric, r.split): r for r in score_file(load_competition(ex / "competition.yaml"), sub)}
    for r in narrow:  # a 90% interval is inside the 95% one (up to resampling noise)
        w = wide[(r.metric, r.split)]
        assert r.ci_high - r.ci_low < w.ci_high - w.ci_low
    off = _with_leaderboard(ex / "competition.yaml", ex / "off.yaml", {"intervals": {"enabled": False}})
    for r in score_file(load_competition(off), sub):
        assert r.ci_low is None and "bootstrap" not in r.provenance["signature"]


def test_bad_interval_settings_are_a_spec_error_at_load(examples, store):
    from referee.platform.controller.competitions import load_into_store

    ex = examples["deepfake"]
    bad = _with_leaderboard(ex / "competition.yaml", ex / "bad.yaml",
                            {"intervals": {"resamples": -5}, "significance": {"correction": "sidak"}})
    with pytest.raises(SpecError) as info:
        load_into_store(store, bad)
    fields = [f for f, _ in info.value.problems]
    assert "leaderboard.intervals.resamples" in fields and "leaderboard.significance.correction" in fields
    assert "resamples" in str(info.value) and "sidak" in str(info.value)
    assert store.list_competitions() == []


def test_checklist_failure_rates_get_intervals_too(tmp_path_factory):
    """The CheckList scorers (per-case [failed, counted] statistics) go through the same bootstrap."""
    import json

    from checklist_support import scored_example

    from referee.platform.store import Store

    ex = scored_example(tmp_path_factory)
    store = Store(ex.workspace)
    try:
        rows = store.scores(ex.better_id)
        assert {"checklist", "checklist_accuracy"} <= {r.provenance["scorer"] for r in rows}
        for r in rows:
            assert r.ci_low is not None and r.ci_high is not None and r.ci_low <= r.ci_high, r
            assert "|bootstrap:1000|seed:12345|ci:95%" in r.provenance["signature"]
    finally:
        store.close()


def test_shared_resamples_give_each_metrics_own_interval():
    from referee.plugins.manager import get_plugin_manager
    from referee.scoring.bootstrap import (
        IntervalSettings,
        confidence_interval,
        confidence_intervals,
    )
    pm = get_plugin_manager()
    rng = np.random.default_rng(3)
    n = 5000  # above the weight cache: resamples are drawn block by block
    s1 = np.stack([rng.random(n), np.ones(n)], 1)
    s2 = np.stack([(rng.random(n) > 0.4).astype(float), np.ones(n)], 1)
    settings = IntervalSettings(resamples=200)
    one_pass = confidence_intervals([(pm.scorer("log_loss"), s1, {}), (pm.scorer("accuracy"), s2, {})], settings)
    separate = [confidence_interval(pm.scorer("log_loss"), s1, {}, settings),
                confidence_interval(pm.scorer("accuracy"), s2, {}, settings)]
    for a, b in zip(one_pass, separate):
        assert a[2] == b[2] and a[0] == pytest.approx(b[0], rel=1e-12) and a[1] == pytest.approx(b[1], rel=1e-12)
    assert one_pass[0][:2] != one_pass[1][:2]
