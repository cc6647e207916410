"""Typed records that plugins return from hooks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np
from pydantic import BaseModel

from referee.platform.core.leaderboard import Leaderboard, LeaderboardColumn
from referee.platform.core.spec import Competition, Derived

_SECTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

from referee.platform.core.predictions import Predictions, References

# What a scorer's functions receive: ``Predictions`` (aligned to the references), ``References`` (one
# string, or a list of strings, per item), the metric's ``params`` from the competition YAML, and for
# general scorers ``weights`` (see ScorerInfo).
Params = Mapping[str, Any]
Weights = Optional[np.ndarray]


@dataclass(frozen=True)
class ScorerInfo:
    """A scorer, in one of two shapes.

    **Summable** (the fast path; sacrebleu's shape): ``statistics(predictions, references, params)``
    returns per-item sufficient statistics, an array of shape (n_items, k), and
    ``aggregate(sums, params)`` maps column sums of shape (..., k) to scores of shape (...). It must be
    vectorised over leading axes: a bootstrap resample is ``aggregate(counts @ statistics)``, so a
    thousand resamples are one matrix product and one call. Accuracy, log loss, BLEU, WER are sums.

    **General** (any metric: ROC AUC, Spearman, average precision, ...): ``score(predictions,
    references, params, weights)`` returns the score of the items. ``weights`` is None (every item
    once) or a float array of shape (n_items,) holding how often each item was drawn in a bootstrap
    resample (0 = left out, 2 = counted twice): the score must equal the metric of the data set with
    each item repeated that many times. With ``batched=True`` the scorer also accepts weights of
    shape (n_resamples, n_items) and returns an array of n_resamples scores (many resamples in one
    call; the block is read-only to the scorer and reused once the call returns); otherwise referee
    calls it once per resample. A resample on which the metric is undefined
    may return nan or raise ``ValueError``; it is left out of the interval.

    Confidence intervals and paired significance tests use the same seeded resamples for both shapes.
    The engine stores a summable scorer's statistics and a general scorer's predictions, so tiers
    can be recomputed without re-reading prediction files.

    ``signature(params)`` names the scorer's settings (``name:...|param:value|version:...``);
    ``signature_for(params, predictions)``, when given, is used instead once the predictions are
    known (it can say binary or multi-class, and leave out settings that do not apply).
    ``details(predictions, references, params)`` may return extra JSON-able results (a report).
    ``validate_params(params)`` raises ValueError naming a bad parameter (called when a competition
    is loaded).
    """

    name: str
    version: str
    higher_is_better: bool
    accepts: tuple[str, ...]  # prediction types: "probability", "score", "label", "text"
    statistics: Callable[[Predictions, References, Params], np.ndarray] | None = None
    aggregate: Callable[[np.ndarray, Params], Any] | None = None
    libraries: tuple[str, ...] = ()  # distributions whose versions go into the signature
    signature: Callable[[Params], str] | None = None
    details: Callable[[Predictions, References, Params], dict] | None = None
    validate_params: Callable[[Params], None] | None = None
    description: str = ""
    score: Callable[[Predictions, References, Params, Weights], Any] | None = None
    batched: bool = False
    signature_for: Callable[[Params, Predictions], str] | None = None

    def __post_init__(self) -> None:
        summable = self.statistics is not None and self.aggregate is not None
        if summable == (self.score is not None):
            raise ValueError(f"scorer {self.name!r}: give either statistics and aggregate (summable) or "
                             "score (general), not both and not neither")

    @property
    def general(self) -> bool:
        """True for a general scorer (``score``), False for a summable one (``statistics`` + ``aggregate``)."""
        return self.score is not None


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


@dataclass(frozen=True)
class ConfigSection:
    """A top-level section of the competition YAML that a plugin owns (``sandbox:``, ``cost:``, ...).

    ``model`` is a pydantic model: the section is validated with it when the competition loads, and
    code reads it back typed with ``referee.plugins.manager.config_section(competition, name, Model)``
    (defaults when the YAML leaves the section out). ``check(section_or_None, competition)`` may return
    more problems as ``(field, message)`` pairs, for what one section cannot see alone (another section,
    a price table); it also runs when the section is left out (with None).
    """

    name: str
    model: type[BaseModel]
    description: str = ""
    check: Callable[[Any, Competition], list[tuple[str, str]]] | None = None

    def __post_init__(self) -> None:
        if not _SECTION_NAME.match(self.name):
            raise ValueError(f"config section name {self.name!r} must be lower case letters, digits and '_'")
        if self.name in Competition.model_fields:
            raise ValueError(f"config section name {self.name!r} is a core field of the competition spec")


@dataclass(frozen=True)
class LeaderboardPlot:
    """An SVG figure shown under the web leaderboard (``svg`` is trusted markup: escape every text in it)."""

    key: str
    title: str
    svg: str
    caption: str = ""


@dataclass(frozen=True)
class ReportPanel:
    """A section of a submission's report: the same content as Markdown and as an HTML fragment.

    Both are trusted output of the plugin: escape everything that came from a user (team names,
    example texts) with ``referee.platform.core.markup``.
    """

    key: str
    title: str
    markdown: str
    html: str
    subtitle: str = ""


@dataclass(frozen=True)
class LeaderboardRenderer:
    """An output format for leaderboards (``referee leaderboard --format NAME``, the export API)."""

    name: str
    render: Callable[[Leaderboard], str]
    media_type: str = "text/plain; charset=utf-8"
    extension: str = "txt"
    description: str = ""


@dataclass
class PluginReport:
    """What `referee plugins list` shows for one plugin."""

    name: str
    version: str
    provides: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False


__all__ = ["ScorerInfo", "BackendInfo", "CostTrackerInfo", "SubmissionKindInfo", "Hold", "ConfigSection",
           "Derived", "LeaderboardColumn", "LeaderboardPlot", "ReportPanel", "LeaderboardRenderer", "PluginReport"]
