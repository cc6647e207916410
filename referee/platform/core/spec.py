"""Competition spec: one YAML file per competition, validated into typed models.

Errors name the file, the field and what is wrong (``SpecError``). Paths inside the spec are
resolved relative to the YAML file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
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
PredictionType = Literal["probability", "label", "text"]


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


class PhaseSpec(_Model):
    name: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    gpus: int | None = Field(default=None, ge=0)  # overrides resources.gpus for this phase

    @field_validator("start", "end")
    @classmethod
    def _tz(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=dt.timezone.utc)
        return v

    def contains(self, when: dt.datetime) -> bool:
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)


class MetricSpec(_Model):
    name: str | None = None  # column name on the leaderboard; defaults to the scorer name
    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    primary: bool = False
    direction: Literal["maximize", "minimize"] | None = None  # default: from the scorer

    @property
    def key(self) -> str:
        return self.name or self.scorer


class LimitsSpec(_Model):
    per_team_per_day: int | None = Field(default=None, ge=0)
    total: int | None = Field(default=None, ge=0)
    concurrent: int | None = Field(default=None, ge=1)


class ResourcesSpec(_Model):
    cpu: float = Field(default=1.0, gt=0)
    memory: Size = Field(default=2 * 1024**3, gt=0)
    gpus: int = Field(default=0, ge=0)
    timeout: Duration = Field(default=3600.0, gt=0)
    instance_type: str | None = None


class BackendSpec(_Model):
    name: str = "local"
    options: dict[str, Any] = Field(default_factory=dict)
    max_in_flight: int = Field(default=4, ge=1)
    max_infra_retries: int = Field(default=3, ge=0)


class Competition(_Model):
    """A validated competition spec."""

    id: str
    title: str
    description: str = ""
    prediction: PredictionSpec = Field(default_factory=PredictionSpec)
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    phases: list[PhaseSpec] = Field(default_factory=lambda: [PhaseSpec(name="main")], min_length=1)
    metrics: list[MetricSpec]
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    sandbox: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, Any] = Field(default_factory=dict)
    checklist: dict[str, Any] | None = None
    leaderboard: dict[str, Any] = Field(default_factory=dict)
    registry: dict[str, Any] | None = None  # runtime.registry.RegistrySettings: where images go for fleets
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"{v!r} is not a valid id (lowercase letters, digits, '-' and '_', "
                             "starting with a letter or digit, at most 64 characters)")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Competition":
        if not self.metrics:
            raise ValueError("metrics: declare at least one metric")
        primaries = [m for m in self.metrics if m.primary]
        if len(primaries) > 1:
            raise ValueError("metrics: only one metric may be primary, found "
                             + ", ".join(m.key for m in primaries))
        if not primaries:
            self.metrics[0].primary = True
        keys = [m.key for m in self.metrics]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"metrics: duplicate metric names {dupes}; give each a distinct name")
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

    @property
    def base_dir(self) -> Path:
        return self.source_path.parent if self.source_path else Path.cwd()

    def resolve(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def reference_path(self) -> Path:
        return self.resolve(self.data.reference)  # type: ignore[return-value]

    @property
    def input_path(self) -> Path | None:
        return self.resolve(self.data.input)

    def to_json(self) -> str:
        doc = self.model_dump(mode="json")
        doc["data"]["reference"] = str(self.reference_path)
        doc["data"]["input"] = str(self.input_path) if self.input_path else None
        doc["_source_path"] = str(self.source_path) if self.source_path else None
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Competition":
        doc = json.loads(text)
        src = doc.pop("_source_path", None)
        comp = cls.model_validate(doc)
        comp.source_path = Path(src) if src else None
        return comp


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_competition(path: str | Path, *, check_files: bool = True) -> Competition:
    """Read and validate a competition YAML file. Raises ``SpecError`` naming file and field."""
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
    try:
        comp = Competition.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append((_field_path(err["loc"]), msg))
        raise SpecError(str(path), problems) from None
    comp.source_path = path.resolve()
    if check_files:
        check_data_files(comp)
    return comp


def check_data_files(comp: Competition) -> None:
    problems = []
    if not comp.reference_path.exists():
        problems.append(("data.reference", f"file not found: {comp.reference_path}"))
    if comp.input_path is not None and not comp.input_path.exists():
        problems.append(("data.input", f"not found: {comp.input_path}"))
    if problems:
        raise SpecError(str(comp.source_path), problems)
