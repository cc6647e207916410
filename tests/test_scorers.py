"""Built-in scorers agree with the reference libraries, and their aggregates are vectorised."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from referee.platform.core.predictions import Predictions
from referee.plugins.builtin.scorers import referee_scorers
from referee.plugins.records import ScorerInfo

pytestmark = pytest.mark.metrics

SCORERS = {s.name: s for s in referee_scorers()}

WORDS = ("the cat dog house runs quickly slowly over under a an big small red blue green "
         "Hello World it's don't can't New York , . ! ? ; : ( ) - \"quoted\" 42 3.14").split()


def sentences(rng: np.random.Generator, n: int, lo: int = 1, hi: int = 14) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi)))) for _ in range(n)]


def noisy(rng: np.random.Generator, refs: list[str], p_keep: float = 0.35) -> list[str]:
    """Hypotheses: some exact copies, some edited copies, some unrelated, some empty."""
    out = []
    for ref in refs:
        u = rng.random()
        if u < p_keep:
            out.append(ref)
        elif u < 0.8:
            words = ref.split()
            for _ in range(int(rng.integers(1, 4))):
                op = rng.integers(3)
                k = int(rng.integers(len(words) + 1))
                if op == 0:
                    words.insert(k, str(rng.choice(WORDS)))
                elif op == 1 and words:
                    words.pop(min(k, len(words) - 1))
                elif words:
                    words[min(k, len(words) - 1)] = str(rng.choice(WORDS))
            out.append(" ".join(words))
        elif u < 0.93:
            out.append(sentences(rng, 1)[0])
        else:
            out.append("")
    return out


def text(values: list[str]) -> Predictions:
    return Predictions(type="text", columns=["text"], values=values, raw={"text": values})


def probs(values: np.ndarray, columns: list[str]) -> Predictions:
    raw = {c: [repr(float(v)) for v in values[:, j]] for j, c in enumerate(columns)}
    return Predictions(type="probability", columns=columns, values=values, raw=raw)


def labels(values: list[str]) -> Predictions:
    return Predictions(type="label", columns=["label"], values=values, raw={"label": values})


def score(name: str, preds: Predictions, refs, params=None) -> float:
    scorer = SCORERS[name]
    params = params or {}
    stats = scorer.statistics(preds, refs, params)
    assert stats.shape[0] == len(preds) and stats.dtype == np.float64
    return float(scorer.aggregate(stats.sum(axis=0), params))


def assert_vectorised(name: str, stats: np.ndarray, params=None) -> None:
    """aggregate over stacked sums (and over bootstrap counts @ stats) equals one call per row."""
    agg = SCORERS[name].aggregate
    params = params or {}
    half = len(stats) // 2
    sums, sums2 = stats[:half].sum(0), stats[half:].sum(0)
    np.testing.assert_allclose(agg(np.stack([sums, sums2]), params), [agg(sums, params), agg(sums2, params)],
                               rtol=0, atol=1e-12)
    counts = np.random.default_rng(7).multinomial(len(stats), np.full(len(stats), 1 / len(stats)), size=6)
    batch = agg((counts @ stats).reshape(2, 3, -1), params)
    assert batch.shape == (2, 3)
    one_by_one = [agg(row, params) for row in counts @ stats]
    np.testing.assert_allclose(batch.ravel(), one_by_one, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- plugin

def test_plugin_registers_every_builtin_scorer():
    assert set(SCORERS) == {"log_loss", "accuracy", "wer", "cer", "bleu", "chrf", "ter", "roc_auc",
                            "average_precision", "macro_f1", "spearman", "pearson", "rmse", "mae"}
    for s in SCORERS.values():
        assert isinstance(s, ScorerInfo) and s.version and s.accepts and s.libraries
        assert s.signature is not None and s.validate_params is not None
    assert not SCORERS["log_loss"].higher_is_better and SCORERS["bleu"].higher_is_better
    assert SCORERS["chrf"].higher_is_better and not SCORERS["ter"].higher_is_better
    assert not SCORERS["wer"].higher_is_better and SCORERS["accuracy"].higher_is_better


def test_plugin_import_does_not_load_heavy_libraries():
    code = ("import sys, referee.plugins.builtin.scorers as s; s.referee_scorers(); "
            "print(sorted(m for m in ('sacrebleu', 'jiwer', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- log loss

def test_log_loss_binary_matches_sklearn():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, size=500)
    y = (rng.random(500) < p).astype(int)
    refs = [str(v) for v in y]
    ours = score("log_loss", probs(p[:, None], ["is_fake"]), refs)
    assert abs(ours - log_loss(y, p)) < 1e-9
    stats = SCORERS["log_loss"].statistics(probs(p[:, None], ["is_fake"]), refs, {})
    assert_vectorised("log_loss", stats)


def test_log_loss_binary_custom_labels_and_clipping():
    from sklearn.metrics import log_loss

    p = np.array([[0.0], [1.0], [0.3], [0.9]])
    refs = ["real", "fake", " fake ", "real"]
    params = {"positive_label": "fake", "negative_label": "real"}
    ours = score("log_loss", probs(p, ["p"]), refs, params)
    y = [0, 1, 1, 0]
    q = np.clip(p[:, 0], 1e-15, 1 - 1e-15)
    kaggle = -np.mean([np.log(q[i]) if y[i] else np.log(1 - q[i]) for i in range(4)])
    assert abs(ours - kaggle) < 1e-9
    # a confidently wrong 0/1 costs -log(1e-15) per item, like Kaggle (sklearn uses float eps)
    worst = score("log_loss", probs(np.array([[0.0]]), ["p"]), ["fake"], params)
    assert abs(worst - (-np.log(1e-15))) < 1e-9
    assert abs(score("log_loss", probs(p[2:], ["p"]), refs[2:], params) - log_loss([1, 0], p[2:, 0])) < 1e-9


def test_log_loss_multiclass_matches_sklearn():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(2)
    classes = ["cat", "dog", "bird", "fish"]
    p = rng.dirichlet(np.ones(4) * 2, size=400)
    idx = np.array([rng.choice(4, p=row) for row in p])
    refs = [classes[i] for i in idx]
    ours = score("log_loss", probs(p, classes), refs)
    order = np.argsort(classes)  # sklearn wants the columns in sorted label order; referee uses their names
    assert abs(ours - log_loss(refs, p[:, order], labels=sorted(classes))) < 1e-9
    # rows that do not sum to 1 are renormalised (as sklearn did before 1.5, and Kaggle does)
    scaled = p * rng.uniform(0.3, 1.0, size=(400, 1))  # stays within [0, 1], rows sum below 1
    assert abs(score("log_loss", probs(scaled, classes), refs) - ours) < 1e-9


def test_log_loss_rejects_unknown_reference_labels():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    with pytest.raises(ValueError, match="'horse' at item 1"):
        score("log_loss", probs(p, ["cat", "dog"]), ["dog", "horse"])
    with pytest.raises(ValueError, match="'yes' at item 0 is neither positive_label '1'"):
        score("log_loss", probs(p[:, :1], ["p"]), ["yes", "1"])
    with pytest.raises(ValueError, match="scores probability predictions"):
        score("log_loss", labels(["a"]), ["a"])
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        score("log_loss", probs(p, ["cat", "dog"]), ["dog", "cat", "cat"])


# ---------------------------------------------------------------- accuracy

def test_accuracy_labels():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(3)
    refs = list(rng.choice(["Yes", "No", "Maybe"], size=300))
    preds = [r if rng.random() < 0.6 else str(rng.choice(["yes", "No", "maybe "])) for r in refs]
    expected = accuracy_score([r.strip() for r in refs], [p.strip() for p in preds])
    assert abs(score("accuracy", labels(preds), refs) - expected) < 1e-12
    folded = accuracy_score([r.lower() for r in refs], [p.strip().lower() for p in preds])
    assert abs(score("accuracy", labels(preds), refs, {"case_sensitive": False}) - folded) < 1e-12
    assert_vectorised("accuracy", SCORERS["accuracy"].statistics(labels(preds), refs, {}))


def test_accuracy_probabilities():
    rng = np.random.default_rng(4)
    p = rng.random(200)
    y = rng.integers(0, 2, 200)
    refs = [str(v) for v in y]
    assert abs(score("accuracy", probs(p[:, None], ["p"]), refs) - np.mean((p > 0.5) == y)) < 1e-12
    got = score("accuracy", probs(p[:, None], ["p"]), refs, {"threshold": 0.3})
    assert abs(got - np.mean((p > 0.3) == y)) < 1e-12
    classes = ["a", "b", "c"]
    m = rng.dirichlet(np.ones(3), size=200)
    truth = rng.integers(0, 3, 200)
    got = score("accuracy", probs(m, classes), [classes[i] for i in truth])
    assert abs(got - np.mean(m.argmax(1) == truth)) < 1e-12


# ---------------------------------------------------------------- WER / CER

NORMALIZE_STEPS = ("ToLowerCase", "RemovePunctuation", "Strip", "RemoveMultipleSpaces")


def jiwer_transform(steps, unit):
    import jiwer

    reduce = jiwer.ReduceToListOfListOfWords() if unit == "word" else jiwer.ReduceToListOfListOfChars()
    return jiwer.Compose([getattr(jiwer, s)() for s in steps] + [reduce])


@pytest.mark.parametrize("name", ["wer", "cer"])
@pytest.mark.parametrize("transform", ["default", "normalize", ["lowercase", "strip",
                                                               "expand_common_english_contractions"]])
def test_error_rates_match_jiwer(name, transform):
    import jiwer

    rng = np.random.default_rng(5)
    refs = sentences(rng, 400)
    hyps = noisy(rng, refs)
    hyps[0] = ""  # empty hypothesis lines are allowed
    hyps[1] = "   "
    hyps[2] = "  Extra   spaces  here "
    unit = "word" if name == "wer" else "char"
    fn = jiwer.wer if name == "wer" else jiwer.cer
    if transform == "default":
        expected = fn(refs, hyps)
    elif transform == "normalize":
        tf = jiwer_transform(NORMALIZE_STEPS, unit)
        expected = fn(refs, hyps, reference_transform=tf, hypothesis_transform=tf)
    else:
        tf = jiwer_transform(("ToLowerCase", "Strip", "ExpandCommonEnglishContractions"), unit)
        expected = fn(refs, hyps, reference_transform=tf, hypothesis_transform=tf)
    params = {"transform": transform}
    assert abs(score(name, text(hyps), refs, params) - expected) < 1e-12
    stats = SCORERS[name].statistics(text(hyps), refs, params)
    assert_vectorised(name, stats, params)
    # per-item statistics are the per-item jiwer counts
    for i in (0, 3, 7):  # 0: an empty hypothesis
        assert stats[i, 1] > 0  # the reference length: no reference is empty
        one = fn(refs[i], hyps[i]) if transform == "default" else fn(
            refs[i], hyps[i], reference_transform=tf, hypothesis_transform=tf)
        assert abs(stats[i, 0] / stats[i, 1] - one) < 1e-12


def test_error_rate_edge_cases():
    import jiwer

    refs = ["a b c", "", "hello world"]
    hyps = ["a x c", "noise here", ""]
    assert abs(score("wer", text(hyps), refs) - jiwer.wer(refs, hyps)) < 1e-12
    assert abs(score("cer", text(hyps), refs) - jiwer.cer(refs, hyps)) < 1e-12
    # an all-silent reference: jiwer reports the insertion count
    assert score("wer", text(["two words"]), [""]) == jiwer.wer([""], ["two words"]) == 2
    # remove_empty_strings is accepted but keeps items aligned
    got = score("wer", text(hyps), refs, {"transform": ["strip", "remove_empty_strings"]})
    assert abs(got - jiwer.wer(refs, hyps)) < 1e-12
    with pytest.raises(ValueError, match="item 1 has 2 references"):
        score("wer", text(["a", "b"]), ["a", ["b", "c"]])
    assert abs(score("wer", text(["a", "b"]), [["a"], ["c"]]) - 0.5) < 1e-12


# ---------------------------------------------------------------- sacrebleu

@pytest.fixture(scope="module")
def mt_data():
    rng = np.random.default_rng(11)
    refs = sentences(rng, 300, 1, 25)
    hyps = noisy(rng, refs)
    hyps[:3] = ["", "", " "]
    hyps[3] = refs[3] + " ."  # tokenisation matters
    refs2 = noisy(rng, refs, p_keep=0.0)
    refs2 = [r if r else "fallback reference" for r in refs2]
    extra = sentences(rng, 300)
    multi = [[a] if i % 3 == 0 else [a, b] if i % 3 == 1 else [a, b, c]
             for i, (a, b, c) in enumerate(zip(refs, refs2, extra))]
    return hyps, refs, multi


def streams(multi):
    width = max(len(r) for r in multi)
    return [[r[j] if j < len(r) else None for r in multi] for j in range(width)]


def test_bleu_default_matches_corpus_bleu(mt_data):
    import sacrebleu

    hyps, refs, multi = mt_data
    assert abs(score("bleu", text(hyps), refs) - sacrebleu.corpus_bleu(hyps, [refs]).score) < 1e-9
    assert abs(score("bleu", text(hyps), multi) - sacrebleu.corpus_bleu(hyps, streams(multi)).score) < 1e-9
    stats = SCORERS["bleu"].statistics(text(hyps), multi, {})
    assert stats.shape == (len(hyps), 10)
    assert_vectorised("bleu", stats)


@pytest.mark.parametrize("params", [
    {"tokenize": "none"}, {"tokenize": "intl"}, {"tokenize": "char"}, {"tokenize": "zh"},
    {"lowercase": True}, {"smooth_method": "none"}, {"smooth_method": "floor"},
    {"smooth_method": "floor", "smooth_value": 0.5}, {"smooth_method": "add-k"},
    {"smooth_method": "add-k", "smooth_value": 2}, {"max_ngram_order": 2}, {"max_ngram_order": 6},
    {"effective_order": True}, {"effective_order": True, "smooth_method": "none"},
])
def test_bleu_params_match_sacrebleu(mt_data, params):
    from sacrebleu.metrics import BLEU

    hyps, refs, multi = mt_data
    for r in (refs, multi):
        expected = BLEU(**params).corpus_score(hyps, streams(r) if r is multi else [r]).score
        assert abs(score("bleu", text(hyps), r, params) - expected) < 1e-9
    # tiny corpora reach sacrebleu's edge cases: no matches, missing higher orders, empty hypothesis
    stats = SCORERS["bleu"].statistics(text(hyps), refs, params)
    for i in range(60):
        expected = BLEU(**params).corpus_score([hyps[i]], [[refs[i]]]).score
        assert abs(SCORERS["bleu"].aggregate(stats[i], params) - expected) < 1e-9, i
    assert_vectorised("bleu", stats, params)


@pytest.mark.parametrize("params", [
    {}, {"word_order": 2}, {"word_order": 1, "char_order": 4}, {"beta": 1}, {"beta": 3},
    {"lowercase": True}, {"whitespace": True}, {"eps_smoothing": True}, {"char_order": 0, "word_order": 2},
])
def test_chrf_matches_sacrebleu(mt_data, params):
    import sacrebleu
    from sacrebleu.metrics import CHRF

    hyps, refs, multi = mt_data
    for r in (refs, multi):
        expected = CHRF(**params).corpus_score(hyps, streams(r) if r is multi else [r]).score
        assert abs(score("chrf", text(hyps), r, params) - expected) < 1e-9
    if not params or params == {"word_order": 2}:  # the compat entry points: chrF and chrF++
        expected = sacrebleu.corpus_chrf(hyps, streams(multi), **params).score
        assert abs(score("chrf", text(hyps), multi, params) - expected) < 1e-9
    stats = SCORERS["chrf"].statistics(text(hyps), refs, params)
    for i in range(40):
        expected = CHRF(**params).corpus_score([hyps[i]], [[refs[i]]]).score
        assert abs(SCORERS["chrf"].aggregate(stats[i], params) - expected) < 1e-9, i
    assert_vectorised("chrf", stats, params)


@pytest.mark.parametrize("params", [
    {}, {"normalized": True}, {"no_punct": True}, {"case_sensitive": True},
    {"normalized": True, "asian_support": True},
])
def test_ter_matches_sacrebleu(mt_data, params):
    import sacrebleu

    hyps, refs, multi = mt_data
    hyps, refs, multi = hyps[:120], refs[:120], multi[:120]
    for r in (refs, multi):
        expected = sacrebleu.corpus_ter(hyps, streams(r) if r is multi else [r], **params).score
        assert abs(score("ter", text(hyps), r, params) - expected) < 1e-9
    stats = SCORERS["ter"].statistics(text(hyps), multi, params)
    assert_vectorised("ter", stats, params)
    assert SCORERS["ter"].aggregate([0.0, 0.0]) == 0.0 and SCORERS["ter"].aggregate([3.0, 0.0]) == 100.0


def test_sacrebleu_signatures():
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF, TER

    bleu = BLEU(tokenize="intl", lowercase=True)
    bleu.num_refs = 1
    assert SCORERS["bleu"].signature({"tokenize": "intl", "lowercase": True}) == \
        "case:lc|eff:no|tok:intl|smooth:exp|version:" + sacrebleu.__version__
    details = SCORERS["bleu"].details(text(["a"]), ["a"], {"tokenize": "intl", "lowercase": True})
    assert details["sacrebleu_signature"] == bleu.get_signature().format() and details["nrefs"] == 1
    assert SCORERS["chrf"].details(text(["a", "b"]), [["a"], ["b", "c"]], {})["nrefs"] == "var"
    chrf = CHRF(word_order=2)
    chrf.num_refs = None
    assert SCORERS["chrf"].signature({"word_order": 2}) == chrf.get_signature().format()
    assert "nw:2" in SCORERS["chrf"].signature({"word_order": 2})
    ter = TER(normalized=True)
    ter.num_refs = None
    assert SCORERS["ter"].signature({"normalized": True}) == ter.get_signature().format()


def test_empty_corpus_gives_empty_statistics():
    for name in ("bleu", "chrf", "ter", "wer", "cer"):
        stats = SCORERS[name].statistics(text([]), [], {})
        assert stats.shape[0] == 0


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("name, params, message", [
    ("log_loss", {"epsilon": 1e-15}, r"log_loss: unknown parameter\(s\) 'epsilon'; known parameters: eps"),
    ("log_loss", {"eps": 0.0}, r"log_loss: parameter 'eps' must be in \(0.0, 0.5\), got 0.0"),
    ("log_loss", {"positive_label": "a", "negative_label": "a"}, "must differ"),
    ("accuracy", {"case_sensitive": "no"}, "parameter 'case_sensitive' must be true or false, got 'no'"),
    ("accuracy", {"threshold": 2}, r"'threshold' must be in \[0.0, 1.0\]"),
    ("wer", {"transform": "lower"}, "'transform' must be 'default', 'normalize' or a list"),
    ("cer", {"transform": ["lowercase", "stem"]}, r"unknown transform name\(s\) \['stem'\]; allowed names"),
    ("bleu", {"tokenize": "moses"}, "'tokenize' must be one of 'none', 'zh', '13a'"),
    ("bleu", {"smooth_method": "laplace"}, "'smooth_method' must be one of"),
    ("bleu", {"max_ngram_order": 0}, "'max_ngram_order' must be between 1 and 10"),
    ("bleu", {"max_ngram_order": True}, "'max_ngram_order' must be an integer"),
    ("chrf", {"char_order": 0, "word_order": 0}, "char_order \\+ word_order must be at least 1"),
    ("chrf", {"beta": -1}, "'beta' must be in"),
    ("ter", {"normalise": True}, r"unknown parameter\(s\) 'normalise'"),
])
def test_bad_params_are_rejected_clearly(name, params, message):
    with pytest.raises(ValueError, match=message):
        SCORERS[name].validate_params(params)


def test_good_params_validate_and_sign():
    for name, params in [("log_loss", {"eps": 1e-7}), ("accuracy", {"case_sensitive": False}),
                         ("wer", {"transform": ["lowercase", "strip"]}), ("cer", {"transform": "normalize"}),
                         ("bleu", {"tokenize": "char", "smooth_method": "floor", "smooth_value": 0.2}),
                         ("chrf", {"word_order": 2}), ("ter", {"case_sensitive": True})]:
        SCORERS[name].validate_params(params)
        assert SCORERS[name].signature(params) != SCORERS[name].signature({})
    assert SCORERS["wer"].signature({"transform": ["lowercase", "strip"]}).startswith(
        "name:wer|transform:lowercase+strip|version:")
