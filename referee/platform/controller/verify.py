"""Deterministic re-scoring: score every stored prediction file again and compare with the store.

Each score's provenance names the predictions it was computed from (``predictions_sha256``, a blob)
and the reference data (``reference_sha256``). Re-scoring them with the installed scorers must give
the stored numbers; a difference is reported with what changed (reference data, library versions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from referee.platform.controller.scoring import score_file
from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.spec import Competition
from referee.platform.store import Store
from referee.scoring.reference import load_reference

REL_TOL = 1e-12


@dataclass
class Verdict:
    submission_id: int
    team: str
    status: str  # same | different | missing | invalid
    differences: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-15)


def verify_submission(store: Store, comp: Competition, sid: int, reference_sha: str) -> Verdict:
    sub = store.get_submission(sid)
    rows = store.scores(sid)
    verdict = Verdict(submission_id=sid, team=sub.team, status="same")
    if not rows:
        verdict.status = "missing"
        verdict.notes.append("no stored scores")
        return verdict
    stored = {(r.metric, r.split): (r.value, r.provenance) for r in rows}
    prov0 = next(iter(stored.values()))[1]
    pred_sha = prov0.get("predictions_sha256") or prov0.get("submission_sha256")
    path = store.blob_path(pred_sha) if pred_sha else None
    if path is None or not path.is_file():
        verdict.status = "missing"
        verdict.notes.append("the predictions this score was computed from are not in the blob store")
        return verdict
    if prov0.get("reference_sha256") != reference_sha:
        verdict.notes.append(f"reference data changed since scoring ({str(prov0.get('reference_sha256'))[:12]} "
                             f"-> {reference_sha[:12]})")
    try:
        fresh = score_file(comp, path, intervals_enabled=False, source=f"predictions of #{sid}")
    except SubmissionRejected as exc:
        verdict.status = "invalid"
        verdict.notes.append(f"the stored predictions no longer pass intake: {exc}")
        return verdict
    for r in fresh:
        old = stored.get((r.metric, r.split))
        if old is None:
            verdict.differences.append({"metric": r.metric, "split": r.split, "stored": None, "now": r.value})
            continue
        if not _same(old[0], r.value):
            verdict.differences.append({"metric": r.metric, "split": r.split, "stored": old[0], "now": r.value})
        then, now = old[1].get("libraries", {}), r.provenance["libraries"]
        for lib in sorted(set(then) | set(now)):
            if then.get(lib) != now.get(lib):
                note = f"{lib} {then.get(lib)} -> {now.get(lib)}"
                if note not in verdict.notes:
                    verdict.notes.append(note)
    if verdict.differences:
        verdict.status = "different"
    return verdict


def verify_competition(store: Store, comp: Competition) -> list[Verdict]:
    """Re-score every scored submission of ``comp`` from its stored predictions, each against the
    data and metrics of its own phase."""
    views: dict[str, tuple[Competition, str]] = {}
    verdicts = []
    for s in store.submissions(comp.id, status="scored"):
        if s.phase not in views:
            view = comp.for_phase(s.phase, strict=False)
            views[s.phase] = (view, load_reference(view).sha256)
        view, reference_sha = views[s.phase]
        verdicts.append(verify_submission(store, view, s.id, reference_sha))
    return verdicts


def verdicts_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in verdicts]
