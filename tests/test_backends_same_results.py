"""Same competition, same container submissions, one changed config line: docker, ray and aws-batch
(shared file system and S3 staging) must produce identical leaderboards and identical failures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, prepare_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.leaderboard import build as leaderboard
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.aws]
CODE = EXAMPLES / "deepfake" / "code"
TEAMS = {"alpha": "good", "bravo": "poor", "charlie": "crash"}


@pytest.fixture(scope="module")
def engines(docker_client, base_image) -> dict[str, Any]:
    from test_aws_batch import start_moto
    from test_ray_backend import start_local_ray

    start_local_ray()
    moto = start_moto()
    moto.client("s3").create_bucket(Bucket="referee-same")
    return {"moto": moto}


def backend_block(name: str, moto: Any) -> dict[str, Any]:
    """The one part of competition.yaml that differs between runs."""
    aws = {"endpoint_url": moto.endpoint, "region": "us-east-1", "create_queue": {"service_role": moto.role_arn}}
    return {
        "docker": {"name": "docker", "options": {"slots": 3}},
        "ray": {"name": "ray", "options": {"max_in_flight": 3}},
        "aws-batch": {"name": "aws-batch", "options": {**aws, "job_queue": "same-fs"}},
        "aws-batch-s3": {"name": "aws-batch", "options": {**aws, "job_queue": "same-s3", "data": "s3",
                                                          "s3_bucket": "referee-same"}},
    }[name]


def run_competition(root: Path, name: str, moto: Any) -> tuple[dict, dict]:
    ex = prepare_example("deepfake", root)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc["backend"] = {**backend_block(name, moto), "max_in_flight": 3}
    doc["resources"] = {"cpu": 0.5, "memory": "512m", "timeout": "120s"}
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(root / "ws")
    comp = load_into_store(store, ex / "competition.yaml")
    ids = {team: submit(store, comp, team, CODE / code) for team, code in TEAMS.items()}
    summary = Controller(store, comp, poll_interval=0.1).run()  # the backend comes from the YAML
    assert (summary.scored, summary.failed, summary.retried) == (2, 1, 0), summary.to_dict()
    boards = {}
    for split in ("public", "private"):
        lb = leaderboard.build(store, comp, split=split)
        boards[split] = [(e.rank, e.team, e.metrics, e.intervals) for e in lb.entries]
    outcomes = {team: (store.get_submission(sid).status, store.get_submission(sid).failure_reason)
                for team, sid in ids.items()}
    jobs = store._query("SELECT DISTINCT backend FROM jobs")
    assert [r["backend"] for r in jobs] == [name.removesuffix("-s3")]
    store.close()
    return boards, outcomes


def test_identical_leaderboards_on_docker_ray_and_aws_batch(engines, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the YAML names no credentials: boto3's chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    results = {name: run_competition(tmp_path / name, name, engines["moto"])
               for name in ("docker", "ray", "aws-batch", "aws-batch-s3")}
    boards, outcomes = results["docker"]
    assert outcomes == {"alpha": ("scored", None), "bravo": ("scored", None),
                        "charlie": ("failed", "exited_nonzero")}
    public = boards["public"]
    assert [(rank, team) for rank, team, _, _ in public] == [(1, "alpha"), (2, "bravo")]
    assert all(math.isfinite(v) for _, _, metrics, _ in public for v in metrics.values())
    for name, (other_boards, other_outcomes) in results.items():
        assert other_outcomes == outcomes, name
        assert other_boards == boards, name  # same ranks, teams, scores and intervals, to the last bit
