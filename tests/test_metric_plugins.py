"""Metric authors' tools end to end: the README example, general scorers in a competition (intervals,
tiers, verify), `score` predictions, scorer errors, `referee score` and `referee plugins new`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import referee.plugins.example_scorers as example
import referee.plugins.testing
from referee.platform.core.predictions import Predictions
from referee.plugins.manager import PluginManager, set_plugin_manager

pytestmark = pytest.mark.metrics

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "referee.platform.cli"]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd)


# ---------------------------------------------------------------- the README example

def test_readme_example_is_the_example_module():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n# my_package/referee_plugin.py\n(.*?)```", readme, re.S)
    assert block, "README has no plugin example block"
    source = Path(example.__file__).read_text()
    assert block.group(1) == source[source.index("from __future__"):]


def test_readme_example_scorers_equal_sklearn_with_weights():
    from sklearn.metrics import brier_score_loss, median_absolute_error

    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.4).astype(int)
    p = rng.random(200)
    brier, median = example.referee_scorers()
    preds = Predictions("probability", ["p"], p[:, None], {})
    refs = [str(v) for v in y]
    stats = brier.statistics(preds, refs, {})
    assert brier.aggregate(stats.sum(axis=0), {}) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    truth = rng.normal(size=200)
    scores = Predictions("score", ["s"], truth[:, None] + rng.normal(size=(200, 1)), {})
    w = rng.multinomial(200, np.full(200, 1 / 200)).astype(float)
    expected = median_absolute_error(np.repeat(truth, w.astype(int)), np.repeat(scores.values[:, 0], w.astype(int)))
    assert median.score(scores, [repr(float(t)) for t in truth], {}, w) == pytest.approx(expected, abs=1e-12)
    assert median.general and not brier.general


# ---------------------------------------------------------------- general scorers in a competition

@pytest.fixture
def with_example_plugin():
    pm = PluginManager(entrypoints=False, extra=[referee.plugins.testing, example])
    set_plugin_manager(pm)
    yield pm
    set_plugin_manager(None)


def write_competition(root: Path, name: str, refs: list[str], prediction: dict, metrics: list[dict],
                      **extra) -> Path:
    ids = [f"i{k}" for k in range(len(refs))]
    (root / f"{name}_ref.csv").write_text("id,label\n" + "".join(f"{i},{r}\n" for i, r in zip(ids, refs)))
    (root / f"{name}.yaml").write_text(yaml.safe_dump({
        "id": name, "title": name, "data": {"reference": f"{name}_ref.csv"}, "split": {"public_fraction": 0.6},
        "prediction": prediction, "metrics": metrics,
        "leaderboard": {"significance": {"resamples": 400}, "intervals": {"resamples": 300}}, **extra}))
    return root / f"{name}.yaml"


def submit_all(store, comp, root: Path, systems: dict[str, np.ndarray]) -> dict[str, int]:
    from referee.submissions.submit import submit

    ids = {}
    for team, values in systems.items():
        f = root / f"{comp.id}_{team}.csv"
        f.write_text("id,p\n" + "".join(f"i{k},{float(v)!r}\n" for k, v in enumerate(values)))
        ids[team] = submit(store, comp, team, f)
    return ids


def test_general_scorers_get_intervals_tiers_and_verify(tmp_path, store, with_example_plugin):
    from sklearn.metrics import roc_auc_score

    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.controller.verify import verify_competition
    from referee.platform.leaderboard.build import build
    from referee.scoring.engine import load_stats, split_references
    from referee.scoring.reference import load_reference
    from referee.scoring.significance import paired_test

    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.4).astype(int)
    systems = {team: np.round(np.clip(rng.normal(0.4 + q * y, 0.25), 0, 1), 3)
               for team, q in (("alpha", 0.35), ("bravo", 0.33), ("charlie", 0.05))}
    spec = write_competition(tmp_path, "auc", [str(v) for v in y], {"type": "probability", "columns": ["p"]},
                             [{"scorer": "roc_auc", "primary": True}, {"scorer": "brier"}])
    comp = load_into_store(store, spec)
    ids = submit_all(store, comp, tmp_path, systems)
    Controller(store, comp).run()
    mask = load_reference(comp).mask("public")
    for team, sid in ids.items():
        rows = {(r.metric, r.split): r for r in store.scores(sid)}
        auc = rows[("roc_auc", "public")]
        assert auc.value == pytest.approx(roc_auc_score(y[mask], systems[team][mask]), abs=1e-12)
        assert auc.ci_low < auc.value < auc.ci_high
        assert auc.provenance["signature"].endswith("|bootstrap:300|seed:12345|ci:95%")
        assert "task:binary" in auc.provenance["signature"]
        assert isinstance(load_stats(store, auc.stats_sha256), Predictions)  # a general scorer keeps predictions
        assert load_stats(store, rows[("brier", "public")].stats_sha256).shape == (n, 2)
    lb = build(store, comp, split="public")
    assert [e.team for e in lb.entries] == ["alpha", "bravo", "charlie"]
    assert [e.extra["tier"] for e in lb.entries] == [1, 1, 2]
    # the leaderboard's p-values are the general paired test on the stored predictions
    test = paired_test(with_example_plugin.scorer("roc_auc"), {}, [
        Predictions("probability", ["p"], systems[t][mask][:, None], {}) for t in ("alpha", "bravo", "charlie")],
        split_references(comp, "public"), resamples=400, seed=12345)
    assert lb.entries[1].extra["p_vs_leader"] == pytest.approx(float(test.p_values([0], [1])[0]))
    assert lb.entries[2].extra["p_vs_prev"] == pytest.approx(float(test.p_values([1], [2])[0]))
    assert [v.status for v in verify_competition(store, comp)] == ["same"] * 3


def test_score_predictions_are_any_finite_number(tmp_path, store, with_example_plugin):
    from scipy.stats import spearmanr

    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.leaderboard.build import build
    from referee.platform.core.errors import SubmissionRejected
    from referee.scoring.reference import load_reference
    from referee.submissions.submit import submit

    rng = np.random.default_rng(2)
    truth = rng.normal(10, 5, size=300)
    spec = write_competition(tmp_path, "reg", [repr(float(t)) for t in truth],
                             {"type": "score", "columns": ["p"]},
                             [{"scorer": "median_ae", "primary": True}, {"scorer": "spearman"}, {"scorer": "rmse"}])
    comp = load_into_store(store, spec)
    systems = {"alpha": truth + rng.normal(0, 1, 300), "bravo": truth + rng.normal(0, 4, 300) - 20}
    ids = submit_all(store, comp, tmp_path, systems)
    Controller(store, comp).run()
    mask = load_reference(comp).mask("public")
    rows = {(r.metric, r.split): r for r in store.scores(ids["bravo"])}
    assert rows[("spearman", "public")].value == pytest.approx(
        spearmanr(systems["bravo"][mask], truth[mask]).statistic, abs=1e-12)
    assert rows[("median_ae", "public")].ci_low is not None
    lb = build(store, comp, split="public")
    assert [e.team for e in lb.entries] == ["alpha", "bravo"] and lb.entries[1].extra["tier"] == 2
    bad = tmp_path / "nan.csv"
    bad.write_text("id,p\n" + "".join(f"i{k},{'nan' if k == 3 else '-7.5'}\n" for k in range(300)))
    with pytest.raises(SubmissionRejected, match=r"line 5: column 'p': 'nan' is not a finite number"):
        submit(store, comp, "charlie", bad)


def test_sum_to_one_applies_to_probabilities_only(tmp_path):
    from referee.platform.core.errors import SpecError
    from referee.platform.core.spec import load_competition

    spec = write_competition(tmp_path, "s", ["1"], {"type": "score", "columns": ["p"], "sum_to_one": True},
                             [{"scorer": "rmse"}])
    with pytest.raises(SpecError, match="sum_to_one applies to probability predictions"):
        load_competition(spec)


# ---------------------------------------------------------------- a scorer that raises

BROKEN = '''
from referee.plugins import ScorerInfo, hookimpl

def score(predictions, references, params, weights):
    raise KeyError("secret-reference-label")

@hookimpl
def referee_scorers():
    return [ScorerInfo(name="broken", version="1", higher_is_better=True, accepts=("probability",), score=score)]
'''


def test_a_scorer_that_raises_is_a_scorer_error(tmp_path, store, monkeypatch):
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.core.jobs import FailureReason
    from referee.platform.reports.views import submission_detail
    from referee.platform.web.access import Seat, redact_detail
    from referee.platform.web.auth import Principal

    (tmp_path / "broken_scorer.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import broken_scorer
    set_plugin_manager(PluginManager(entrypoints=False, extra=[referee.plugins.testing, broken_scorer]))
    spec = write_competition(tmp_path, "brk", ["1", "0", "1"], {"type": "probability", "columns": ["p"]},
                             [{"scorer": "broken"}])
    comp = load_into_store(store, spec)
    (sid,) = submit_all(store, comp, tmp_path, {"alpha": np.array([0.9, 0.1, 0.8])}).values()
    summary = Controller(store, comp).run()
    sub = store.get_submission(sid)
    assert sub.status.value == "failed" and sub.failure_reason == "scorer_error"
    assert not sub.counts_toward_quota and summary.retried == 0
    assert sub.failure_message == "scoring failed, the host has been told (metric 'broken')"
    assert "secret-reference-label" not in sub.failure_message
    explanation = FailureReason.SCORER_ERROR.explanation
    assert "host" in explanation and "retr" not in explanation
    (event,) = store.events(kind="scorer_error", submission_id=sid)
    assert "KeyError: 'secret-reference-label'" in event["message"] and "Traceback" in event["message"]
    assert not store.events(kind="retry", submission_id=sid)
    detail = submission_detail(store, sid)
    assert "secret-reference-label" in detail["host_notes"][0]["message"]
    team_view = redact_detail(detail, Seat(Principal(role="team", team="alpha", token_id="t"), "brk", team="alpha"))
    assert "host_notes" not in team_view and team_view["failure_reason"] == "scorer_error"


# ---------------------------------------------------------------- referee score

@pytest.fixture
def two_files(tmp_path):
    rng = np.random.default_rng(3)
    n = 250
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 2)
    order = rng.permutation(n)  # the prediction file lists the ids in another order
    (tmp_path / "refs.csv").write_text("id,label\n" + "".join(f"x{k},{y[k]}\n" for k in range(n)))
    (tmp_path / "preds.csv").write_text("id,score\n" + "".join(f"x{k},{float(p[k])!r}\n" for k in order))
    return tmp_path, y, p


def test_referee_score_prints_value_interval_and_signature(two_files):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from referee.scoring.bootstrap import Resampler, interval_from_samples

    d, y, p = two_files
    out = run_cli("score", "--scorer", "roc_auc", "--predictions", str(d / "preds.csv"), "--references",
                  str(d / "refs.csv"), "--json", cwd=d)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"scorer", "value", "ci_low", "ci_high", "signature"}
    assert doc["scorer"] == "roc_auc" and doc["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    looped = [roc_auc_score(y, p, sample_weight=w) for w in Resampler(len(y), 1000, 12345).weights()]
    lo, hi = interval_from_samples(np.array(looped), roc_auc_score(y, p))
    assert (doc["ci_low"], doc["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert doc["signature"] == ("name:roc_auc|task:binary|positive_label:1|negative_label:0|"
                                f"version:{doc['signature'].split('version:')[1]}")
    assert doc["signature"].endswith("|bootstrap:1000|seed:12345|ci:95%")
    text = run_cli("score", "--scorer", "average_precision", "--predictions", "preds.csv", "--references",
                   "refs.csv", "--param", "positive_label=0", "--param", "negative_label=1", "--no-interval", cwd=d)
    assert text.returncode == 0, text.stderr
    expected = average_precision_score(1 - y, p)
    assert text.stdout.startswith(f"average_precision = {expected:.6g}  n=250, probability predictions\n")
    assert "positive_label:0|negative_label:1" in text.stdout and "bootstrap" not in text.stdout


def test_referee_score_errors_are_one_line(two_files):
    d, _, _ = two_files
    lines = (d / "preds.csv").read_text().splitlines()
    lines[4] = lines[4].split(",")[0] + ",high"
    (d / "bad.csv").write_text("\n".join(lines) + "\n")
    cases = [
        (["--scorer", "roc_auc", "--predictions", "bad.csv"], "bad.csv, line 5: column 'score': 'high' is not a number"),
        (["--scorer", "roc_auc", "--predictions", "preds.csv", "--param", "positive_label=yes"],
         "at item 0 is neither positive_label 'yes' nor negative_label '0'"),
        (["--scorer", "rmse", "--predictions", "preds.csv", "--param", "squared=true"],
         "--param: rmse: unknown parameter(s) 'squared'"),
        (["--scorer", "roc_auc", "--predictions", "preds.csv", "--type", "label"],
         "--scorer: roc_auc scores ['probability', 'score'] predictions, but prediction.type is 'label'"),
        (["--scorer", "auc", "--predictions", "preds.csv"], "no scorer named 'auc'"),
        (["--scorer", "roc_auc", "--predictions", "missing.csv"], "missing.csv: predictions file not found"),
    ]
    for args, message in cases:
        out = run_cli("score", *args, "--references", "refs.csv", cwd=d)
        assert out.returncode == 1, (args, out.stdout)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


# ---------------------------------------------------------------- referee plugins new

def test_plugins_new_writes_a_package_that_installs_lists_scores_and_tests(tmp_path):
    out = run_cli("plugins", "new", "balanced_error", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    pkg = tmp_path / "referee-balanced-error"
    assert {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "referee_balanced_error/__init__.py", "referee_balanced_error/scorer.py",
        "tests/test_scorer.py", "example/predictions.csv", "example/references.csv"}
    assert 'balanced_error = "referee_balanced_error.scorer"' in (pkg / "pyproject.toml").read_text()
    again = run_cli("plugins", "new", "balanced_error", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = run_cli("plugins", "new", "Bad Name", "--dir", str(tmp_path))
    assert bad.returncode == 1 and "not a usable plugin name" in bad.stderr

    site = tmp_path / "site"  # an editable install into a directory of its own, removed with tmp_path
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), "-e", str(pkg)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    # site-packages semantics (the editable install is a .pth file), then the real `referee` command line
    boot = f"import site, sys; site.addsitedir({str(site)!r}); from referee.platform.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run([sys.executable, "-c", boot, "plugins", "list", "--json"], capture_output=True,
                            text=True, env=env)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["balanced_error"]["provides"] == ["scorer:balanced_error"] and rows["balanced_error"]["error"] is None
    scored = subprocess.run([sys.executable, "-c", boot, "score", "--scorer", "balanced_error", "--predictions",
                             "example/predictions.csv", "--references", "example/references.csv", "--json"],
                            capture_output=True, text=True, env=env, cwd=pkg)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["value"] == pytest.approx((0.5 + 0 + 0.25 + 2) / 4)
    tests = subprocess.run([sys.executable, "-c", f"import site, sys, pytest; site.addsitedir({str(site)!r}); "
                            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests']))"],
                           capture_output=True, text=True, env=env, cwd=pkg)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr
