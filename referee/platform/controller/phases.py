"""Phases while they run: who sees each leaderboard, teams' final picks, quotas, the rules to accept.

* **Visibility** of a phase's leaderboard (one split): the host's switch when there is one
  (``referee phase publish``, the Organise page, the API), else the spec's (``public_leaderboard``,
  ``private_leaderboard``; ``publish_at_end`` turns ``public`` when the phase ends). ``hidden``: the
  organisers only, teams see none of that split's scores; ``host``: the organisers see the
  leaderboard, each team its own scores; ``public``: everyone sees the leaderboard.
* **Final picks**: under ``final_selection: pick`` a team picks up to ``max`` submissions of the
  phase until it ends (or its private leaderboard is published, whichever comes first); the
  leaderboard builder reads them (``referee.platform.leaderboard.build``).
* **Quotas** count one phase's submissions (``Store.quota_used``).
* **Rules**: with ``participation.accept_rules`` a signed-up participant accepts the rules page
  before downloading the data or submitting.

Every function takes ``now`` so callers (and tests) can say when "now" is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from referee.platform.core.errors import Conflict, NotAllowed, RefereeError
from referee.platform.core.spec import (
    LEADERBOARD_SPLITS,
    VISIBILITIES,
    Competition,
    Visibility,
)
from referee.platform.store import PickRow, Store

RULES_PAGE = "rules"


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class BoardState:
    """Who sees one leaderboard (a phase's split) now, and why."""

    phase: str
    split: str
    visibility: Visibility
    setting: str  # what the spec says: hidden | host | public | publish_at_end
    switched_by: str | None = None  # the host's switch, when there is one
    switched_at: str | None = None

    @property
    def published(self) -> bool:
        return self.visibility == "public"


def board_states(store: Store, comp: Competition, now: dt.datetime | None = None) -> dict[tuple[str, str], BoardState]:
    """The state of every leaderboard of ``comp``, by (phase, split)."""
    when = _now(now)
    switched = store.phase_visibility(comp.id)
    out = {}
    for p in comp.phases:
        for split in LEADERBOARD_SPLITS:
            row = switched.get((p.name, split))
            vis: Visibility = row.visibility if row is not None else p.visibility(split, when)  # type: ignore[assignment]
            out[(p.name, split)] = BoardState(p.name, split, vis, p.leaderboard_setting(split),
                                              row.set_by if row else None, row.set_at if row else None)
    return out


def board_state(store: Store, comp: Competition, phase: str, split: str,
                now: dt.datetime | None = None) -> BoardState:
    name = comp.phase(phase).name
    return board_states(store, comp, now)[(name, split)]


def team_score_splits(store: Store, comp: Competition, phase: str, now: dt.datetime | None = None) -> list[str]:
    """The splits whose scores a team sees on its own submissions of ``phase``."""
    states = board_states(store, comp, now)
    return [s for s in LEADERBOARD_SPLITS if (phase, s) in states and states[(phase, s)].visibility != "hidden"]


def set_visibility(store: Store, comp: Competition, phase: str, split: str, visibility: str | None, *,
                   by: str) -> BoardState:
    """The host switches who sees a leaderboard (``None``: back to what the spec says)."""
    name = comp.phase(phase).name  # an unknown phase is a SpecError naming the known ones
    if split not in LEADERBOARD_SPLITS:
        raise RefereeError(f"split must be one of {', '.join(LEADERBOARD_SPLITS)}, not {split!r}")
    if visibility is not None and visibility not in VISIBILITIES:
        raise RefereeError(f"visibility must be one of {', '.join(VISIBILITIES)} (or 'spec' to follow the "
                           f"competition's spec), not {visibility!r}")
    store.set_phase_visibility(comp.id, name, split, visibility, by)
    return board_state(store, comp, name, split)


def publish(store: Store, comp: Competition, phase: str, *, by: str, split: str = "private") -> BoardState:
    """Publish a phase's leaderboard (the private one by default): every team sees it and its rank."""
    return set_visibility(store, comp, phase, split, "public", by=by)


# -- final picks -----------------------------------------------------------------------------------------
def picks_open(store: Store, comp: Competition, phase: str, now: dt.datetime | None = None,
               states: dict[tuple[str, str], BoardState] | None = None) -> bool:
    """Whether teams may still pick their final submissions of ``phase`` (``states``: the boards'
    states when the caller has them already)."""
    ph = comp.phase(phase)
    if ph.final_selection.rule != "pick" or ph.ended(now):
        return False
    states = states if states is not None else board_states(store, comp, now)
    return not states[(ph.name, "private")].published


def _check_pick(store: Store, comp: Competition, phase: str, now: dt.datetime | None) -> None:
    ph = comp.phase(phase)
    if ph.final_selection.rule != "pick":
        raise NotAllowed(f"phase {ph.name!r} chooses each team's final entry itself (its best submission on the "
                         "public split); there is nothing to pick")
    if not picks_open(store, comp, ph.name, now):
        raise Conflict(f"phase {ph.name!r} has ended (or its private leaderboard is published): picks are final")


def pick(store: Store, comp: Competition, sid: int, team: str, *, by: str,
         now: dt.datetime | None = None) -> PickRow:
    """Team ``team`` picks its submission ``sid`` for its final entry of that submission's phase."""
    sub = store.get_submission(sid)
    _check_pick(store, comp, sub.phase, now)
    return store.pick(sid, team, comp.phase(sub.phase).final_selection.max, by)


def unpick(store: Store, comp: Competition, sid: int, team: str, *, by: str,
           now: dt.datetime | None = None) -> bool:
    """Withdraw a pick of ``team`` (False when ``sid`` was not picked)."""
    sub = store.get_submission(sid)
    if sub.team.casefold() != team.casefold():
        from referee.platform.core.errors import NotFound
        raise NotFound(f"no submission #{sid} of team {team!r}")
    _check_pick(store, comp, sub.phase, now)
    return store.unpick(sid, by)


# -- quotas ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quota:
    """What ``team`` may still submit to one phase (None: no such limit)."""

    phase: str
    per_day: int | None
    total: int | None
    concurrent: int | None
    used_today: int
    used_total: int
    waiting: int
    remaining_today: int | None
    remaining_total: int | None
    next_slot_at: str | None  # when the 24-hour window frees a slot, if it is full

    @property
    def remaining(self) -> int | None:
        """Submissions left now (the smaller of the daily and the total allowance)."""
        left = [n for n in (self.remaining_today, self.remaining_total) if n is not None]
        return min(left) if left else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "remaining": self.remaining}


