"""The ``cost:`` section of a competition spec, validated, and how a job's hourly rate is resolved.

Example::

    cost:
      instance_type: g4dn.xlarge     # default: resources.instance_type
      pricing: spot                  # on_demand (default) | spot
      spot_discount: 0.65            # optional: overrides the family's typical discount
      local_equivalent: c5.large     # price local/docker runs as this type; null: zero-cost time
      share: whole                   # whole: a job pays its instance's full price; reserved: only the
                                     #   fraction it reserves (1 / jobs of its size that fit on it)
      budget: 5000                   # USD for the whole competition
      team_budget: 200               # USD per team
      estimated_runtime: 9h          # budget projection per job (default: resources.timeout)
      prices:                        # override or add instance types
        g4dn.xlarge: {on_demand: 0.50, spot: 0.16}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from referee.platform.core.errors import SpecError
from referee.platform.core.spec import Competition, validation_problems
from referee.platform.core.units import parse_duration
from referee.platform.cost.catalog import (
    Catalog,
    Pricing,
    UnknownInstanceType,
    default_catalog,
)
from referee.plugins.manager import config_section

USD = "USD"


class InstanceOverride(BaseModel):
    """A price-table row a competition patches or adds (new types need on_demand, vcpu, memory_gib)."""

    model_config = ConfigDict(extra="forbid")
    on_demand: float | None = Field(default=None, gt=0)
    spot: float | None = Field(default=None, gt=0)
    spot_discount: float | None = Field(default=None, ge=0, lt=1)
    vcpu: float | None = Field(default=None, gt=0)
    memory_gib: float | None = Field(default=None, gt=0)
    gpus: int | None = Field(default=None, ge=0)
    gpu_model: str | None = None


class CostConfig(BaseModel):
    """Typed ``cost:`` section. Build it with :func:`cost_config`, which also checks instance names."""

    model_config = ConfigDict(extra="forbid")
    instance_type: str | None = None
    pricing: Literal["on_demand", "spot"] = "on_demand"
    spot_discount: float | None = Field(default=None, ge=0, lt=1)
    local_equivalent: str | None = None
    local_backends: list[str] = Field(default_factory=lambda: ["local", "docker", "fake"])
    share: Literal["whole", "reserved"] = "whole"
    budget: float | None = Field(default=None, ge=0)
    team_budget: float | None = Field(default=None, ge=0)
    estimated_runtime: float | None = None
    trackers: list[str] | None = None  # default: every installed tracker
    prices: dict[str, InstanceOverride] = Field(default_factory=dict)
    _catalog: Catalog | None = PrivateAttr(default=None)

    @field_validator("estimated_runtime", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("must be a positive duration such as 9h or 30m")
        return seconds

    @property
    def catalog(self) -> Catalog:
        """The public price table with this competition's overrides (and global spot discount)."""
        if self._catalog is None:
            overrides = {name: o.model_dump(exclude_none=True) for name, o in self.prices.items()}
            cat = default_catalog().with_overrides(overrides)
            if self.spot_discount is not None:
                cat = cat.with_overrides({it.name: {"spot_discount": self.spot_discount} for it in cat
                                          if "spot_discount" not in overrides.get(it.name, {})})
            self._catalog = cat
        return self._catalog

    def rate(self, backend: str | None, *, requested: str | None = None, reported: str | None = None,
             cpu: float | None = None, memory: int | None = None, gpus: int = 0) -> "Rate":
        """The hourly rate of one job: the instance the backend reported, else the local equivalent for
        local backends, else the requested instance type. Unknown types price as zero, with a note."""
        if reported:
            return self._priced(reported, "reported", self.pricing, cpu, memory, gpus)
        if backend in self.local_backends:
            if self.local_equivalent is None:
                return Rate(None, "on_demand", 0.0, 1.0, "local", "local run; no local_equivalent set")
            return self._priced(self.local_equivalent, "local-equivalent", "on_demand", cpu, memory, gpus)
        name = requested or self.instance_type
        if name is None:
            return Rate(None, self.pricing, 0.0, 1.0, "unpriced", "no instance type known for this job")
        return self._priced(name, "requested", self.pricing, cpu, memory, gpus)

    def _priced(self, name: str, basis: str, pricing: Pricing, cpu: float | None, memory: int | None,
                gpus: int) -> "Rate":
        try:
            it = self.catalog.get(name)
        except UnknownInstanceType as exc:
            return Rate(name, pricing, 0.0, 1.0, "unpriced", str(exc))
        share = 1.0 if self.share == "whole" else 1.0 / it.slots(cpu=cpu, memory=memory, gpus=gpus)
        return Rate(name, pricing, it.hourly(pricing), share, basis)


@dataclass(frozen=True)
class Rate:
    """What one hour of a job costs: a share of an instance's hourly price."""

    instance_type: str | None
    pricing: str
    hourly: float  # USD per hour of the whole instance
    share: float  # fraction of the instance the job reserves (1 / jobs that fit on it)
    basis: str  # reported | requested | local-equivalent | local | unpriced
    note: str = ""

    @property
    def per_hour(self) -> float:
        return self.hourly * self.share

    def to_dict(self) -> dict[str, Any]:
        d = {"instance_type": self.instance_type, "pricing": self.pricing, "hourly": self.hourly,
             "share": self.share, "basis": self.basis}
        if self.note:
            d["note"] = self.note
        return d


def cost_problems(cfg: CostConfig | None, comp: Competition | None = None) -> list[tuple[str, str]]:
    """What the ``cost:`` model cannot see alone, as ``(field, message)``: the price table with the
    section's overrides, the instance types it names and ``resources.instance_type``."""
    cfg = cfg or CostConfig()
    try:
        cat = cfg.catalog
    except ValueError as exc:
        return [("cost.prices", str(exc))]
    problems = []
    for field in ("instance_type", "local_equivalent"):
        name = getattr(cfg, field)
        if name is not None and name not in cat:
            problems.append((f"cost.{field}", str(UnknownInstanceType(name, cat.instances))))
    requested = comp.resources.instance_type if comp is not None else None
    if requested is not None and requested not in cat:
        problems.append(("resources.instance_type", str(UnknownInstanceType(requested, cat.instances))))
    return problems


def parse_cost_section(section: dict[str, Any], where: str = "competition") -> CostConfig:
    """Validate a raw ``cost:`` mapping; raises ``SpecError`` naming ``cost.<field>``."""
    try:
        cfg = CostConfig.model_validate(section or {})
    except ValidationError as exc:
        raise SpecError(where, validation_problems(exc, "cost")) from None
    problems = cost_problems(cfg)
    if problems:
        raise SpecError(where, problems)
    return cfg


def cost_config(comp: Competition) -> CostConfig:
    """The competition's ``cost:`` section (cached by the runtime), with its instance types and
    ``resources.instance_type`` checked against the price table."""
    return config_section(comp, "cost", CostConfig)
