"""Submission limits at intake: per team per day, total, concurrent; platform failures refund quota."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.errors import LimitExceeded
from referee.plugins.testing import FakeBackend
from referee.submissions.submit import submit


@pytest.fixture
def comp_factory(tmp_path, store):
    def make(**limits):
        (tmp_path / "ref.csv").write_text("id,label\na,1\nb,0\n")
        spec = {"id": "lim", "title": "L", "data": {"reference": "ref.csv"}, "limits": limits,
                "prediction": {"type": "label", "columns": ["label"]}, "metrics": [{"scorer": "accuracy"}]}
        (tmp_path / "l.yaml").write_text(yaml.safe_dump(spec))
        return load_into_store(store, tmp_path / "l.yaml")
    return make


@pytest.fixture
def pred(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,label\na,1\nb,1\n")
    return p


def test_per_day_limit_rolls_over(store, comp_factory, pred):
    comp = comp_factory(per_team_per_day=2)
    t0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone.utc)
    submit(store, comp, "a", pred, now=t0)
    submit(store, comp, "a", pred, now=t0 + dt.timedelta(hours=1))
    with pytest.raises(LimitExceeded, match="2 submissions per 24 hours"):
        submit(store, comp, "a", pred, now=t0 + dt.timedelta(hours=2))
    submit(store, comp, "b", pred, now=t0 + dt.timedelta(hours=2))  # other teams unaffected
    submit(store, comp, "a", pred, now=t0 + dt.timedelta(hours=24, minutes=1))
    assert len(store.submissions("lim", team="a")) == 3


def test_total_and_concurrent(store, comp_factory, pred):
    comp = comp_factory(total=3, concurrent=2)
    submit(store, comp, "a", pred)
    submit(store, comp, "a", pred)
    with pytest.raises(LimitExceeded, match="waiting or running"):
        submit(store, comp, "a", pred)
    Controller(store, comp).run()
    submit(store, comp, "a", pred)
    with pytest.raises(LimitExceeded, match="used all 3"):
        submit(store, comp, "a", pred)


def test_platform_failure_refunds_quota(tmp_path, store):
    """A job that fails for infrastructure reasons every time is not charged to the team."""
    from test_scheduler import job_comp, submit_jobs  # noqa: PLC0415
    comp = job_comp(tmp_path, store, limits={"total": 2}, max_infra_retries=1)
    (sid,) = submit_jobs(store, comp, ["a"])
    backend = FakeBackend(script={sid: ["platform_error", "platform_error"]})
    Controller(store, comp, backend, poll_interval=0).run()
    sub = store.get_submission(sid)
    assert sub.status == "failed" and sub.failure_reason == "platform_error" and not sub.counts_toward_quota
    submit_jobs(store, comp, ["a", "a"])  # still two left
    with pytest.raises(LimitExceeded):
        submit_jobs(store, comp, ["a"])
