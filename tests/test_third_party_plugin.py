"""A third-party plugin, registered like any other, declares its own section of the competition YAML,
a leaderboard column, an output format and a report panel; every renderer shows them without a change
to referee's core: the terminal table, Markdown, the HTML export, the web page and the report."""

from __future__ import annotations

import html
import re

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

import referee.plugins.testing
from referee.platform.cli.main import cli
from referee.platform.controller.competitions import load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.errors import SpecError
from referee.platform.core.markup import escape_html
from referee.platform.leaderboard import build as lbm
from referee.platform.leaderboard.render import render_leaderboard
from referee.platform.web.app import create_app
from referee.platform.web.auth import create_host_token
from referee.plugins import ConfigSection, LeaderboardColumn, LeaderboardRenderer, ReportPanel, hookimpl
from referee.plugins.manager import PluginManager, config_section, reset_runtime
from referee.submissions.submit import submit


class Medals(BaseModel):
    """The plugin's own section: ``medals: {gold: 0.75, label: podium}``."""

    model_config = ConfigDict(extra="forbid")
    gold: float = Field(default=0.9, ge=0, le=1)
    label: str = "medal"


class MedalsPlugin:
    """What a third-party package would register under the ``referee`` entry point group."""

    __name__ = "referee_medals"
    __version__ = "0.3"

    @hookimpl
    def referee_config_sections(self):
        return [ConfigSection(name="medals", model=Medals, description="gold medals on the leaderboard")]

    @hookimpl
    def referee_leaderboard_columns(self, store, competition, leaderboard):
        cfg = config_section(competition, "medals", Medals)
        values = {e.submission_id: "<gold>" if (e.metrics[leaderboard.primary] or 0) >= cfg.gold else "-"
                  for e in leaderboard.entries}
        return [LeaderboardColumn(key="medal", label=cfg.label, kind="text", values=values,
                                  help=f"{leaderboard.primary} of at least {cfg.gold}",
                                  notes=(f"Gold: {leaderboard.primary} of at least {cfg.gold}.",))]

    @hookimpl
    def referee_leaderboard_renderers(self):
        return [LeaderboardRenderer(name="podium", extension="txt",
                                    render=lambda lb: "\n".join(f"{e.rank}:{e.team}" for e in lb.entries) + "\n")]

    @hookimpl
    def referee_submission_panels(self, store, competition, submission, scores):
        best = max((s.value or 0 for s in scores), default=0)
        return [ReportPanel(key="medal", title="Medal check", markdown=f"best score {best:.2f}",
                            html=f"<p>best score {escape_html(f'{best:.2f}')}</p>")]


@pytest.fixture
def medal_plugin():
    pm = PluginManager(entrypoints=False, extra=[referee.plugins.testing, MedalsPlugin()])
    reset_runtime(pm)
    return pm


def write_competition(tmp_path, **extra):
    rows = [f"p{i},1,public" for i in range(4)] + [f"q{i},1,private" for i in range(4)]
    (tmp_path / "ref.csv").write_text("id,label,split\n" + "\n".join(rows) + "\n")
    spec = {"id": "medals", "title": "Medals", "data": {"reference": "ref.csv"}, "split": {"column": "split"},
            "prediction": {"type": "label", "columns": ["label"]}, "metrics": [{"scorer": "accuracy"}], **extra}
    path = tmp_path / "medals.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def scored(tmp_path, store, medal_plugin):
    comp = load_into_store(store, write_competition(tmp_path, medals={"gold": 0.75, "label": "podium"}))
    for team, right in (("alpha", 4), ("bravo", 3), ("charlie", 1)):
        lines = [f"p{i},{1 if i < right else 0}" for i in range(4)] + [f"q{i},1" for i in range(4)]
        (tmp_path / f"{team}.csv").write_text("id,label\n" + "\n".join(lines) + "\n")
        submit(store, comp, team, tmp_path / f"{team}.csv")
    assert Controller(store, comp).run().scored == 3
    return comp


