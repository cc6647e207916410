"""Built-in plugin ``builtin_moderation``: what the organisers took off a leaderboard, and baselines.

``referee_leaderboard_notes`` adds notes below a leaderboard: each hidden submission and each
disqualified team with the organisers' reason, and each baseline entry with its primary score on
the leaderboard's split (baselines are shown for comparison and ranked as no team). The ranking
itself leaves them out already (``Store.leaderboard_scores``).
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
    baselines = []
    for sub in store.moderated(competition.id, lb.phase):
        if sub.baseline:
            baselines.append(sub)
        elif sub.hidden_reason:
            notes.append(f"Submission #{sub.id} of team {sub.team} was removed by the organisers: "
                         f"{sub.hidden_reason}")
    if baselines:
        rows = store.score_rows([s.id for s in baselines], lb.primary, lb.split)
        for sub in baselines:
            score = rows.get(sub.id)
            value = "—" if score is None or score.value is None else f"{score.value:.5g}"
            notes.append(f"Baseline {sub.team} (#{sub.id}, not ranked): {lb.primary} {value}")
    return notes
