"""Built-in plugin ``builtin_moderation``: what the organisers took off a leaderboard, and baselines.

``referee_leaderboard_notes`` adds notes below a leaderboard: each hidden submission and each
disqualified team with the organisers' reason, and a sentence on the baselines when the leaderboard
lists any (they are unranked rows below the ranked entries: ``Leaderboard.baselines``). The ranking
itself leaves them all out already (``Store.leaderboard_scores``).
"""

from __future__ import annotations

from referee.platform.core.leaderboard import Leaderboard
from referee.platform.core.spec import Competition
from referee.platform.store import Store
from referee.plugins.hookspecs import hookimpl


@hookimpl
def referee_leaderboard_notes(store: Store, competition: Competition, leaderboard: Leaderboard) -> list[str]:
    lb = leaderboard
    notes: list[str] = []
    for t in store.teams(competition.id):
        if t.disqualified_reason:
            notes.append(f"Team {t.name} is disqualified: {t.disqualified_reason}")
    for sub in store.moderated(competition.id, lb.phase):
        if sub.hidden_reason and not sub.baseline:
            notes.append(f"Submission #{sub.id} of team {sub.team} was removed by the organisers: "
                         f"{sub.hidden_reason}")
    if lb.baselines:
        names = ", ".join(e.team for e in lb.baselines)
        notes.append(f"Baselines ({names}) are the organisers' reference entries: listed for comparison, "
                     "ranked as no team.")
    return notes
