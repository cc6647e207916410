"""The typed schema of a competition's ``checklist:`` section.

A host gives either ``suite_file`` (a CheckList ``TestSuite`` it saved itself, a dill pickle) or
``tests`` (declarative tests that referee builds with CheckList's Editor and Perturb at load time)::

    checklist:
      labels: [negative, positive]          # class index -> name, the order of probability columns
      seed: 7
      tests:
        - name: negated positive
          capability: Negation
          type: MFT
          templates: ["I don't {pos_verb} the {thing}."]
          lexicons: {pos_verb: [like, love], thing: [food, movie]}
          label: negative
        - name: typos
          capability: Robustness
          type: INV
          examples: ["The movie was great.", "Awful service."]
          perturbation: {name: add_typos}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from referee.platform.core.errors import SpecError
from referee.platform.core.spec import validation_problems

TestType = Literal["MFT", "INV", "DIR"]
TEST_TYPES: tuple[str, ...] = ("MFT", "INV", "DIR")
# CheckList's own capability order (checklist.test_suite.TestSuite.summary); others follow, sorted.
CAPABILITY_ORDER = ("Vocabulary", "Taxonomy", "Robustness", "NER", "Fairness", "Temporal", "Negation",
                    "Coref", "SRL", "Logic")
RULES_PIPELINE = "rules"

# Perturbation name -> (options it accepts, needs spaCy docs, needs a dependency parser)
PERTURBATIONS: dict[str, tuple[frozenset[str], bool, bool]] = {
    "add_typos": (frozenset({"typos"}), False, False),
    "contractions": (frozenset(), False, False),
    "add_phrase": (frozenset({"phrases", "position"}), False, False),
    "punctuation": (frozenset(), True, False),
    "strip_punctuation": (frozenset(), True, False),
    "change_names": (frozenset({"n", "first_only", "last_only"}), True, False),
    "change_location": (frozenset({"n"}), True, False),
    "change_number": (frozenset({"n"}), True, False),
    "add_negation": (frozenset(), True, True),
    "remove_negation": (frozenset(), True, True),
}
_MASK_RE = re.compile(r"\{[^{}]*mask\d*\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelledText(_Model):
    """A template or example with its own expected label (MFT)."""

    text: str
    label: str | None = None


class PerturbationSpec(_Model):
    """One of CheckList's ``Perturb`` functions (or ``add_phrase``) with its options."""

    name: Literal["add_typos", "contractions", "add_phrase", "punctuation", "strip_punctuation",
                  "change_names", "change_location", "change_number", "add_negation", "remove_negation"]
    typos: int | None = Field(default=None, ge=1, le=10)
    n: int | None = Field(default=None, ge=1, le=50)  # perturbed copies per case
    first_only: bool | None = None
    last_only: bool | None = None
    phrases: list[str] | None = None
    position: Literal["end", "start"] | None = None

    @model_validator(mode="after")
    def _options_apply(self) -> "PerturbationSpec":
        allowed = PERTURBATIONS[self.name][0]
        given = {k for k in ("typos", "n", "first_only", "last_only", "phrases", "position")
                 if getattr(self, k) is not None}
        wrong = sorted(given - allowed)
        if wrong:
            raise ValueError(f"option(s) {wrong} do not apply to {self.name}; it takes "
                             f"{sorted(allowed) or 'no options'}")
        if self.name == "add_phrase" and not self.phrases:
            raise ValueError("add_phrase needs a non-empty list of phrases")
        return self

    @property
    def needs_docs(self) -> bool:
        return PERTURBATIONS[self.name][1]

    @property
    def needs_parser(self) -> bool:
        return PERTURBATIONS[self.name][2]


class ExpectationSpec(_Model):
    """What a test expects of the predictions.

    ``eq``: the prediction equals ``label`` (MFT default: each case's own label).
    ``not_eq``: the prediction is not ``label``. ``inv``: perturbed predictions keep the original
    prediction (a confidence change within ``tolerance`` passes). ``monotonic``: the probability of
    ``label`` (default: the original prediction) must not fall (``increasing``) or rise by more than
    ``tolerance``.
    """

    type: Literal["eq", "not_eq", "inv", "monotonic"]
    label: str | None = None
    tolerance: float = Field(default=0.1, ge=0.0, le=1.0)
    increasing: bool = True

    @model_validator(mode="after")
    def _label(self) -> "ExpectationSpec":
        if self.type == "not_eq" and self.label is None:
            raise ValueError("not_eq needs the label the prediction must not be")
        return self


