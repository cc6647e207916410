"""Competition spec validation: errors name the file, the field and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from referee.platform.controller.competitions import load_into_store
from referee.platform.core.errors import SpecError
from referee.platform.core.spec import load_competition
from referee.platform.core.units import parse_duration, parse_size


def write_spec(tmp_path: Path, doc: dict | str) -> Path:
    (tmp_path / "ref.csv").write_text("id,label\na,1\nb,0\n")
    p = tmp_path / "competition.yaml"
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


BASE = {"id": "demo", "title": "Demo", "data": {"reference": "ref.csv"},
        "metrics": [{"scorer": "accuracy"}], "prediction": {"type": "label", "columns": ["label"]}}


def test_examples_load(example):
    for name in ("deepfake", "asr", "translation"):
        comp = load_competition(example(name) / "competition.yaml")
        assert comp.id == name
        assert comp.primary_metric.primary


def test_unknown_field_names_file_and_field(tmp_path):
    p = write_spec(tmp_path, {**BASE, "limits": {"per_team_per_dya": 3}})
    with pytest.raises(SpecError) as e:
        load_competition(p)
    assert str(p) in str(e.value)
    assert "limits.per_team_per_dya" in str(e.value)
    assert "unknown field" in str(e.value)


def test_missing_required_field(tmp_path):
    doc = dict(BASE)
    del doc["metrics"]
    with pytest.raises(SpecError, match=r"metrics: required field is missing"):
        load_competition(write_spec(tmp_path, doc))


def test_two_primary_metrics(tmp_path):
    doc = {**BASE, "metrics": [{"scorer": "accuracy", "primary": True},
                               {"scorer": "accuracy", "name": "acc2", "primary": True}]}
    with pytest.raises(SpecError, match="only one metric may be primary"):
        load_competition(write_spec(tmp_path, doc))


def test_bad_duration_and_size(tmp_path):
    doc = {**BASE, "resources": {"timeout": "ten minutes", "memory": "lots"}}
    with pytest.raises(SpecError) as e:
        load_competition(write_spec(tmp_path, doc))
    assert "resources.timeout" in str(e.value) and "resources.memory" in str(e.value)
    assert parse_duration("9h") == 9 * 3600 and parse_size("2GiB") == 2 * 1024**3


def test_yaml_syntax_error_has_line(tmp_path):
    p = write_spec(tmp_path, "id: x\ntitle: [unclosed\nmetrics: []\n")
    with pytest.raises(SpecError, match=r"line \d+, column \d+: YAML syntax error"):
        load_competition(p)


def test_missing_reference_file(tmp_path):
    doc = {**BASE, "data": {"reference": "nope.csv"}}
    with pytest.raises(SpecError, match=r"data.reference: file not found"):
        load_competition(write_spec(tmp_path, doc))


def test_bad_split_fraction(tmp_path):
    with pytest.raises(SpecError, match="public_fraction"):
        load_competition(write_spec(tmp_path, {**BASE, "split": {"public_fraction": 1.5}}))


def test_unknown_scorer_and_bad_params_rejected_at_load(tmp_path, store):
    p = write_spec(tmp_path, {**BASE, "metrics": [{"scorer": "nosuch"}]})
    with pytest.raises(SpecError, match=r"metrics\[0\].scorer: no scorer named 'nosuch'"):
        load_into_store(store, p)
    p = write_spec(tmp_path, {**BASE, "prediction": {"type": "text", "columns": ["label"]},
                              "metrics": [{"scorer": "bleu", "params": {"tokenize": "no-such-tokenizer"}}]})
    with pytest.raises(SpecError, match=r"metrics\[0\].params"):
        load_into_store(store, p)
    assert store.list_competitions() == []


def test_scorer_must_accept_prediction_type(tmp_path, store):
    p = write_spec(tmp_path, {**BASE, "metrics": [{"scorer": "log_loss"}]})
    with pytest.raises(SpecError, match="log_loss scores"):
        load_into_store(store, p)


def test_reference_column_errors(tmp_path, store):
    p = write_spec(tmp_path, {**BASE, "data": {"reference": "ref.csv", "reference_columns": ["answer"]}})
    with pytest.raises(SpecError, match=r"data.reference_columns: \['answer'\] not in ref.csv"):
        load_into_store(store, p)


def test_fraction_split_is_deterministic(tmp_path):
    from referee.scoring.reference import load_reference
    rows = "\n".join(f"r{i},{i % 2}" for i in range(1000))
    (tmp_path / "ref.csv").write_text("id,label\n" + rows + "\n")
    doc = {**BASE, "split": {"public_fraction": 0.25, "seed": 3}}
    p = tmp_path / "competition.yaml"
    p.write_text(yaml.safe_dump(doc))
    a = load_reference(load_competition(p)).split.copy()
    assert a.sum() == 250
    doc["split"]["seed"] = 4
    p.write_text(yaml.safe_dump(doc))
    b = load_reference(load_competition(p)).split
    assert b.sum() == 250 and (a != b).any()


@pytest.mark.parametrize("patch,field", [
    ({"phases": []}, "phases"),
    ({"data": {"reference": "ref.csv", "reference_columns": []}}, "data.reference_columns"),
    ({"backend": {"max_in_flight": 0}}, "backend.max_in_flight"),
    ({"prediction": {"type": "label", "columns": ["label"], "encoding": "klingon"}}, "prediction.encoding"),
    ({"prediction": {"type": "label", "columns": ["label", "label"]}}, "prediction"),
    ({"limits": {"total": -1}}, "limits.total"),
    ({"resources": {"cpu": -2}}, "resources.cpu"),
    ({"resources": {"timeout": 0}}, "resources.timeout"),
])
def test_nonsense_values_rejected_at_load(tmp_path, patch, field):
    with pytest.raises(SpecError) as e:
        load_competition(write_spec(tmp_path, {**BASE, **patch}))
    assert field in str(e.value)


def test_closed_phase_refused_unless_host(tmp_path, store):
    import datetime as dt

    from referee.platform.core.errors import SubmissionRejected
    from referee.submissions.submit import submit
    doc = {**BASE, "phases": [{"name": "old", "start": "2020-01-01", "end": "2021-01-01"},
                              {"name": "next", "start": "2031-01-01"}]}
    comp = load_into_store(store, write_spec(tmp_path, doc))
    (tmp_path / "p.csv").write_text("id,label\na,1\nb,0\n")
    now = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    for phase in (None, "old", "next"):
        with pytest.raises(SubmissionRejected, match="not open now|no phase"):
            submit(store, comp, "t", tmp_path / "p.csv", phase=phase, now=now)
    sid = submit(store, comp, "t", tmp_path / "p.csv", phase="old", now=now, allow_closed_phase=True)
    assert store.get_submission(sid).phase == "old"


def test_plugin_sections_are_validated_when_the_competition_loads(tmp_path, store):
    """sandbox, cost, checklist and leaderboard are sections of built-in plugins: a typo anywhere in them,
    or a top-level key no plugin owns, is an error naming the field (and, for a key, the known sections)."""
    p = write_spec(tmp_path, {**BASE, "sandbx": {"tmp_size": "8m"}})
    with pytest.raises(SpecError) as e:
        load_into_store(store, p)
    assert str(p) in str(e.value) and "sandbx: unknown field" in str(e.value)
    known = str(e.value).split("plugin sections:")[1]
    assert all(name in known for name in ("checklist", "cost", "leaderboard", "sandbox"))
    for section, field in (({"leaderboard": {"intervls": {"resamples": 10}}}, "leaderboard.intervls"),
                           ({"leaderboard": {"significance": {"alpha": 2}}}, "leaderboard.significance.alpha"),
                           ({"sandbox": {"pids_limit": "many"}}, "sandbox.pids_limit"),
                           ({"cost": {"pricing": "cheap"}}, "cost.pricing")):
        with pytest.raises(SpecError) as e:
            load_into_store(store, write_spec(tmp_path, {**BASE, **section}))
        assert f"{field}:" in str(e.value), str(e.value)
    assert store.list_competitions() == []
    comp = load_into_store(store, write_spec(tmp_path, {**BASE, "sandbox": {"tmp_size": "8m"},
                                                         "leaderboard": {"intervals": {"resamples": 50}}}))
    from referee.platform.runtime.sandbox import SandboxPolicy
    from referee.plugins.manager import config_section
    from referee.scoring.significance import LeaderboardSettings
    assert SandboxPolicy.for_competition(comp).tmp_size == 8_000_000
    assert config_section(comp, "leaderboard", LeaderboardSettings).intervals.resamples == 50
    assert config_section(comp, "leaderboard", LeaderboardSettings).significance.resamples == 1000  # default
    stored = store.get_competition("demo")
    assert stored.spec_dict()["sandbox"] == {"tmp_size": "8m"}  # kept as written
