"""Typed records that plugins return from hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class ScorerInfo:
    """A scorer: per-item sufficient statistics plus a pure aggregate over their column sums.

    ``statistics(predictions, references, params)`` returns an array of shape (n_items, k).
    ``aggregate(sums, params)`` maps summed statistics of shape (..., k) to scores of shape (...);
    it must be vectorised over leading axes so bootstrap resamples are one call.
    ``details(predictions, references, params)`` may return extra JSON-able results (a report).
    """

    name: str
    version: str
    higher_is_better: bool
    accepts: tuple[str, ...]  # prediction types: "probability", "label", "text"
    statistics: Callable[[Any, Any, Mapping[str, Any]], np.ndarray]
    aggregate: Callable[[np.ndarray, Mapping[str, Any]], Any]
    libraries: tuple[str, ...] = ()  # distributions whose versions go into the signature
    signature: Callable[[Mapping[str, Any]], str] | None = None
    details: Callable[[Any, Any, Mapping[str, Any]], dict] | None = None
    validate_params: Callable[[Mapping[str, Any]], None] | None = None
    description: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """A backend factory by name: ``factory(options: dict, workspace) -> Backend``.

    ``runs_images``: the backend can run container images (container submissions are refused at
    intake for competitions whose backend cannot).
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""
    runs_images: bool = False


@dataclass(frozen=True)
class CostTrackerInfo:
    """A cost tracker: ``factory(competition, store) -> tracker`` with job_started/job_finished methods."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class SubmissionKindInfo:
    """A submission kind.

    ``detect(source) -> bool``; ``ingest(source, competition, store, filename=None) -> dict`` validates and
    stores it, returning ``{"sha256", "size", "filename", "metadata"}``; ``to_job(submission, competition,
    store) -> dict`` gives the JobSpec fields (``image``/``command``/``env``) for kinds that must run on a
    backend. Kinds without ``to_job`` are prediction files, scored directly.
    """

    name: str
    detect: Callable[[Any], bool]
    ingest: Callable[..., dict]
    to_job: Callable[..., dict] | None = None
    description: str = ""


@dataclass(frozen=True)
class Hold:
    """What ``referee_dispatch_check`` may return instead of a plain reason string.

    ``team=None`` pauses all dispatching for the competition; a team name holds back only that
    team's submissions while the others keep running.
    """

    reason: str
    team: str | None = None


@dataclass
class PluginReport:
    """What `referee plugins list` shows for one plugin."""

    name: str
    version: str
    provides: list[str] = field(default_factory=list)
    error: str | None = None
