"""The metric built-ins agree with sklearn / scipy, and general scorers resample like a plain loop.

Every new built-in is compared with its reference library to 1e-12 on several data sets (continuous
scores, heavy ties, constant predictions, a missing class, multi-class); weighted scores are compared
with the library on the resampled (repeated) items; intervals and paired tests of general scorers
with a loop over the same seeded resamples.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from referee.platform.core.predictions import Predictions
from referee.plugins.builtin.scorers import referee_scorers
from referee.scoring.bootstrap import IntervalSettings, Resampler, general_interval, interval_from_samples
from referee.scoring.significance import GeneralPairedTest, PairedTest, paired_test

pytestmark = pytest.mark.metrics

SCORERS = {s.name: s for s in referee_scorers()}
TOL = 1e-12


def numeric(values: np.ndarray, columns: list[str] | None = None, kind: str = "probability") -> Predictions:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    columns = columns or ["p"]
    return Predictions(type=kind, columns=columns, values=values,
                       raw={c: [repr(float(v)) for v in values[:, j]] for j, c in enumerate(columns)})


def labels(values: list[str]) -> Predictions:
    return Predictions(type="label", columns=["label"], values=values, raw={"label": values})


def value(name: str, preds: Predictions, refs: list, params: dict | None = None, weights=None):
    """A scorer's value through its ScorerInfo, for either shape."""
    scorer, params = SCORERS[name], params or {}
    if scorer.general:
        return scorer.score(preds, refs, params, weights)
    stats = scorer.statistics(preds, refs, params)
    if weights is None:
        return float(scorer.aggregate(stats.sum(axis=0), params))
    return scorer.aggregate(np.asarray(weights) @ stats, params)


def repeat(a, counts: np.ndarray):
    return np.repeat(np.asarray(a), counts.astype(int), axis=0)


