"""Competition spec: one YAML file per competition, validated into typed models.

Errors name the file, the field and what is wrong (``SpecError``). Paths inside the spec are
resolved relative to the YAML file.

The core model knows only the core fields. Every other top-level key is a plugin's config section
(``sandbox:``, ``cost:``, ``checklist:``, ``leaderboard:``, a third-party plugin's own): it is kept as
written and validated with the owning plugin's pydantic model by whoever knows the plugins
(``load_competition(..., sections=...)``; the controller's loader passes every registered section).

What plugins derive from the spec at load time (a built CheckList suite's data files, its split rule,
parameters injected into metrics) is a ``Derived`` record kept beside the spec, never written into it:
``effective_data``, ``effective_split``, ``effective_prediction`` and ``metric_params`` combine both.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from referee.platform.core.errors import SpecError
from referee.platform.core.units import Duration, Size

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


FileFormat = Literal["csv", "tsv", "jsonl", "txt"]
PredictionType = Literal["probability", "score", "label", "text"]  # see core/predictions.py


class PredictionSpec(_Model):
    """What a prediction file must look like."""

    format: FileFormat = "csv"
    id_column: str = "id"
    type: PredictionType = "probability"
    columns: list[str] = Field(default_factory=lambda: ["label"])
    labels: list[str] | None = None  # allowed labels for type=label
    sum_to_one: bool = False  # rows of probability columns must sum to 1
    sum_tolerance: float = 1e-6
    max_bytes: Size = 100 * 1024**2
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        import codecs
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r} (use e.g. utf-8)") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> "PredictionSpec":
        if not self.columns:
            raise ValueError("columns: at least one prediction column is required")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns: each column may appear once, got {self.columns}")
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if self.format == "txt" and len(self.columns) != 1:
            raise ValueError("a txt prediction file holds exactly one column per line")
        if self.id_column in self.columns:
            raise ValueError(f"id_column {self.id_column!r} is also listed in columns")
        if self.sum_to_one and self.type != "probability":
            raise ValueError(f"sum_to_one applies to probability predictions, not type {self.type!r}")
        return self


class DataSpec(_Model):
    """Inputs (what submissions see) and references (hidden)."""

    input: Path | None = None  # directory handed to code submissions, read-only
    reference: Path  # the hidden answers
    reference_format: FileFormat | None = None  # default: from the suffix
    reference_id_column: str = "id"
    reference_columns: list[str] = Field(default_factory=lambda: ["label"], min_length=1)


class SplitSpec(_Model):
    """Kaggle-style split of test rows into public and private."""

    column: str | None = None  # a reference column holding 'public' / 'private'
    public_fraction: float | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _one_way(self) -> "SplitSpec":
        if self.column is None and self.public_fraction is None:
            self.public_fraction = 1.0
        if self.column is not None and self.public_fraction is not None:
            raise ValueError("give either column or public_fraction, not both")
        if self.public_fraction is not None and not 0.0 <= self.public_fraction <= 1.0:
            raise ValueError(f"public_fraction must be within [0, 1], got {self.public_fraction}")
        return self


class MetricSpec(_Model):
    name: str | None = None  # column name on the leaderboard; defaults to the scorer name
    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    primary: bool = False
    direction: Literal["maximize", "minimize"] | None = None  # default: from the scorer

    @property
    def key(self) -> str:
        return self.name or self.scorer


def check_metrics(metrics: list[MetricSpec]) -> None:
    """At least one metric, at most one primary (the first when none is marked), distinct names."""
    if not metrics:
        raise ValueError("metrics: declare at least one metric")
    primaries = [m for m in metrics if m.primary]
    if len(primaries) > 1:
        raise ValueError("metrics: only one metric may be primary, found " + ", ".join(m.key for m in primaries))
    if not primaries:
        metrics[0].primary = True
    keys = [m.key for m in metrics]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"metrics: duplicate metric names {dupes}; give each a distinct name")


class LimitsSpec(_Model):
    per_team_per_day: int | None = Field(default=None, ge=0)
    total: int | None = Field(default=None, ge=0)
    concurrent: int | None = Field(default=None, ge=1)


LEADERBOARD_SPLITS: tuple[str, ...] = ("public", "private")
Visibility = Literal["hidden", "host", "public"]
VISIBILITIES: tuple[str, ...] = ("hidden", "host", "public")
PUBLISH_AT_END = "publish_at_end"
LeaderboardSetting = Literal["hidden", "host", "public", "publish_at_end"]


class FinalSelection(_Model):
    """How each team's entry on a phase's private leaderboard is chosen.

    ``best_public`` (default): the team's best submission on the public split (Kaggle's automatic
    selection). ``pick``: each team picks up to ``max`` submissions before the phase ends; its entry
    is the best of those on the private split, and a team that picked none gets its best-public one.
    Written as ``final_selection: pick`` or ``final_selection: {rule: pick, max: 2}``.
    """

    rule: Literal["best_public", "pick"] = "best_public"
    max: int = Field(default=2, ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"rule": v} if isinstance(v, str) else v


class PhaseSpec(_Model):
    """A phase: a date window, and what it changes of the competition.

    ``data``, ``split`` and ``metrics`` replace the competition's own for this phase (left out: the
    competition's); each limit the phase names in ``limits`` replaces the competition's. Quotas
    always count the submissions of one phase. Who sees each
    leaderboard of the phase: ``hidden`` (the organisers only; teams see no scores of that split),
    ``host`` (the organisers see the leaderboard; each team sees its own scores) or ``public``
    (everyone); ``publish_at_end`` is ``hidden`` until the phase ends, then ``public``. The host
    may switch either at any time (``referee phase publish``).
    """

    name: str
    description: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    gpus: int | None = Field(default=None, ge=0)  # overrides resources.gpus for this phase
    data: DataSpec | None = None
    split: SplitSpec | None = None
    metrics: list[MetricSpec] | None = None
    limits: LimitsSpec | None = None
    public_leaderboard: LeaderboardSetting = "public"
    private_leaderboard: LeaderboardSetting = "hidden"
    final_selection: FinalSelection = Field(default_factory=FinalSelection)

    @field_validator("start", "end")
    @classmethod
    def _tz(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return v

    @model_validator(mode="after")
    def _check(self) -> "PhaseSpec":
        if self.metrics is not None:
            check_metrics(self.metrics)
        return self

    def contains(self, when: dt.datetime) -> bool:
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)

    def ended(self, when: dt.datetime | None = None) -> bool:
        """Whether the phase's end has passed (a phase without an end never ends)."""
        return self.end is not None and (when or dt.datetime.now(dt.timezone.utc)) >= self.end

    @property
    def has_own_data(self) -> bool:
        """Whether the phase scores against anything but the competition's data, split and metrics
        (then plugins derive, and loading snapshots, for it separately)."""
        return self.data is not None or self.split is not None or self.metrics is not None

    def leaderboard_setting(self, split: str) -> str:
        return self.private_leaderboard if split == "private" else self.public_leaderboard

    def visibility(self, split: str, when: dt.datetime | None = None) -> Visibility:
        """The spec's visibility of the ``split`` leaderboard at ``when`` (default now)."""
        setting = self.leaderboard_setting(split)
        if setting == PUBLISH_AT_END:
            return "public" if self.ended(when) else "hidden"
        return setting  # type: ignore[return-value]


