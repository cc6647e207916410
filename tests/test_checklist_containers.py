"""The sentiment example's container submissions on the real Docker engine, scored by CheckList.

Each container runs the same predict.py that produced the sample prediction files, sandboxed, on the
exported CheckList inputs; its scores and CheckList results must equal the file submission's.
"""

from __future__ import annotations

import json

import pytest
import yaml
from checklist_support import scored_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = pytest.mark.docker


def _results(store: Store, sid: int) -> dict:
    out = {}
    for r in store.scores(sid):
        tests = r.details.get("checklist", {}).get("tests", [])
        out[(r.metric, r.split)] = (round(r.value, 12), [(t["name"], t["fails"], t["n"]) for t in tests])
    return out


def test_container_submissions_score_like_their_files(tmp_path, tmp_path_factory, docker_client, base_image):
    scored = scored_example(tmp_path_factory)
    doc = yaml.safe_load((scored.directory / "competition.yaml").read_text())
    doc.update(id="sentiment-docker", backend={"name": "docker", "max_in_flight": 2})
    path = scored.directory / "sentiment-docker.yaml"  # same directory: the suite build is reused
    path.write_text(yaml.safe_dump(doc))
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, path)
    ids = {name: submit(store, comp, team, scored.directory / "code" / name)
           for name, team in (("lexicon", "alpha"), ("better", "bravo"))}
    try:
        summary = Controller(store, comp, poll_interval=0.1).run()
        subs = {n: store.get_submission(i) for n, i in ids.items()}
        assert summary.scored == 2, {n: (s.status, s.failure_reason, s.failure_message, s.log_tail)
                                     for n, s in subs.items()}
        files = Store(scored.workspace)
        assert _results(store, ids["lexicon"]) == _results(files, scored.lexicon_id)
        assert _results(store, ids["better"]) == _results(files, scored.better_id)
        assert all(s.kind != "predictions" for s in subs.values())
        assert "wrote" in (subs["lexicon"].log_tail or "")
    finally:
        for sid in ids.values():
            image = store.get_submission(sid).metadata.get("image")
            if image:
                try:
                    docker_client.images.remove(image, force=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
