"""Plugins: entry-point loading, broken plugins reported and skipped (fatal in strict mode), docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from referee.platform.core.errors import PluginError
from referee.plugins.manager import PluginManager, set_plugin_manager

ROOT = Path(__file__).resolve().parents[1]

GOOD_PLUGIN = '''
import numpy as np
from referee.plugins import hookimpl, ScorerInfo

@hookimpl
def referee_scorers():
    return [ScorerInfo(
        name="mae", version="2.1", higher_is_better=False, accepts=("probability",),
        statistics=lambda p, r, params: np.stack(
            [np.abs(p.values[:, 0] - np.asarray(r, dtype=float)), np.ones(len(p))], axis=1),
        aggregate=lambda s, params: s[..., 0] / s[..., 1])]
'''


def make_dist(root: Path, dist: str, module: str, code: str, version: str = "1.0") -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[referee]\n{dist} = {module}\n")


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    make_dist(root, "referee-mae", "referee_mae", GOOD_PLUGIN, "2.1")
    make_dist(root, "referee-broken", "referee_broken", "raise ImportError('missing native library')\n")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_builtins_listed():
    pm = PluginManager(entrypoints=False)  # a plain install: built-ins only
    assert {"log_loss", "accuracy", "wer", "cer", "bleu", "chrf", "ter"} <= set(pm.scorers())
    assert {"local", "docker", "ray", "aws-batch"} <= set(pm.backends())
    assert "fake" not in pm.backends()  # the test double is an opt-in plugin (referee.plugins.testing)
    assert {"predictions", "script"} <= set(pm.submission_kinds())
    assert all(r.error is None for r in pm.reports), [r.error for r in pm.reports if r.error]


def test_third_party_scorer_and_broken_plugin(plugin_path, tmp_path, store):
    pm = PluginManager()
    reports = {r.name: r for r in pm.reports}
    assert reports["referee-mae"].version == "2.1" and reports["referee-mae"].provides == ["scorer:mae"]
    assert "missing native library" in reports["referee-broken"].error
    assert "mae" in pm.scorers()
    # the third-party scorer works end to end through a competition
    set_plugin_manager(pm)
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.submissions.submit import submit
    (tmp_path / "ref.csv").write_text("id,label\na,1\nb,0\n")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "id": "p", "title": "P", "data": {"reference": "ref.csv"}, "metrics": [{"scorer": "mae"}]}))
    comp = load_into_store(store, tmp_path / "c.yaml")
    (tmp_path / "s.csv").write_text("id,label\na,0.75\nb,0.25\n")
    sid = submit(store, comp, "t", tmp_path / "s.csv")
    Controller(store, comp).run()
    (row,) = [r for r in store.scores(sid) if r.split == "public"]
    assert row.value == pytest.approx(0.25)
    assert row.provenance["scorer_version"] == "2.1"


def test_strict_mode_makes_broken_plugin_fatal(plugin_path):
    with pytest.raises(PluginError, match="referee-broken.*missing native library"):
        PluginManager(strict=True)


def test_cli_reports_broken_plugin_and_keeps_working(plugin_path):
    env = {**os.environ, "PYTHONPATH": f"{plugin_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "referee.platform.cli", "plugins", "list", "--json"],
                         env=env, capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["referee-broken"]["error"] and rows["builtin_scorers"]["error"] is None
    strict = subprocess.run([sys.executable, "-m", "referee.platform.cli", "plugins", "list"],
                            env={**env, "REFEREE_STRICT_PLUGINS": "1"}, capture_output=True, text=True)
    assert strict.returncode == 1 and "strict plugin mode" in strict.stderr


def test_disabled_plugins_are_left_out_and_listed(monkeypatch):
    from click.testing import CliRunner

    from referee.platform.cli.main import cli
    from referee.plugins.manager import reset_runtime

    monkeypatch.setenv("REFEREE_DISABLE_PLUGINS", "builtin_stats, builtin_checklist")
    pm = PluginManager(entrypoints=False)
    reports = {r.name: r for r in pm.reports}
    assert reports["builtin_stats"].disabled and reports["builtin_checklist"].disabled
    assert not reports["builtin_scorers"].disabled
    assert "checklist" not in pm.scorers() and "bleu" in pm.scorers()
    assert {"sandbox", "cost"} <= set(pm.config_sections()) and "leaderboard" not in pm.config_sections()
    assert "checklist" in PluginManager(entrypoints=False, disable=[]).scorers()  # the argument wins
    reset_runtime(None)  # the command line's manager reads the same variable
    runner = CliRunner()
    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["plugins", "list", "--json"]).output)}
    assert rows["builtin_stats"]["disabled"] is True and rows["builtin_stats"]["provides"] == []
    assert rows["builtin_cost"]["disabled"] is False and "config-section:cost" in rows["builtin_cost"]["provides"]
    table = runner.invoke(cli, ["plugins", "list"]).output
    assert "builtin_checklist" in table and "disabled" in table