class ParticipationSpec(_Model):
    """Who may take part: sign-up, registration and teams (see README, "Accounts and teams").

    ``registration``: ``closed`` (default: only the host creates teams and team tokens), ``open``
    (any signed-up user may register and form a team) or ``approval`` (the host approves each
    registration first). ``max_team_size`` caps the members of a participant team.
    """

    registration: Literal["closed", "open", "approval"] = "closed"
    max_team_size: int | None = Field(default=None, ge=1)
    accept_rules: bool = False  # each participant accepts pages/rules.md before downloading or submitting


class ResourcesSpec(_Model):
    """What each job gets. ``shards: N`` splits a code submission's inputs into N shards by item id: N
    jobs, each with these resources and this timeout, merged into one prediction file."""

    cpu: float = Field(default=1.0, gt=0)
    memory: Size = Field(default=2 * 1024**3, gt=0)
    gpus: int = Field(default=0, ge=0)
    timeout: Duration = Field(default=3600.0, gt=0)
    instance_type: str | None = None
    shards: int = Field(default=1, ge=1, le=10000)


class BackendSpec(_Model):
    """Where jobs run, and how the controller treats the backend's control plane.

    ``poll_interval``/``max_poll_interval``: polling starts at the first and grows while nothing changes
    up to the second (defaults: the backend's). ``stuck_after``: a job waiting longer for a machine is
    shown as stuck with the backend's reason; ``on_stuck: cancel`` then cancels it as a platform failure
    (never charged), ``wait`` keeps it queued. ``outage_limit``: how long ``referee run`` rides out an
    unreachable backend before it stops with exit status 4 (``referee serve`` never stops)."""

    name: str = "local"
    options: dict[str, Any] = Field(default_factory=dict)
    max_in_flight: int = Field(default=4, ge=1)
    max_infra_retries: int = Field(default=3, ge=0)
    poll_interval: Duration | None = Field(default=None, ge=0)
    max_poll_interval: Duration | None = Field(default=None, ge=0)
    stuck_after: Duration = Field(default=1800.0, gt=0)
    on_stuck: Literal["wait", "cancel"] = "wait"
    outage_limit: Duration = Field(default=600.0, gt=0)


