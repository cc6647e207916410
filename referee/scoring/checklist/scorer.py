"""The ``checklist`` scorer: CheckList's own ``TestSuite.run_from_file`` on a submission's predictions.

Predictions arrive aligned to the reference rows (one per exported example, in the suite's export
order, then any held-out rows). The scorer writes them in checklist's ``pred_and_softmax`` raw format
(label predictions as one-hot probabilities), runs the suite from that file with checklist's
``TestSuite.run_from_file`` and reads back each test case's pass/fail/filtered result.

Per-item statistics: for the tests in the metric's scope (params ``capability``, ``type``, ``test``),
two columns per test, ``[failed, counted]``; a case's numbers sit on the row of its first example, all
other rows are zero. Summing rows therefore counts test cases, so a bootstrap over rows resamples
cases. ``average: cases`` (default) gives failed / counted over all cases in scope; ``average: tests``
the mean of per-test failure rates, as in the CheckList paper's tables. Lower is better.

``checklist_accuracy`` scores the optional held-out rows (``checklist.heldout``) by plain accuracy.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from referee.plugins.manager import get_runtime
from referee.scoring.checklist import matrix as mx
from referee.scoring.metrics import _common as c

NAME = "checklist"
ACCURACY_NAME = "checklist_accuracy"
REVISION = "1.0"
ACCEPTS = ("probability", "label")
LIBRARIES = ("checklist", "dill", "spacy")
INJECTED = ("suite", "suite_sha256", "labels", "failing_examples")

PARAMS: c.ParamSpec = {
    "suite": (None, lambda v: None if isinstance(v, str) else "must be the path of the prepared suite"),
    "suite_sha256": (None, lambda v: None if isinstance(v, str) and len(v) == 64 else "must be a sha256"),
    "labels": (None, lambda v: None if isinstance(v, list) and len(v) >= 2 and all(isinstance(x, str) for x in v)
               else "must be a list of at least two label names"),
    "failing_examples": (3, c.integer(0, 50)),
    "capability": (None, lambda v: None if v is None or isinstance(v, str) else "must be a capability name"),
    "type": (None, lambda v: None if v is None or v in ("MFT", "INV", "DIR") else "must be MFT, INV or DIR"),
    "test": (None, lambda v: None if v is None or isinstance(v, str) else "must be a test name"),
    "average": ("cases", c.choice(("cases", "tests"))),
}
ACCURACY_PARAMS: c.ParamSpec = {k: PARAMS[k] for k in INJECTED}

_NOT_PREPARED = ("the {name} scorer needs the competition's `checklist:` section; referee fills in "
                 "suite, suite_sha256 and labels when it loads the competition")


def _resolve(params: Mapping[str, Any], spec: c.ParamSpec = PARAMS, name: str = NAME) -> dict[str, Any]:
    p = c.resolve_params(name, params, spec)
    if p["suite"] is None or p["labels"] is None or p["suite_sha256"] is None:
        raise ValueError(_NOT_PREPARED.format(name=name))
    return p


def validate_params(params: Mapping[str, Any]) -> None:
    _resolve(params)


def validate_accuracy_params(params: Mapping[str, Any]) -> None:
    _resolve(params, ACCURACY_PARAMS, ACCURACY_NAME)


# -- running the suite ---------------------------------------------------------------------------------
@dataclass
class TestOutcome:
    """One test's results, per case, as checklist computed them."""

    __test__ = False

    name: str
    capability: str
    type: str
    description: str
    status: np.ndarray  # per case: 1 failed, 0 passed, -1 filtered (expectation did not apply)
    first_row: np.ndarray  # per case: reference row of its first example
    severity: np.ndarray  # per case: the worst expectation value (lower = worse)
    data: Any  # the test's cases (checklist's ``test.data``)
    labels: Any  # the test's expected labels (checklist's ``test.labels``)
    results: Any  # this run's results: checklist makes a new object per run, so later runs never touch it


@dataclass
class SuiteRun:
    labels: list[str]
    tests: list[TestOutcome]
    splits: np.ndarray  # per reference row: True = public (always from the references of this call)


# Suite runs, keyed by (suite sha256, predictions digest, reference layout digest), live in the runtime's
# "checklist.runs" cache. A cached run holds only what those determine (per-case results and each case's
# reference row) and its own copy of checklist's results; the split assignment is never cached: it comes
# from the references of the call, so two competitions sharing a suite (or a host reload changing
# ``public_fraction``) never see each other's public/private sides. A loaded suite is one mutable object
# (``run_from_file`` rewrites its results), so each one is run by one thread at a time under its lock.


@dataclass
class _LoadedSuite:
    suite: Any
    lock: threading.Lock