def test_the_section_is_validated_like_a_builtin_one(tmp_path, store, medal_plugin):
    with pytest.raises(SpecError) as err:
        load_into_store(store, write_competition(tmp_path, medals={"gold": 2, "colour": "red"}))
    text = str(err.value)
    assert str(tmp_path / "medals.yaml") in text
    assert "medals.gold" in text and "medals.colour: unknown field" in text
    with pytest.raises(SpecError) as err:
        load_into_store(store, write_competition(tmp_path, medalz={"gold": 0.5}))
    assert "medalz: unknown field" in str(err.value) and "medals" in str(err.value).split("plugin sections:")[1]
    comp = load_into_store(store, write_competition(tmp_path))  # left out: the model's defaults
    assert config_section(comp, "medals", Medals) == Medals()
    reports = {r.name: r for r in medal_plugin.reports}
    assert "config-section:medals" in reports["referee_medals"].provides


def test_a_disabled_plugin_takes_its_section_with_it(tmp_path, store):
    pm = PluginManager(entrypoints=False, extra=[MedalsPlugin()], disable=["referee_medals"])
    reset_runtime(pm)
    assert {r.name: r.disabled for r in pm.reports}["referee_medals"] is True
    assert "medals" not in pm.config_sections()
    with pytest.raises(SpecError, match="medals: unknown field"):
        load_into_store(store, write_competition(tmp_path, medals={"gold": 0.5}))


def test_the_column_renders_everywhere(scored, store):
    lb = lbm.build(store, scored, split="public")
    by_team = {e.team: e.extra["medal"] for e in lb.entries}
    assert by_team == {"alpha": "<gold>", "bravo": "<gold>", "charlie": "-"}

    table = CliRunner().invoke(cli, ["-w", str(store.root), "leaderboard", "medals"])
    assert table.exit_code == 0, table.output
    assert "podium" in table.output and "<gold>" in table.output
    assert "Gold: accuracy of at least 0.75." in " ".join(table.output.split())

    md = render_leaderboard(lb, "md")
    assert "| podium |" in md.splitlines()[2]
    alpha_row = next(line for line in md.splitlines() if "| alpha |" in line)
    assert "&lt;gold&gt;" in alpha_row  # escaped in Markdown too

    client = TestClient(create_app(store, run_scheduler=False))
    try:
        host = create_host_token(store)
        export = client.get("/api/competitions/medals/export?format=html&split=public",
                            headers={"Authorization": f"Bearer {host}"})
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/html")
        assert "<th>podium</th>" in export.text and "&lt;gold&gt;" in export.text and "<gold>" not in export.text

        podium = client.get("/api/competitions/medals/export?format=podium&split=public",
                            headers={"Authorization": f"Bearer {host}"})
        assert podium.status_code == 200 and podium.text.splitlines()[0] == "1:alpha"
        unknown = client.get("/api/competitions/medals/export?format=nope",
                             headers={"Authorization": f"Bearer {host}"})
        assert unknown.status_code == 400 and "podium" in unknown.json()["message"]

        page = client.get("/c/medals")
        assert page.status_code == 200
        assert 'title="accuracy of at least 0.75">podium</th>' in page.text
        cells = [html.unescape(c) for c in
                 re.findall(r'data-column="medal">([^<]*)</td>', page.text)]
        assert cells == ["<gold>", "<gold>", "-"]
        assert "Gold: accuracy of at least 0.75." in page.text
    finally:
        client.close()


def test_the_panel_and_the_format_reach_the_cli(scored, store):
    runner = CliRunner()
    sid = next(s.id for s in store.submissions("medals") if s.team == "alpha")
    report = runner.invoke(cli, ["-w", str(store.root), "report", str(sid)])
    assert report.exit_code == 0, report.output
    assert "## Medal check" in report.output and "best score 1.00" in report.output
    podium = runner.invoke(cli, ["-w", str(store.root), "leaderboard", "medals", "--format", "podium"])
    assert podium.exit_code == 0 and podium.output.splitlines() == ["1:alpha", "2:bravo", "3:charlie"]
    bad = runner.invoke(cli, ["-w", str(store.root), "leaderboard", "medals", "--format", "yaml"])
    assert bad.exit_code != 0 and "known formats" in str(bad.exception or bad.output)