def quietly(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def same(a, b) -> bool:
    """Equal to 1e-12 (relative to the size of the value when it is above 1), nan where the other is nan."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    close = np.abs(a - b) <= TOL * np.maximum(1.0, np.abs(b))
    return a.shape == b.shape and bool(np.all(close | (np.isnan(a) & np.isnan(b))))


def bootstrap_rows(n: int, rows: int = 8, seed: int = 3) -> np.ndarray:
    return Resampler(n, rows, seed).weights()


# ---------------------------------------------------------------- binary data sets

def binary_sets():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.35).astype(int)
    continuous = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    yield "continuous", y, continuous
    yield "ties", y, np.round(continuous, 1)  # few distinct scores: many ties within and across classes
    yield "constant", y, np.full(n, 0.5)
    yield "perfect", y, y * 0.9 + 0.05
    yield "tiny", np.array([0, 1, 1]), np.array([0.2, 0.2, 0.9])
    yield "one class missing", np.zeros(50, dtype=int), rng.random(50)
    yield "only positives", np.ones(30, dtype=int), rng.random(30)


@pytest.mark.parametrize("name, library", [("roc_auc", "roc_auc_score"),
                                           ("average_precision", "average_precision_score")])
def test_binary_ranking_metrics_equal_sklearn(name, library):
    import sklearn.metrics as skm

    fn = getattr(skm, library)
    for label, y, p in binary_sets():
        refs = [str(v) for v in y]
        expected = quietly(fn, y, p)
        got = value(name, numeric(p), refs)
        assert same(got, expected), (label, got, expected)
        # scores need not be probabilities; custom labels
        shifted = numeric(p * 10 - 3, kind="score")
        named = ["yes" if v else "no" for v in y]
        assert same(value(name, shifted, named, {"positive_label": "yes", "negative_label": "no"}), expected), label
        # a bootstrap resample is the library on the repeated items
        if len(y) > 3:
            w = bootstrap_rows(len(y))
            looped = [quietly(fn, repeat(y, row), repeat(p, row)) for row in w]
            assert same(value(name, numeric(p), refs, weights=w), looped), label
            assert same(value(name, numeric(p), refs, weights=w[0]), looped[0]), label


def test_auc_with_many_distinct_scores_takes_the_sorted_path_and_agrees():
    from sklearn.metrics import roc_auc_score

    from referee.scoring.metrics import ranking

    rng = np.random.default_rng(11)
    n = 2 * ranking._HISTOGRAM_SCORES
    y = (rng.random(n) < 0.4).astype(int)
    p = rng.normal(0.3 * y, 1.0)
    p[:50] = p[50]  # and a few ties
    refs = [str(v) for v in y]
    (task,) = ranking.roc_auc.prepare(numeric(p, kind="score"), refs, ranking.roc_auc.resolve({}))[1]
    assert task.codes is None and task.tied is not None
    w = bootstrap_rows(n, 6)
    looped = [roc_auc_score(y, p, sample_weight=row) for row in w]
    assert same(value("roc_auc", numeric(p, kind="score"), refs, weights=w), looped)
    assert same(value("roc_auc", numeric(p, kind="score"), refs), roc_auc_score(y, p))
    # weights that are not whole counts take the float prefix sum, and agree too
    fractional = rng.random((3, n)) * 2.5
    fractional[1, :7] = 0.0
    looped = [roc_auc_score(y, p, sample_weight=row) for row in fractional]
    assert same(value("roc_auc", numeric(p, kind="score"), refs, weights=fractional), looped)
    # one class without weight: undefined (nan) in that row only
    w = bootstrap_rows(n, 2)
    w[0, y == 1] = 0.0
    got = value("roc_auc", numeric(p, kind="score"), refs, weights=w)
    assert np.isnan(got[0]) and same(got[1], roc_auc_score(y, p, sample_weight=w[1]))


def test_one_class_missing_gives_the_library_answer():
    y = np.zeros(20, dtype=int)
    p = np.linspace(0, 1, 20)
    assert np.isnan(value("roc_auc", numeric(p), [str(v) for v in y]))  # sklearn: nan with a warning
    assert value("average_precision", numeric(p), [str(v) for v in y]) == 0.0  # sklearn: 0.0


@pytest.mark.parametrize("name", ["roc_auc", "average_precision"])
def test_multiclass_one_vs_rest_macro_equals_sklearn(name):
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.preprocessing import label_binarize

    rng = np.random.default_rng(1)
    classes = ["cat", "dog", "eel", "fox"]
    for label, ties in (("continuous", None), ("ties", 1)):
        n = 300
        truth = rng.integers(0, 4, n)
        probs = rng.dirichlet(np.ones(4), n) + np.eye(4)[truth] * 0.3
        probs /= probs.sum(axis=1, keepdims=True)
        if ties:
            probs = np.round(probs, ties)
            probs /= probs.sum(axis=1, keepdims=True)
        refs = [classes[t] for t in truth]

        def library(t, p):
            if name == "roc_auc":
                return quietly(roc_auc_score, t, p, multi_class="ovr", average="macro", labels=[0, 1, 2, 3])
            return quietly(average_precision_score, label_binarize(t, classes=[0, 1, 2, 3]), p, average="macro")

        assert same(value(name, numeric(probs, classes), refs), library(truth, probs)), label
        w = bootstrap_rows(n, 5)
        looped = [library(repeat(truth, row), repeat(probs, row)) for row in w]
        assert same(value(name, numeric(probs, classes), refs, weights=w), looped), label
    # a class no reference has: sklearn's answer (nan for AUC, that class's AP is 0)
    truth = rng.integers(0, 3, 100)
    probs = rng.dirichlet(np.ones(4), 100)
    refs = [classes[t] for t in truth]
    assert same(value(name, numeric(probs, classes), refs), library(truth, probs))


def test_macro_f1_equals_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    classes = ["a", "b", "c", "d"]
    truth = [classes[i] for i in rng.integers(0, 4, 300)]
    cases = {
        "noisy": [t if rng.random() < 0.6 else classes[rng.integers(0, 4)] for t in truth],
        "constant": ["a"] * 300,
        "extra class predicted": [t if rng.random() < 0.7 else "z" for t in truth],
        "class never predicted": [t if t != "d" else "a" for t in truth],
    }
    for label, guess in cases.items():
        expected = quietly(f1_score, truth, guess, average="macro")
        assert same(value("macro_f1", labels(guess), truth), expected), label
        w = bootstrap_rows(300)
        looped = [quietly(f1_score, repeat(truth, row), repeat(guess, row), average="macro") for row in w]
        assert same(value("macro_f1", labels(guess), truth, weights=w), looped), label
    # one probability column per class: the largest wins
    probs = rng.dirichlet(np.ones(4), 300)
    guess = [classes[j] for j in probs.argmax(axis=1)]
    assert same(value("macro_f1", numeric(probs, classes), truth), f1_score(truth, guess, average="macro"))
    with pytest.raises(ValueError, match="one column per class"):
        value("macro_f1", numeric(probs[:, 0]), truth)


# ---------------------------------------------------------------- numeric references

def regression_sets():
    rng = np.random.default_rng(4)
    x = rng.normal(size=500)
    y = 2 * x + rng.normal(size=500)
    yield "continuous", x, y
    yield "ties", np.round(x), np.round(y)  # ties in both columns
    yield "constant prediction", np.full(500, 1.5), y
    yield "anticorrelated", -x, x + 0.01 * rng.normal(size=500)
    yield "large offset", x + 1e6, y  # well conditioned all the same
    yield "two items", np.array([1.0, 2.0]), np.array([3.0, 1.0])


def test_correlations_equal_scipy():
    from scipy.stats import pearsonr, spearmanr

    for label, x, y in regression_sets():
        refs = [repr(float(v)) for v in y]
        preds = numeric(x, kind="score")
        for name, fn in (("spearman", spearmanr), ("pearson", pearsonr)):
            expected = quietly(fn, x, y).statistic
            assert same(value(name, preds, refs), expected), (name, label, value(name, preds, refs), expected)
            if len(x) > 2 and label != "constant prediction":
                w = bootstrap_rows(len(x))
                looped = [quietly(fn, repeat(x, row), repeat(y, row)).statistic for row in w]
                assert same(value(name, preds, refs, weights=w), looped), (name, label)


def test_errors_equal_sklearn():
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    for label, x, y in regression_sets():
        refs = [repr(float(v)) for v in y]
        preds = numeric(x, kind="score")
        for name, fn in (("rmse", root_mean_squared_error), ("mae", mean_absolute_error)):
            assert same(value(name, preds, refs), fn(y, x)), (name, label)
            w = bootstrap_rows(len(x))
            assert same(value(name, preds, refs, weights=w), [fn(repeat(y, row), repeat(x, row)) for row in w])


def test_numeric_scorers_reject_what_they_cannot_score():
    preds = numeric(np.array([0.1, 0.2]), kind="score")
    with pytest.raises(ValueError, match=r"spearman: reference 'high' at item 1 is not a number"):
        value("spearman", preds, ["1.5", "high"])
    with pytest.raises(ValueError, match="rmse: reference 'inf' at item 0 is not a finite number"):
        value("rmse", preds, ["inf", "2"])
    with pytest.raises(ValueError, match="one prediction column"):
        value("mae", numeric(np.ones((2, 2)), ["a", "b"], kind="score"), ["1", "2"])
    with pytest.raises(ValueError, match="scores probability or score predictions, got 'label'"):
        value("roc_auc", labels(["1", "0"]), ["1", "0"])
    with pytest.raises(ValueError, match="reference 'maybe' at item 1 is neither positive_label"):
        value("roc_auc", numeric(np.array([0.1, 0.7])), ["1", "maybe"])


@pytest.mark.parametrize("name, params, message", [
    ("roc_auc", {"pos_label": "1"}, r"roc_auc: unknown parameter\(s\) 'pos_label'"),
    ("average_precision", {"positive_label": "x", "negative_label": "x"}, "must differ"),
    ("macro_f1", {"average": "micro"}, r"unknown parameter\(s\) 'average'; known parameters: none"),
    ("spearman", {"method": "kendall"}, r"unknown parameter\(s\) 'method'"),
    ("accuracy", {"threshold_rule": "=>"}, r"'threshold_rule' must be one of '>', '>='"),
])
def test_new_parameters_are_validated(name, params, message):
    with pytest.raises(ValueError, match=message):
        SCORERS[name].validate_params(params)


def test_declared_directions_and_prediction_types():
    up = {"roc_auc", "average_precision", "macro_f1", "spearman", "pearson"}
    assert all(SCORERS[n].higher_is_better for n in up)
    assert not SCORERS["rmse"].higher_is_better and not SCORERS["mae"].higher_is_better
    for n in ("roc_auc", "average_precision", "spearman", "pearson", "rmse", "mae"):
        assert set(SCORERS[n].accepts) == {"probability", "score"}, n
    assert set(SCORERS["macro_f1"].accepts) == {"label", "probability"}
    assert {n for n, s in SCORERS.items() if s.general} == {"roc_auc", "average_precision", "macro_f1", "spearman"}


# ---------------------------------------------------------------- provenance of binary / multi-class

def test_multiclass_signatures_name_the_multiclass_settings():
    probs = np.full((3, 3), 1 / 3)
    multi = numeric(probs, ["a", "b", "c"])
    binary = numeric(np.array([0.2, 0.6, 0.9]))
    for name in ("accuracy", "log_loss", "roc_auc", "average_precision"):
        sig = SCORERS[name].signature_for({}, multi)
        assert "task:multiclass" in sig and "classes:3" in sig, sig
        assert "positive_label" not in sig and "threshold" not in sig, sig
        assert "task:binary" in SCORERS[name].signature_for({}, binary)
    assert "threshold:0.5|threshold_rule:>|positive_label:1" in SCORERS["accuracy"].signature_for({}, binary)
    assert "task:labels|case_sensitive:yes" in SCORERS["accuracy"].signature_for({}, labels(["a"]))


def test_accuracy_threshold_rule():
    p = np.array([0.5, 0.5, 0.7, 0.2])
    refs = ["1", "0", "1", "0"]
    assert value("accuracy", numeric(p), refs) == 0.75  # default p > 0.5: 0.5 is negative
    assert value("accuracy", numeric(p), refs, {"threshold_rule": ">="}) == 0.75  # 0.5 is positive
    assert value("accuracy", numeric(p[:1]), refs[:1]) == 0.0
    assert value("accuracy", numeric(p[:1]), refs[:1], {"threshold_rule": ">="}) == 1.0


# ---------------------------------------------------------------- intervals and paired tests

def test_general_interval_equals_a_plain_loop_over_the_same_resamples():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    n = 5000  # above the weight cache: resamples are drawn block by block
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 2)
    preds, refs = numeric(p), [str(v) for v in y]
    settings = IntervalSettings(resamples=200, seed=21)
    lo, hi, extra = general_interval(SCORERS["roc_auc"], preds, refs, {}, settings)
    weights = Resampler(n, 200, 21).weights()
    idx = np.random.default_rng(21).choice(n, size=(200, n), replace=True)  # sacrebleu's draws
    np.testing.assert_array_equal(weights, [np.bincount(r, minlength=n) for r in idx])
    looped = [roc_auc_score(y[i], p[i]) for i in idx]
    assert (lo, hi) == pytest.approx(interval_from_samples(np.array(looped), roc_auc_score(y, p)), abs=TOL)
    assert extra == "bootstrap:200|seed:21|ci:95%"
    # a scorer that is not batched (called once per resample, on threads) gives the same interval
    single = dataclasses.replace(SCORERS["roc_auc"], batched=False)
    assert general_interval(single, preds, refs, {}, settings) == pytest.approx((lo, hi, extra))


def test_undefined_resamples_are_left_out_and_a_broken_scorer_is_an_error():
    from referee.plugins.records import ScorerInfo
    from referee.scoring.bootstrap import general_scores

    y = np.array([1] + [0] * 9)  # a quarter of the resamples draw no positive: AUC undefined
    p = np.linspace(0, 1, 10)
    scores = general_scores(SCORERS["roc_auc"], numeric(p), [str(v) for v in y], {}, Resampler(10, 100, 1))
    assert np.isnan(scores).any() and np.isfinite(scores).any()

    def picky(predictions, references, params, weights):
        if weights is not None and weights[0] == 0:
            raise ValueError("undefined here")
        return 1.0

    def broken(predictions, references, params, weights):
        raise ValueError("always")

    for fn, expect_error in ((picky, False), (broken, True)):
        info = ScorerInfo(name="x", version="1", higher_is_better=True, accepts=("score",), score=fn)
        if expect_error:
            with pytest.raises(ValueError, match="always"):
                general_scores(info, numeric(p), list("0123456789"), {}, Resampler(10, 50, 1))
        else:
            got = general_scores(info, numeric(p), list("0123456789"), {}, Resampler(10, 50, 1), workers=1)
            assert np.isnan(got).any() and (got[np.isfinite(got)] == 1.0).all()


def _systems(n: int = 300, k: int = 4, seed: int = 6):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    systems = [np.round(np.clip(rng.normal(0.4 + q * y, 0.25), 0, 1), 2) for q in np.linspace(0.05, 0.3, k)]
    return y, systems


def test_paired_bootstrap_of_a_general_scorer_equals_the_loop():
    from sklearn.metrics import roc_auc_score

    y, systems = _systems()
    refs = [str(v) for v in y]
    test = paired_test(SCORERS["roc_auc"], {}, [numeric(s) for s in systems], refs, resamples=300, seed=8)
    assert isinstance(test, GeneralPairedTest)
    idx = np.random.default_rng(8).choice(len(y), size=(300, len(y)), replace=True)
    looped = np.array([[roc_auc_score(y[i], s[i]) for s in systems] for i in idx])
    np.testing.assert_allclose(test.resampled, looped, rtol=0, atol=TOL)
    observed = np.array([roc_auc_score(y, s) for s in systems])
    np.testing.assert_allclose(test.observed, observed, rtol=0, atol=TOL)
    pairs = [(0, j) for j in range(1, len(systems))] + [(1, 2), (2, 3)]
    for a, b in pairs:  # sacrebleu's paired bootstrap p-value, written out
        d = np.abs(looped[:, a] - looped[:, b])
        expected = ((d - d.mean()) > abs(observed[a] - observed[b])).sum() + 1.0
        assert test.p_values([a], [b])[0] == pytest.approx(expected / 301, abs=TOL)


def test_approximate_randomization_of_a_general_scorer_equals_the_loop():
    from sklearn.metrics import roc_auc_score

    y, systems = _systems(n=120, k=3, seed=9)
    refs = [str(v) for v in y]
    test = paired_test(SCORERS["roc_auc"], {}, [numeric(s) for s in systems], refs,
                       method="approximate_randomization", resamples=60, seed=10, workers=1)
    keep = np.random.default_rng(10).integers(2, size=(60, len(y)), dtype=bool)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        sa, sb = systems[a], systems[b]
        diff = abs(roc_auc_score(y, sa) - roc_auc_score(y, sb))
        shuffled = [abs(roc_auc_score(y, np.where(k, sa, sb)) - roc_auc_score(y, np.where(k, sb, sa))) for k in keep]
        tol = 1e-9 * max(1.0, abs(roc_auc_score(y, sa)) + abs(roc_auc_score(y, sb)))
        expected = (sum(d >= diff - tol for d in shuffled) + 1.0) / 61
        assert test.p_values([a], [b])[0] == pytest.approx(expected, abs=TOL)


def test_summable_scorers_keep_their_paired_test():
    stats = [SCORERS["rmse"].statistics(numeric(s, kind="score"), [repr(float(v)) for v in y], {})
             for y, s in [(np.arange(50.0), np.arange(50.0) + d) for d in (0.5, 1.0)]]
    test = paired_test(SCORERS["rmse"], {}, stats, resamples=100, seed=1)
    same_as_before = PairedTest.from_systems(SCORERS["rmse"].aggregate, {}, stats, resamples=100, seed=1)
    assert type(test) is PairedTest
    np.testing.assert_array_equal(test.resampled, same_as_before.resampled)
