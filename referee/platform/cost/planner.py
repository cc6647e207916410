"""Fleet cost planning: from pilot runtimes on candidate instance types, project cost and wall time for N
submissions, size the fleet for a deadline (plus a restart margin) and pick the cheapest option.

The arithmetic, per instance type (runtime ``r`` estimated from the pilots, ``s`` jobs per instance):

* expected work per submission ``w = r * (1 + f / (2 (1 - f)))`` for an infrastructure failure rate ``f``
  (a lost attempt wastes half a run on average and is retried);
* instance-hours ``N * w / s``; cost = instance-hours x hourly price; GPU-hours = N * w * GPUs per job;
* a slot finishes ``floor(deadline / w)`` submissions in time, so ``ceil(N / that)`` slots are needed,
  ``ceil(slots / s)`` instances, and ``ceil(instances * (1 + margin))`` with the restart margin;
* with a given fleet the wall time is ``ceil(N / (fleet * s)) * w``.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from referee.platform.core.errors import RefereeError
from referee.platform.core.units import parse_duration
from referee.platform.cost.catalog import (
    Catalog,
    Pricing,
    UnknownInstanceType,
    default_catalog,
)

Estimator = Literal["mean", "median", "p90", "max"]
HOUR = 3600.0


class PlanInputError(RefereeError):
    """Pilot runtimes, plan or simulation parameters that cannot be used; says what and where."""


def estimate_runtime(runtimes: Sequence[float], how: Estimator = "mean") -> float:
    """One runtime (seconds) from pilot runs: mean, median, 90th percentile or max."""
    xs = sorted(runtimes)
    if how == "mean":
        return statistics.fmean(xs)
    if how == "median":
        return statistics.median(xs)
    if how == "max":
        return xs[-1]
    if how == "p90":
        return xs[0] if len(xs) == 1 else statistics.quantiles(xs, n=10, method="inclusive")[-1]
    raise ValueError(f"unknown estimator {how!r}")


def work_factor(failure_rate: float) -> float:
    """Expected compute per submission relative to one clean run, when attempts are lost at rate ``f``."""
    return 1.0 + failure_rate / (2.0 * (1.0 - failure_rate))


@dataclass(frozen=True)
class PlanRequest:
    submissions: int
    deadline_s: float
    pilots: Mapping[str, Sequence[float]]  # instance type -> pilot runtimes in seconds
    fleet: int | None = None  # instances available (None: as many as needed)
    restart_margin: float = 0.5
    pricing: Pricing = "on_demand"
    failure_rate: float = 0.0
    estimator: Estimator = "mean"
    cpu: float | None = None  # per job; None with memory/gpus None: one job per instance
    memory: int | None = None
    gpus: int | None = None

    def check(self, catalog: Catalog) -> None:
        problems = []
        if self.submissions < 1:
            problems.append(f"submissions must be at least 1, got {self.submissions}")
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            problems.append("the deadline must be a positive duration (e.g. 21d or 504h)")
        if self.fleet is not None and self.fleet < 1:
            problems.append(f"fleet must be at least 1 instance, got {self.fleet}")
        if self.cpu is not None and not (math.isfinite(self.cpu) and self.cpu > 0):
            problems.append(f"cpu per job must be a positive number, got {self.cpu}")
        if self.memory is not None and not self.memory > 0:
            problems.append(f"memory per job must be a positive size, got {self.memory}")
        if self.gpus is not None and not self.gpus >= 0:
            problems.append(f"gpus per job cannot be negative, got {self.gpus}")
        if not 0 <= self.restart_margin <= 10:
            problems.append(f"restart margin must be between 0 and 10 (0.5 = +50%), got {self.restart_margin}")
        if not 0 <= self.failure_rate < 1:
            problems.append(f"failure rate must be in [0, 1), got {self.failure_rate}")
        if not self.pilots:
            problems.append("give pilot runtimes for at least one instance type")
        for name, runs in self.pilots.items():
            if name not in catalog:
                problems.append(str(UnknownInstanceType(name, catalog.instances)))
            if not runs or any(not (r > 0 and math.isfinite(r)) for r in runs):
                problems.append(f"{name}: pilot runtimes must be positive durations")
        if problems:
            raise PlanInputError("cannot plan: " + "; ".join(problems))


@dataclass
class PlanOption:
    instance_type: str
    pilots: int
    runtime_s: float  # estimated clean runtime per submission
    work_s: float  # expected compute per submission, lost attempts included
    hourly: float
    jobs_per_instance: int
    instance_hours: float
    gpu_hours: float
    cost: float
    cost_with_margin: float
    instances_needed: int | None  # to meet the deadline; None when one submission alone is too slow
    instances_with_margin: int | None
    fleet: int | None  # the fleet the wall time is computed for
    makespan_s: float | None
    meets_deadline: bool
    note: str = ""


@dataclass
class Plan:
    request: PlanRequest
    options: list[PlanOption]
    recommended: PlanOption | None
    message: str
    price_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        req = asdict(self.request)
        req["pilots"] = {k: list(v) for k, v in self.request.pilots.items()}
        return {"request": req, "options": [asdict(o) for o in self.options],
                "recommended": self.recommended.instance_type if self.recommended else None,
                "message": self.message, "price_source": self.price_source}


def _option(req: PlanRequest, catalog: Catalog, name: str, runs: Sequence[float]) -> PlanOption:
    it = catalog.get(name)
    whole = req.cpu is None and req.memory is None and req.gpus is None
    slots = 1 if whole else it.slots(cpu=req.cpu, memory=req.memory, gpus=req.gpus or 0)
    gpus_per_job = it.gpus if whole else (req.gpus or 0)
    runtime = estimate_runtime(runs, req.estimator)
    work = runtime * work_factor(req.failure_rate)
    slot_hours = req.submissions * work / HOUR
    instance_hours = slot_hours / slots
    hourly = it.hourly(req.pricing)
    cost = instance_hours * hourly
    per_slot = math.floor(req.deadline_s / work + 1e-9)
    needed = with_margin = None
    note = ""
    if per_slot >= 1:
        needed = math.ceil(math.ceil(req.submissions / per_slot) / slots)
        with_margin = math.ceil(needed * (1.0 + req.restart_margin) - 1e-9)
    else:
        note = f"one submission takes {work / HOUR:.1f} h, longer than the deadline"
    fleet = req.fleet if req.fleet is not None else needed
    makespan = None if fleet is None else math.ceil(req.submissions / (fleet * slots)) * work
    meets = makespan is not None and makespan <= req.deadline_s + 1e-6
    if req.fleet is not None and needed is not None and not meets:
        note = f"needs {needed} instances to finish in time; the fleet has {req.fleet}"
    elif req.fleet is not None and with_margin is not None and meets and req.fleet < with_margin:
        note = f"meets the deadline with no room for the restart margin ({with_margin} instances)"
    return PlanOption(instance_type=name, pilots=len(runs), runtime_s=runtime, work_s=work, hourly=hourly,
                      jobs_per_instance=slots, instance_hours=instance_hours, gpu_hours=slot_hours * gpus_per_job,
                      cost=cost, cost_with_margin=cost * (1.0 + req.restart_margin), instances_needed=needed,
                      instances_with_margin=with_margin, fleet=fleet, makespan_s=makespan, meets_deadline=meets,
                      note=note)


def plan(req: PlanRequest, catalog: Catalog | None = None) -> Plan:
    """Project every candidate and recommend the cheapest one that meets the deadline."""
    catalog = catalog or default_catalog()
    req.check(catalog)
    options = sorted((_option(req, catalog, name, runs) for name, runs in req.pilots.items()),
                     key=lambda o: (o.cost, o.instance_type))
    feasible = [o for o in options if o.meets_deadline]
    best = feasible[0] if feasible else None
    days = req.deadline_s / 86400
    if best is not None:
        fleet_txt = (f"a fleet of {best.fleet}" if req.fleet is not None else
                     f"{best.instances_needed} instances ({best.instances_with_margin} with a "
                     f"{req.restart_margin:.0%} restart margin)")
        message = (f"{best.instance_type} ({req.pricing}): ${best.cost:,.0f} for {req.submissions:,} submissions, "
                   f"{best.gpu_hours:,.0f} GPU-hours, done in {(best.makespan_s or 0.0) / 86400:.1f} of {days:.1f} days "
                   f"with {fleet_txt}.")
    else:
        message = (f"no candidate finishes {req.submissions:,} submissions within {days:.1f} days"
                   + (f" on {req.fleet} instances" if req.fleet is not None else "")
                   + "; allow more time or more instances.")
    return Plan(request=req, options=options, recommended=best, message=message,
                price_source=f"{catalog.source} ({catalog.as_of})")


# -- pilot runtimes from the command line or a file ---------------------------------------------------
def parse_pilot_option(text: str) -> tuple[str, list[float]]:
    """``p3.2xlarge=9h,8.5h,9.5h`` -> ("p3.2xlarge", [32400.0, 30600.0, 34200.0])."""
    name, sep, runs = text.partition("=")
    if not sep or not name.strip() or not runs.strip():
        raise PlanInputError(f"--pilot {text!r}: write TYPE=RUNTIME[,RUNTIME...], e.g. p3.2xlarge=9h,8.5h")
    try:
        return name.strip(), [parse_duration(r) for r in runs.split(",")]
    except ValueError as exc:
        raise PlanInputError(f"--pilot {text!r}: {exc}") from None


def load_pilot_file(path: str | Path) -> dict[str, list[float]]:
    """Pilot runtimes from YAML (``{type: [9h, 8.5h]}``, optionally under ``pilots:``) or CSV
    (columns ``instance_type,runtime``; runtime as a duration or seconds)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanInputError(f"{path}: cannot read pilot runtimes: {exc}") from None
    out: dict[str, list[float]] = {}
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"instance_type", "runtime"} <= set(reader.fieldnames):
            raise PlanInputError(f"{path}, line 1: the header must name instance_type and runtime columns")
        for line, row in enumerate(reader, start=2):
            try:
                out.setdefault(row["instance_type"].strip(), []).append(parse_duration(row["runtime"]))
            except (ValueError, AttributeError) as exc:
                raise PlanInputError(f"{path}, line {line}: {exc}") from None
        return out
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise PlanInputError(f"{path}{where}: YAML syntax error: {getattr(exc, 'problem', exc)}") from None
    if isinstance(doc, dict) and isinstance(doc.get("pilots"), dict):
        doc = doc["pilots"]
    if not isinstance(doc, dict):
        raise PlanInputError(f"{path}: expected a mapping of instance type to a list of runtimes")
    for name, runs in doc.items():
        runs = runs if isinstance(runs, list) else [runs]
        try:
            out[str(name)] = [parse_duration(r) for r in runs]
        except ValueError as exc:
            raise PlanInputError(f"{path}: pilots.{name}: {exc}") from None
    return out