class Derived(_Model):
    """What plugins derived from a competition's spec when it loaded, kept beside the spec.

    A field left at None (or empty) keeps the spec's own value. ``metric_params`` maps a metric key
    to the parameters added to that metric's own; ``facts`` holds JSON-able facts per plugin (for
    example a built CheckList suite's manifest); ``sources`` names the plugins that contributed.
    ``phases`` holds what was derived for each phase with its own data, split or metrics
    (``Competition.for_phase`` puts it beside that phase's view).
    """

    sources: list[str] = Field(default_factory=list)
    data: DataSpec | None = None
    split: SplitSpec | None = None
    prediction_labels: list[str] | None = None
    metric_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)
    phases: dict[str, "Derived"] = Field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self == Derived()

    def merge(self, other: "Derived", source: str) -> "Derived":
        """Both records in one; ValueError when two plugins derive the same value."""
        clash = [name for name in ("data", "split", "prediction_labels")
                 if getattr(self, name) is not None and getattr(other, name) is not None]
        params = {k: dict(v) for k, v in self.metric_params.items()}
        for metric, values in other.metric_params.items():
            mine = params.setdefault(metric, {})
            clash += [f"metric_params.{metric}.{k}" for k in values if k in mine]
            mine.update(values)
        if clash:
            raise ValueError(f"{source} derives {clash}, which {self.sources} already derived")
        return Derived(sources=[*self.sources, *other.sources, source], data=self.data or other.data,
                       split=self.split or other.split,
                       prediction_labels=self.prediction_labels or other.prediction_labels,
                       metric_params=params, facts={**self.facts, **other.facts},
                       phases={**self.phases, **other.phases})