def quota(store: Store, comp: Competition, team: str, phase: str | None = None,
          now: dt.datetime | None = None) -> Quota:
    """``team``'s quota in ``phase`` (default: the open one) by the phase's own limits."""
    when = _now(now)
    view = comp.for_phase(phase, when)
    name = view.phase_name
    assert name is not None
    lim = view.limits
    total, day, waiting, oldest = store.quota_used(comp.id, team, name, when)
    next_slot = None
    if lim.per_team_per_day is not None and day >= lim.per_team_per_day and oldest:
        next_slot = (dt.datetime.fromisoformat(oldest) + dt.timedelta(days=1)).isoformat(timespec="seconds")
    return Quota(phase=name, per_day=lim.per_team_per_day, total=lim.total, concurrent=lim.concurrent,
                 used_today=day, used_total=total, waiting=waiting,
                 remaining_today=None if lim.per_team_per_day is None else max(0, lim.per_team_per_day - day),
                 remaining_total=None if lim.total is None else max(0, lim.total - total), next_slot_at=next_slot)


# -- rules -------------------------------------------------------------------------------------------------
def rules_sha256(store: Store, cid: str) -> str | None:
    """The sha256 of the competition's rules page as loaded (None when it has none)."""
    rows = store.competition_files(cid, "page")
    return next((r.sha256 for r in rows if r.name == RULES_PAGE), None)


def rules_required(comp: Competition) -> bool:
    return comp.participation.accept_rules


def has_accepted_rules(store: Store, comp: Competition, uid: int) -> bool:
    return store.rules_accepted(comp.id, uid) is not None


def require_rules_accepted(store: Store, comp: Competition, uid: int) -> None:
    """``NotAllowed`` until user ``uid`` accepted the rules of a competition that asks for it."""
    if rules_required(comp) and not has_accepted_rules(store, comp, uid):
        raise NotAllowed(f"accept the rules of {comp.id!r} first (the Rules page: /c/{comp.id}/rules, or "
                         f"POST /api/competitions/{comp.id}/rules/accept)")


def accept_rules(store: Store, comp: Competition, uid: int) -> None:
    store.accept_rules(comp.id, uid, rules_sha256(store, comp.id))


# -- what a phase is, for the pages and the API --------------------------------------------------------------
def phase_info(store: Store, comp: Competition, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every phase: its window, whether it is open, what it scores with, its limits, who sees its
    leaderboards and how final entries are chosen (never a data path)."""
    when = _now(now)
    states = board_states(store, comp, when)
    current = comp.phase(when=when).name
    out = []
    for p in comp.phases:
        view = comp.for_phase(p.name)
        out.append({
            "name": p.name, "description": p.description.strip(),
            "start": p.start.isoformat() if p.start else None, "end": p.end.isoformat() if p.end else None,
            "open": p.contains(when), "ended": p.ended(when), "current": p.name == current,
            "own_data": p.data is not None,
            "metrics": [{"key": m.key, "scorer": m.scorer, "primary": m.primary} for m in view.metrics],
            "limits": view.limits.model_dump(),
            "leaderboards": {s: {"visibility": st.visibility, "setting": st.setting, "switched_by": st.switched_by,
                                 "switched_at": st.switched_at}
                             for (name, s), st in states.items() if name == p.name},
            "final_selection": p.final_selection.model_dump(),
            "picks_open": picks_open(store, comp, p.name, when, states),
        })
    return out
