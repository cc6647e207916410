"""Instance catalog: hourly prices, vCPU, memory and GPUs per instance type, from ``prices.json``.

The table ships with public on-demand prices (see the file's ``source`` and ``as_of``); a competition
overrides or adds types under ``cost.prices``. Spot prices are an explicit ``spot`` price or the
on-demand price less the family's typical spot discount.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Iterable, Literal, Mapping

from referee.platform.core.errors import RefereeError

Pricing = Literal["on_demand", "spot"]
GIB = 1024**3


@dataclass(frozen=True)
class InstanceType:
    """One purchasable machine shape and its hourly prices."""

    name: str
    on_demand: float  # USD per instance-hour
    vcpu: float
    memory_gib: float
    gpus: int = 0
    gpu_model: str | None = None
    spot: float | None = None  # explicit spot price; None -> on_demand * (1 - spot_discount)
    spot_discount: float = 0.0

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def hourly(self, pricing: Pricing = "on_demand") -> float:
        """USD per instance-hour under ``pricing``."""
        if pricing == "spot":
            return self.spot if self.spot is not None else self.on_demand * (1.0 - self.spot_discount)
        return self.on_demand

    def slots(self, *, cpu: float | None = None, memory: int | None = None, gpus: int = 0) -> int:
        """How many jobs with these resources fit on one instance (at least 1: a bigger job takes it whole)."""
        fits = [math.inf]
        if gpus and self.gpus:
            fits.append(self.gpus // gpus)
        if cpu:
            fits.append(math.floor(self.vcpu / cpu + 1e-9))
        if memory:
            fits.append(math.floor(self.memory_gib * GIB / memory + 1e-9))
        n = min(fits)
        return 1 if n == math.inf or n < 1 else int(n)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "on_demand": self.on_demand, "spot": round(self.hourly("spot"), 6),
                "vcpu": self.vcpu, "memory_gib": self.memory_gib, "gpus": self.gpus, "gpu_model": self.gpu_model}


class UnknownInstanceType(RefereeError, KeyError):
    """An instance type that is neither in the price table nor in the competition's overrides."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(name)

    def __str__(self) -> str:
        return (f"unknown instance type {self.name!r}; the price table knows {', '.join(self.known)} "
                "(add it under cost.prices with on_demand, vcpu, memory_gib and gpus)")


class Catalog:
    """Instance types by name, with provenance of the price table."""

    def __init__(self, instances: Mapping[str, InstanceType], *, source: str = "", as_of: str = ""):
        self.instances = dict(instances)
        self.source = source
        self.as_of = as_of

    def __contains__(self, name: object) -> bool:
        return name in self.instances

    def __iter__(self):
        return iter(self.instances.values())

    def get(self, name: str) -> InstanceType:
        try:
            return self.instances[name]
        except KeyError:
            raise UnknownInstanceType(name, self.instances) from None

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "Catalog":
        """A copy where each override patches a known type or, when complete, adds a new one.

        Raises ``ValueError`` naming the type when a new type lacks a field.
        """
        if not overrides:
            return self
        out = dict(self.instances)
        for name, fields in overrides.items():
            fields = {k: v for k, v in fields.items() if v is not None}
            if name in out:
                out[name] = replace(out[name], **fields)
                continue
            missing = [f for f in ("on_demand", "vcpu", "memory_gib") if f not in fields]
            if missing:
                raise ValueError(f"{name}: not in the price table, so it needs {', '.join(missing)}")
            discount = fields.pop("spot_discount", _family_discount(name.split(".", 1)[0]))
            out[name] = InstanceType(name=name, spot_discount=discount, **fields)
        return Catalog(out, source=self.source + " (with competition overrides)", as_of=self.as_of)


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("referee.platform.cost").joinpath("prices.json").read_text(encoding="utf-8")
    return json.loads(text)


def _family_discount(family: str) -> float:
    discounts = _table()["spot_discount"]
    return float(discounts.get(family, discounts["default"]))


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The shipped public price table."""
    table = _table()
    instances = {}
    for name, row in table["instances"].items():
        instances[name] = InstanceType(name=name, on_demand=float(row["on_demand"]), vcpu=float(row["vcpu"]),
                                       memory_gib=float(row["memory_gib"]), gpus=int(row.get("gpus", 0)),
                                       gpu_model=row.get("gpu_model"), spot=row.get("spot"),
                                       spot_discount=_family_discount(name.split(".", 1)[0]))
    return Catalog(instances, source=table["source"], as_of=table["as_of"])