class TestSpec(_Model):
    """One declarative CheckList test."""

    __test__ = False  # not a pytest class

    name: str = Field(min_length=1, max_length=200)
    capability: str = Field(min_length=1, max_length=100)
    type: TestType
    description: str = ""
    templates: list[str | LabelledText] = Field(default_factory=list)
    examples: list[str | LabelledText] = Field(default_factory=list)
    lexicons: dict[str, list[str]] = Field(default_factory=dict)
    label: str | None = None
    nsamples: int | None = Field(default=None, ge=1, le=100_000)
    perturbation: PerturbationSpec | None = None
    expectation: ExpectationSpec | None = None

    @field_validator("templates")
    @classmethod
    def _no_mask(cls, v: list[str | LabelledText]) -> list[str | LabelledText]:
        for t in v:
            text = t if isinstance(t, str) else t.text
            if _MASK_RE.search(text):
                raise ValueError(f"template {text!r} uses a {{mask}} tag: filling it needs a masked language "
                                 "model (Editor.suggest: transformers and downloaded weights), which referee "
                                 "does not load; list the fill-ins in `lexicons` instead")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "TestSpec":
        if not self.templates and not self.examples:
            raise ValueError("give `templates` or `examples` (or both)")
        if self.type == "MFT":
            if self.perturbation is not None:
                raise ValueError("an MFT test has no perturbation (use INV or DIR)")
            exp = self.expectation
            if exp is not None and exp.type not in ("eq", "not_eq"):
                raise ValueError(f"an MFT test expects eq or not_eq, not {exp.type}")
            if exp is None or (exp.type == "eq" and exp.label is None):
                missing = [t if isinstance(t, str) else t.text for t in (*self.templates, *self.examples)
                           if self.label is None and (isinstance(t, str) or t.label is None)]
                if missing:
                    raise ValueError(f"MFT needs an expected label: set `label`, or a label on every "
                                     f"template/example (none for {missing[0]!r})")
        else:
            if self.perturbation is None:
                raise ValueError(f"an {self.type} test needs a `perturbation`")
            if self.type == "DIR" and self.expectation is None:
                raise ValueError("a DIR test needs an `expectation` (monotonic, eq or not_eq)")
            exp = self.expectation
            if exp is not None and self.type == "DIR" and exp.type == "inv":
                raise ValueError("a DIR test expects a direction (monotonic, eq or not_eq); use type INV for "
                                 "invariance")
            if exp is not None and self.type == "INV" and exp.type != "inv":
                raise ValueError(f"an INV test expects invariance (inv), not {exp.type}; use type DIR")
        return self

    def label_names(self) -> set[str]:
        names = {self.label} if self.label else set()
        names |= {t.label for t in (*self.templates, *self.examples) if not isinstance(t, str) and t.label}
        if self.expectation is not None and self.expectation.label:
            names.add(self.expectation.label)
        return names


class LeaderboardSpec(_Model):
    """Behavioural columns on the leaderboard: ``overall``, a capability, a test type (MFT/INV/DIR),
    a matrix cell ``Capability/TYPE`` or a test name. Values are failure rates (lower is better)."""

    metric: str | None = None  # the checklist metric whose details feed the columns (default: the first)
    columns: list[str] | None = None  # default: overall + every capability


class HeldoutSpec(_Model):
    """Ordinary labelled test data scored by accuracy next to the CheckList matrix (optional)."""

    file: Path  # CSV with an id, a text and a label column
    id_column: str = "id"
    text_column: str = "text"
    label_column: str = "label"


class ChecklistSpec(_Model):
    """The ``checklist:`` section (see the module docstring)."""

    labels: list[str] = Field(min_length=2)
    suite_file: Path | None = None
    heldout: HeldoutSpec | None = None
    tests: list[TestSpec] | None = None
    lexicons: dict[str, list[str]] = Field(default_factory=dict)
    seed: int = 0
    spacy_model: str = RULES_PIPELINE
    output_dir: Path = Path("data/checklist")
    failing_examples: int = Field(default=3, ge=0, le=50)
    public_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    max_cases_per_test: int = Field(default=5000, ge=1)
    leaderboard: LeaderboardSpec = Field(default_factory=LeaderboardSpec)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"labels must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ChecklistSpec":
        if (self.suite_file is None) == (self.tests is None):
            raise ValueError("give exactly one of `suite_file` (a TestSuite you saved) or `tests`")
        if self.tests is not None:
            if not self.tests:
                raise ValueError("tests: declare at least one test")
            names = [t.name for t in self.tests]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"tests: duplicate test names {dupes}")
            for i, t in enumerate(self.tests):
                unknown = sorted(t.label_names() - set(self.labels))
                if unknown:
                    raise ValueError(f"tests[{i}] ({t.name!r}): label(s) {unknown} are not in labels "
                                     f"{self.labels}")
        return self


def parse_checklist(raw: dict[str, Any], source: str) -> ChecklistSpec:
    """Validate a competition's ``checklist`` mapping; ``SpecError`` names the field."""
    try:
        return ChecklistSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(source, validation_problems(exc, "checklist")) from None


def capability_sort_key(capability: str) -> tuple[int, str]:
    return (CAPABILITY_ORDER.index(capability) if capability in CAPABILITY_ORDER else len(CAPABILITY_ORDER),
            capability)