def _load_suite(path: str, sha: str) -> _LoadedSuite:
    from referee.scoring.checklist import library

    _check_suite_file(path, sha)
    return get_runtime().cache("checklist.suites").get_or_compute(
        sha, lambda: _LoadedSuite(library.test_suite_module().TestSuite.from_file(path), threading.Lock()))


def _check_suite_file(path: str, sha: str) -> None:
    from referee.platform.core.hashing import file_sha256

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"the prepared CheckList suite {p} is missing; re-load the competition")
    if file_sha256(p) != sha:  # only ever unpickle the exact file referee built or the host supplied
        raise ValueError(f"the prepared CheckList suite {p} changed since the competition was loaded; "
                         "re-load the competition")


def reference_row(ref: Any, k: int) -> tuple[str, str, str, str, str]:
    """One reference row as (label, test, case, example, split); cells are positional (empty where a
    held-out review has no test, or an INV/DIR example no label)."""
    if isinstance(ref, (list, tuple)) and len(ref) == 5:
        return tuple(ref)
    raise ValueError(f"{NAME}: reference row {k} is not (label, test, case, example, split); the "
                     "competition's data must come from its checklist section")


def _checklist_rows(references: Sequence[Any]) -> tuple[list[int], list[tuple[str, int, int]], np.ndarray]:
    rows, layout = [], []
    public = np.zeros(len(references), dtype=bool)
    for k, ref in enumerate(references):
        _, test, case, example, split = reference_row(ref, k)
        public[k] = split == "public"
        if test:
            rows.append(k)
            layout.append((test, int(case), int(example)))
    return rows, layout, public


def _prediction_lines(predictions: Any, rows: list[int], labels: list[str]) -> list[str]:
    """checklist ``pred_and_softmax`` lines; label predictions become one-hot probabilities, so every
    expectation (monotonic included) applies and any change of label counts as a full change."""
    if predictions.type == "probability":
        if list(predictions.columns) != labels:
            raise ValueError(f"{NAME}: prediction columns {list(predictions.columns)} must be the labels "
                             f"{labels} in that order")
        probs = np.asarray(predictions.values, dtype=np.float64)[rows]
    else:
        c.require_type(NAME, predictions, ACCEPTS)
        index = {lab: i for i, lab in enumerate(labels)}
        probs = np.zeros((len(rows), len(labels)), dtype=np.float64)
        for j, k in enumerate(rows):
            v = predictions.values[k].strip()
            if v not in index:
                raise ValueError(f"{NAME}: predicted label {v!r} (row {k}) is not one of {labels}")
            probs[j, index[v]] = 1.0
    pred = np.argmax(probs, axis=1)
    return [f"{p} " + " ".join(map(repr, row)) for p, row in zip(pred.tolist(), probs.tolist())]


# The engine hands every metric (statistics, then details) the same prediction and reference objects:
# remember the formatted input of recent pairs so the file is built once per submission, not per call.
# Keyed by the objects' ids; the entry holds the objects themselves, so an id is never reused while cached.
def _formatted(predictions: Any, references: Sequence[Any], labels: list[str]) -> tuple:
    def build() -> tuple:
        rows, layout, public = _checklist_rows(references)
        lines = _prediction_lines(predictions, rows, labels)
        where = hashlib.sha256(repr((len(references), rows, layout)).encode()).hexdigest()
        out = (rows, layout, public, lines, hashlib.sha256("\n".join(lines).encode()).hexdigest(), where)
        return (predictions, references, out)

    key = (id(predictions), id(references), tuple(labels))
    return get_runtime().cache("checklist.inputs").get_or_compute(key, build)[2]


def run_suite(predictions: Any, references: Sequence[Any], params: Mapping[str, Any]) -> SuiteRun:
    """Run the prepared suite on the predictions with checklist's ``run_from_file`` (cached per input)."""
    p = _resolve(params)
    if len(references) != len(predictions):
        raise ValueError(f"{NAME}: {len(predictions)} predictions but {len(references)} references")
    rows, layout, public, lines, digest, where = _formatted(predictions, references, p["labels"])
    key = (p["suite_sha256"], digest, where)
    _check_suite_file(p["suite"], p["suite_sha256"])
    run = get_runtime().cache("checklist.runs").get_or_compute(key, lambda: _run(p, rows, layout, lines))
    return replace(run, splits=public)