class Competition(_Model):
    """A validated competition spec (as written), with what plugins derived from it beside it."""

    id: str
    title: str
    description: str = ""
    prediction: PredictionSpec = Field(default_factory=PredictionSpec)
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    phases: list[PhaseSpec] = Field(default_factory=lambda: [PhaseSpec(name="main")], min_length=1)
    metrics: list[MetricSpec]
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    participation: ParticipationSpec = Field(default_factory=ParticipationSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    source_path: Path | None = Field(default=None, exclude=True)
    # every other top-level key is a plugin's config section, kept as written (see the module docstring)
    model_config = ConfigDict(extra="allow")
    _derived: Derived = PrivateAttr(default_factory=lambda: Derived())
    _phase_view: str | None = PrivateAttr(default=None)
    _whole: "Competition | None" = PrivateAttr(default=None)  # what a phase view was made from

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"{v!r} is not a valid id (lowercase letters, digits, '-' and '_', "
                             "starting with a letter or digit, at most 64 characters)")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Competition":
        check_metrics(self.metrics)
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError("phases: phase names must be unique")
        for p in self.phases:
            if p.start and p.end and p.end <= p.start:
                raise ValueError(f"phases: phase {p.name!r} ends before it starts")
        return self

    @property
    def primary_metric(self) -> MetricSpec:
        return next(m for m in self.metrics if m.primary)

    def phase(self, name: str | None = None, when: dt.datetime | None = None) -> PhaseSpec:
        """The phase by name, or the one open at ``when`` (default now), or the last one."""
        if name is not None:
            for p in self.phases:
                if p.name == name:
                    return p
            raise SpecError(str(self.source_path or self.id),
                            [("phases", f"no phase named {name!r}; known: {[p.name for p in self.phases]}")])
        when = when or dt.datetime.now(dt.timezone.utc)
        for p in self.phases:
            if p.contains(when):
                return p
        return self.phases[-1]

    # -- phases ---------------------------------------------------------------------------------------
    def for_phase(self, name: str | None = None, when: dt.datetime | None = None, *,
                  strict: bool = True) -> "Competition":
        """The competition as phase ``name`` (default: the one open at ``when``) runs it: the phase's
        data, split, metrics and limits in place of the competition's where it names them, and what
        was derived for that phase beside it. Everything that scores, validates or counts a phase's
        submissions reads this view. A view is never stored (``to_json`` refuses it).

        An unknown ``name`` is a ``SpecError``; with ``strict=False`` (a stored submission of a phase
        a later spec dropped) it is the competition as a whole."""
        if self._whole is not None:
            return self if name == self._phase_view else self._whole.for_phase(name, when, strict=strict)
        if not strict and name is not None and name not in self.phase_names():
            return self
        ph = self.phase(name, when)
        update: dict[str, Any] = {}
        for field_name in ("data", "split", "metrics"):
            value = getattr(ph, field_name)
            if value is not None:
                update[field_name] = value
        if ph.limits is not None:  # the limits a phase names replace the competition's; the others stay
            update["limits"] = self.limits.model_copy(update=ph.limits.model_dump(exclude_unset=True))
        base = self._derived.model_copy(update={"phases": {}})
        derived = self._derived.phases.get(ph.name, Derived()) if ph.has_own_data else base
        view = self.model_copy(update=update)
        view._derived = derived
        view._phase_view = ph.name
        view._whole = self
        return view

    @property
    def phase_name(self) -> str | None:
        """The phase this is a view of (``for_phase``); None for the competition as a whole."""
        return self._phase_view

    def phase_names(self) -> list[str]:
        return [p.name for p in self.phases]

    @property
    def base_dir(self) -> Path:
        return self.source_path.parent if self.source_path else Path.cwd()

    def resolve(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    # -- plugin sections and derived values ----------------------------------------------------------
    def section_names(self) -> list[str]:
        """The top-level keys of the YAML that are not core fields: plugins' config sections."""
        return sorted(self.model_extra or {})

    def section_data(self, name: str) -> Any:
        """A plugin section as written (None when the YAML leaves it out). Read it typed with
        ``referee.plugins.manager.config_section``."""
        return (self.model_extra or {}).get(name)

    @property
    def derived(self) -> Derived:
        return self._derived

    def with_derived(self, derived: Derived) -> "Competition":
        """A copy of this competition (the same spec) with ``derived`` beside it."""
        comp = self.model_copy()
        comp._derived = derived
        return comp

    @property
    def effective_data(self) -> DataSpec:
        """The data the competition runs on: derived by a plugin, else the spec's."""
        return self._derived.data or self.data

    @property
    def effective_split(self) -> SplitSpec:
        return self._derived.split or self.split

    @property
    def effective_prediction(self) -> PredictionSpec:
        if self._derived.prediction_labels is None or self.prediction.labels is not None:
            return self.prediction
        return self.prediction.model_copy(update={"labels": list(self._derived.prediction_labels)})

    def metric_params(self, metric: MetricSpec | str) -> dict[str, Any]:
        """A metric's parameters: the spec's plus those a plugin derived (a fresh dict)."""
        m = metric if isinstance(metric, MetricSpec) else next(x for x in self.metrics if x.key == metric)
        return {**m.params, **self._derived.metric_params.get(m.key, {})}

    @property
    def reference_path(self) -> Path:
        return self.resolve(self.effective_data.reference)  # type: ignore[return-value]

    @property
    def input_path(self) -> Path | None:
        return self.resolve(self.effective_data.input)

    # -- serialisation ---------------------------------------------------------------------------------
    def spec_dict(self) -> dict[str, Any]:
        """The spec as written: the fields the YAML gave (validated, so sizes and durations are numbers),
        plugin sections as they were, nothing derived. JSON-able; ``model_validate`` gives it back."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self) -> str:
        """The spec as written plus where it came from (what the store keeps; derived values apart)."""
        if self._phase_view is not None:
            raise ValueError(f"the view of phase {self._phase_view!r} is not a competition spec; store the "
                             "competition itself")
        doc = self.spec_dict()
        doc["_source_path"] = str(self.source_path) if self.source_path else None
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, derived: Derived | None = None) -> "Competition":
        doc = json.loads(text)
        src = doc.pop("_source_path", None)
        comp = cls.model_validate(doc)
        comp.source_path = Path(src) if src else None
        if derived is not None:
            comp._derived = derived
        return comp


_UNION_TAGS = {"str", "int", "float", "bool", "none"}


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in _UNION_TAGS or "[" in str(part) or str(part)[:1].isupper():
            continue  # pydantic names the member of a union it tried (str, LabelledText, ...): not a field
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_problems(exc: ValidationError, prefix: str = "", *,
                        unknown: str = "unknown field (check the spelling)") -> list[tuple[str, str]]:
    """A pydantic error as ``(field, message)`` pairs for ``SpecError``: fields as ``a.b[0].c`` under
    ``prefix`` (a section name), messages without pydantic's prefixes, and the value that was given."""
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] != "value_error" and isinstance(err.get("input"), (str, int, float, bool)):
            msg += f" (got {err['input']!r})"
        where = _field_path(err["loc"])
        problems.append((f"{prefix}.{where}" if prefix and where else prefix or where, msg))
    return problems


