"""Built-in plugin: the ``leaderboard:`` section, rank tiers and paired p-values (``builtin_stats``).

* ``referee_config_sections``: ``leaderboard`` (``intervals`` for the scoring engine's confidence
  intervals, ``significance`` for the paired tests; ``referee.scoring.significance.LeaderboardSettings``).
* ``referee_leaderboard_columns``: from one paired test over all entries on shared resamples
  (``referee.platform.leaderboard.significance``):

  - ``tier`` — entries not significantly different from their tier's first entry share a tier (walk
    down the ranking; an entry starts a new tier when it is significantly worse, after the
    multiple-comparison correction, than the first entry of the current tier);
  - ``p_vs_leader`` — uncorrected p-value against the first entry;
  - ``p_vs_prev`` — uncorrected p-value against the entry just above.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from referee.platform.core.errors import SpecError
from referee.platform.core.leaderboard import Leaderboard, LeaderboardColumn
from referee.platform.core.spec import Competition
from referee.platform.leaderboard.significance import (
    compare_entries,
    significance_settings,
)
from referee.platform.store import Store
from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import ConfigSection
from referee.scoring.significance import LeaderboardSettings


def _check(settings: LeaderboardSettings | None, competition: Competition) -> list[tuple[str, str]]:
    """A torch backend needs PyTorch installed (checked when the competition loads)."""
    settings = settings or LeaderboardSettings()
    problems = []
    for key, part in (("intervals", settings.intervals), ("significance", settings.significance)):
        if part.backend == "torch" and importlib.util.find_spec("torch") is None:
            problems.append((f"leaderboard.{key}.backend", "'torch' needs PyTorch, which is not installed; "
                                                           "install it or use 'numpy' or 'auto'"))
    return problems


@hookimpl
def referee_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="leaderboard", model=LeaderboardSettings, check=_check,
                          description="confidence intervals (intervals) and paired significance tests "
                                      "(significance) on leaderboards")]


@hookimpl
def referee_leaderboard_columns(store: Store, competition: Competition,
                                leaderboard: Leaderboard) -> list[LeaderboardColumn]:
    """``tier``, ``p_vs_leader`` and ``p_vs_prev`` (see the module docstring)."""
    settings = significance_settings(competition)
    if not settings.enabled or not leaderboard.entries:
        return []
    try:
        result = compare_entries(store, competition, leaderboard, settings)
    except (OSError, SpecError) as exc:  # reference data gone: the leaderboard still shows scores
        leaderboard.notes.append(f"no tiers: the reference data could not be read ({exc})")
        return []
    ids = [e.submission_id for e in result.entries]
    tiers: dict[int, Any] = {sid: result.tier(pos) for pos, sid in enumerate(ids)}
    return [
        LeaderboardColumn(key="tier", label="tier", kind="tier", values=tiers, notes=tuple(result.notes()),
                          help="entries not significantly different from their tier's first entry share a tier"),
        LeaderboardColumn(key="p_vs_leader", label="p_vs_leader", kind="p-value", terminal=False,
                          values=dict(zip(ids, result.p_vs_leader)),
                          help="uncorrected p-value of the paired test against the first entry"),
        LeaderboardColumn(key="p_vs_prev", label="p_vs_prev", kind="p-value", terminal=False,
                          values=dict(zip(ids, result.p_vs_prev)),
                          help="uncorrected p-value of the paired test against the entry just above"),
    ]