def _run(p: Mapping[str, Any], rows: list[int], layout: list[tuple[str, int, int]], lines: list[str]) -> SuiteRun:
    from referee.scoring.checklist.suite import case_layout, test_order

    loaded = _load_suite(p["suite"], p["suite_sha256"])
    with loaded.lock:
        suite = loaded.suite
        expected = case_layout(suite)
        if expected != layout:
            bad = next((k for k, (a, b) in enumerate(zip(expected, layout)) if a != b), min(len(expected), len(layout)))
            raise ValueError(f"{NAME}: the reference does not match the prepared suite (first difference at "
                             f"CheckList example {bad}); re-load the competition")
        fd, tmp = tempfile.mkstemp(prefix="referee-checklist-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            suite.run_from_file(tmp, file_format="pred_and_softmax", overwrite=True)
        finally:
            os.unlink(tmp)
        outcomes = []
        start = 0
        for name in test_order(suite):
            test, info = suite.tests[name], suite.info[name]
            n_ex = suite.test_ranges[name][1] - suite.test_ranges[name][0]
            first: dict[int, int] = {}
            for j, case in enumerate(test.result_indexes):
                first.setdefault(int(case), rows[start + j])
            start += n_ex
            passed = test.results.passed
            status = np.array([-1 if v is None else (0 if bool(v) else 1) for v in passed], dtype=np.int8)
            severity = np.array([_worst(e) for e in test.results.expect_results], dtype=np.float64)
            outcomes.append(TestOutcome(
                name=name, capability=str(info["capability"]), type=str(info["type"]),
                description=str(info.get("description", "") or ""), status=status,
                first_row=np.array([first[i] for i in range(len(status))], dtype=np.int64),
                severity=severity, data=test.data, labels=test.labels, results=test.results))
    return SuiteRun(labels=list(p["labels"]), tests=outcomes, splits=np.zeros(0, dtype=bool))


def _worst(expect_result: Any) -> float:
    vals = [float(v) for v in np.atleast_1d(np.asarray(expect_result, dtype=object)) if v is not None]
    return min(vals) if vals else 1.0


def _in_scope(t: TestOutcome, p: Mapping[str, Any]) -> bool:
    return ((p.get("capability") is None or t.capability == p["capability"])
            and (p.get("type") is None or t.type == p["type"])
            and (p.get("test") is None or t.name == p["test"]))


def scope_tests(run: SuiteRun, p: Mapping[str, Any]) -> list[TestOutcome]:
    chosen = [t for t in run.tests if _in_scope(t, p)]
    if not chosen:
        scope = {k: p[k] for k in ("capability", "type", "test") if p.get(k) is not None}
        raise ValueError(f"{NAME}: no test of the suite matches {scope}")
    return chosen


# -- scorer functions ----------------------------------------------------------------------------------
def statistics(predictions: Any, references: Sequence[Any], params: Mapping[str, Any]) -> np.ndarray:
    """Per reference row, ``[failed, counted]`` for each test in scope (on each case's first row)."""
    p = _resolve(params)
    run = run_suite(predictions, references, p)
    tests = scope_tests(run, p)
    out = np.zeros((len(references), 2 * len(tests)), dtype=np.float64)
    for j, t in enumerate(tests):
        counted = t.status >= 0
        out[t.first_row[counted], 2 * j] = (t.status[counted] == 1)
        out[t.first_row[counted], 2 * j + 1] = 1.0
    return out


def aggregate(sums: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Failure rate from summed ``[failed, counted]`` pairs: pooled over cases, or the mean over tests."""
    s = np.asarray(sums, dtype=np.float64)
    if s.ndim == 0 or s.shape[-1] % 2:
        raise ValueError(f"{NAME}: aggregate expects summed statistics of shape (..., 2 * tests), got {s.shape}")
    fails, counted = s[..., 0::2], s[..., 1::2]
    average = (params or {}).get("average", "cases")
    with np.errstate(divide="ignore", invalid="ignore"):
        if average == "tests":
            rates = np.where(counted > 0, fails / counted, np.nan)
            n_ok = (counted > 0).sum(axis=-1)
            return np.where(n_ok > 0, np.nansum(rates, axis=-1) / np.maximum(n_ok, 1), np.nan)[()]
        return (fails.sum(axis=-1) / counted.sum(axis=-1))[()]


def signature(params: Mapping[str, Any]) -> str:
    p = _resolve(params)
    shown = {"scope": "+".join(f"{k}={p[k]}" for k in ("capability", "type", "test") if p[k] is not None) or "all",
             "average": p["average"], "labels": p["labels"], "suite": p["suite_sha256"][:12]}
    from referee.scoring.checklist.library import checklist_version
    return c.format_signature(NAME, shown, f"{c.scorer_version(REVISION)}|checklist:{checklist_version()}")


def _label_name(labels: list[str], v: Any) -> str:
    try:
        return labels[int(v)]
    except (TypeError, ValueError, IndexError):
        return str(v)


def _example(labels: list[str], x: Any, pred: Any, conf: Any, expect: Any, expected: Any, role: str) -> dict:
    probs = np.atleast_1d(np.asarray(conf, dtype=np.float64)) if conf is not None else np.array([])
    out: dict[str, Any] = {"text": x if isinstance(x, str) else str(x), "role": role, "pred": _label_name(labels, pred),
           "passed": None if expect is None else bool(float(expect) > 0)}
    if probs.size == len(labels):
        out["probs"] = {lab: round(float(v), 6) for lab, v in zip(labels, probs)}
    if expected is not None:
        out["expected"] = _label_name(labels, expected)
    return out


def failing_cases(t: TestOutcome, labels: list[str], mask: np.ndarray, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` failed cases among rows in ``mask``, worst first, with their examples."""
    idx = [i for i in np.argsort(t.severity, kind="stable") if t.status[i] == 1 and mask[t.first_row[i]]]
    res = t.results
    out = []
    for i in idx[:limit]:
        data, preds, confs = t.data[i], res.preds[i], res.confs[i]
        expects = np.atleast_1d(np.asarray(res.expect_results[i], dtype=object))
        label = t.labels[i] if isinstance(t.labels, (list, tuple, np.ndarray)) else t.labels
        if isinstance(data, (list, tuple)):  # INV/DIR: original first, then perturbed examples
            exs = [_example(labels, x, preds[j], confs[j], expects[j] if j < len(expects) else None, label,
                            "original" if j == 0 else "perturbed") for j, x in enumerate(data)]
            exs = [exs[0]] + [e for e in exs[1:] if e["passed"] is False][:3]
        else:
            exs = [_example(labels, data, preds, confs, expects[0] if len(expects) else None, label, "case")]
        out.append({"case": int(i), "examples": exs})
    return out


def summarize(run: SuiteRun, mask: np.ndarray, failing: int) -> dict[str, Any]:
    tests = []
    for t in run.tests:
        keep = mask[t.first_row]
        st = t.status[keep]
        tests.append({"name": t.name, "capability": t.capability, "type": t.type, "description": t.description,
                      "cases": int(keep.sum()), "n": int((st >= 0).sum()), "fails": int((st == 1).sum()),
                      "filtered": int((st < 0).sum()),
                      "rate": mx.rate(int((st == 1).sum()), int((st >= 0).sum())),
                      "failing": failing_cases(t, run.labels, mask, failing)})
    return {"labels": run.labels, "tests": tests, "matrix": mx.matrix(tests)}


def details(predictions: Any, references: Sequence[Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The whole suite's matrix, per-test failure rates and failing examples (overall and per split)."""
    p = _resolve(params)
    run = run_suite(predictions, references, p)
    everything = np.ones(len(references), dtype=bool)
    out: dict[str, Any] = {"checklist": summarize(run, everything, p["failing_examples"]), "by_split": {}}
    for split, mask in (("public", run.splits), ("private", ~run.splits)):
        if mask.any():
            out["by_split"][split] = {"checklist": summarize(run, mask, p["failing_examples"])}
    return out


# -- held-out accuracy ---------------------------------------------------------------------------------
def accuracy_statistics(predictions: Any, references: Sequence[Any], params: Mapping[str, Any]) -> np.ndarray:
    """Per row ``[correct, 1]`` on held-out rows (references with a label and no test), zeros elsewhere."""
    p = _resolve(params, ACCURACY_PARAMS, ACCURACY_NAME)
    labels = p["labels"]
    out = np.zeros((len(references), 2), dtype=np.float64)
    if predictions.type == "probability":
        pred = [labels[j] for j in np.argmax(np.asarray(predictions.values, dtype=np.float64), axis=1)]
    else:
        pred = [v.strip() for v in predictions.values]
    for k, ref in enumerate(references):
        label, test = reference_row(ref, k)[:2]
        if label and not test:
            out[k] = (float(pred[k] == label), 1.0)
    if not out[:, 1].any():
        raise ValueError(f"{ACCURACY_NAME}: the competition has no held-out rows (checklist.heldout)")
    return out


def accuracy_aggregate(sums: Any, params: Mapping[str, Any] | None = None) -> Any:
    return c.ratio(sums, 2, ACCURACY_NAME)


def accuracy_signature(params: Mapping[str, Any]) -> str:
    p = _resolve(params, ACCURACY_PARAMS, ACCURACY_NAME)
    return c.format_signature(ACCURACY_NAME, {"labels": p["labels"], "suite": p["suite_sha256"][:12]},
                              c.scorer_version(REVISION))