def section_problems(name: str, model: type[BaseModel], raw: Any) -> list[tuple[str, str]]:
    """Problems of one plugin section validated with its model, as ``(name.field, message)``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return [(name, f"must be a mapping of settings, got {type(raw).__name__}")]
    try:
        model.model_validate(dict(raw))
    except ValidationError as exc:
        return validation_problems(exc, name)
    return []


def load_competition(path: str | Path, *, check_files: bool = True,
                     sections: Mapping[str, type[BaseModel]] | None = None) -> Competition:
    """Read and validate a competition YAML file. Raises ``SpecError`` naming file and field.

    ``sections`` maps the name of every known plugin section to its model: with it, each section is
    validated and an unknown top-level key is an error; without it, plugin sections are kept as
    written and checked later by whoever reads them.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "competition.yaml"
    if not path.exists():
        raise SpecError(str(path), [("", "file not found")])
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [("", f"not UTF-8 text: {exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(str(path), [("", f"{where}YAML syntax error: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(doc, dict):
        raise SpecError(str(path), [("", "the top level must be a mapping of fields (id, title, data, metrics, ...)")])
    problems: list[tuple[str, str]] = []
    if sections is not None:
        for key in doc:
            if key in Competition.model_fields:
                continue
            if key not in sections:
                problems.append((str(key), "unknown field (check the spelling); core fields: "
                                 + ", ".join(f for f in Competition.model_fields if f != "source_path")
                                 + "; plugin sections: " + (", ".join(sorted(sections)) or "none")))
            else:
                problems += section_problems(str(key), sections[key], doc[key])
    try:
        comp = Competition.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(str(path), validation_problems(exc) + problems) from None
    if problems:
        raise SpecError(str(path), problems)
    comp.source_path = path.resolve()
    if check_files:
        check_data_files(comp)
    return comp


def check_data_files(comp: Competition) -> None:
    """Every data file the competition and each of its phases name exists (``SpecError`` otherwise)."""
    problems: list[tuple[str, str]] = []
    views = [("", comp)] + [(f"phases[{i}].", comp.for_phase(p.name)) for i, p in enumerate(comp.phases)
                            if p.data is not None]
    for prefix, view in views:
        if not view.reference_path.exists():
            problems.append((f"{prefix}data.reference", f"file not found: {view.reference_path}"))
        if view.input_path is not None and not view.input_path.exists():
            problems.append((f"{prefix}data.input", f"not found: {view.input_path}"))
    if problems:
        raise SpecError(str(comp.source_path), problems)
