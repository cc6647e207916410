"""Per-submission reports (Markdown, HTML, web fragment) and the standalone HTML leaderboard."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import pytest
from checklist_support import scored_example
from click.testing import CliRunner

from referee.platform.cli.main import cli
from referee.platform.core.leaderboard import Entry, Leaderboard
from referee.platform.leaderboard import build as lbm
from referee.platform.leaderboard.render import render_html as leaderboard_html
from referee.platform.reports.submission import (
    render_markdown,
    report_data,
    submission_fragment_html,
)
from referee.platform.store import Store


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return scored_example(tmp_path_factory)


class _Collect(HTMLParser):
    """Tags and text of a page; fails on nothing, so tests assert on what it found."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    return p


def test_markdown_report_has_scores_matrix_and_failing_examples(scored):
    store = Store(scored.workspace)
    d = report_data(store, scored.lexicon_id)
    md = render_markdown(d)
    rows = {r.metric: r for r in store.scores(scored.lexicon_id) if r.split == "public"}
    assert f"{rows['failure_rate'].value:.5f}" in md and f"{rows['accuracy'].value:.5f}" in md
    assert rows["failure_rate"].provenance["signature"].replace("|", "\\|") in md
    details = rows["failure_rate"].details["checklist"]
    neg = details["matrix"]["cells"]["Negation"]["MFT"]
    assert re.search(rf"\| Negation \| {100 * neg['rate']:.1f}% \({neg['fails']}/{neg['n']}\) \|", md)
    assert "| capability | MFT | INV | DIR | all |" in md
    first = next(t for t in details["tests"] if t["failing"])["failing"][0]["examples"][0]["text"]
    assert first in md and "Failing examples" in md


def test_html_report_is_escaped_and_complete(scored, tmp_path):
    store = Store(scored.workspace)
    store._execute("UPDATE submissions SET team=? WHERE id=?", ('<script>alert("x")</script>', scored.better_id))
    try:
        result = CliRunner().invoke(cli, ["-w", str(scored.workspace), "report", str(scored.better_id),
                                          "--format", "html", "-o", str(tmp_path / "r.html")])
        assert result.exit_code == 0, result.output
        page = (tmp_path / "r.html").read_text()
    finally:
        store._execute("UPDATE submissions SET team='bravo' WHERE id=?", (scored.better_id,))
    parsed = _parse(page)
    assert "script" not in parsed.tags  # the team name came through as text, not markup
    assert '<script>alert("x")</script>' in "".join(parsed.text)
    assert "&lt;script&gt;" in page
    assert parsed.tags.count("table") >= 4  # info, scores, matrix, tests
    assert "CheckList — public split" in html.unescape(page)


def test_report_split_option_and_fragment(scored):
    runner = CliRunner()
    result = runner.invoke(cli, ["-w", str(scored.workspace), "report", str(scored.lexicon_id), "--split", "private"])
    assert result.exit_code == 0, result.output
    assert "## CheckList — private split" in result.output and "## CheckList — public split" not in result.output
    assert "| public |" not in result.output and "| private | failure_rate |" in result.output
    store = Store(scored.workspace)
    frag = submission_fragment_html(store, scored.lexicon_id)
    assert frag.startswith("<h3>CheckList — public split</h3>") and "<html" not in frag
    assert "private split" not in frag  # participants' view: public only
    assert "private split" in submission_fragment_html(store, scored.lexicon_id, include_private=True)
    missing = runner.invoke(cli, ["-w", str(scored.workspace), "report", "999"])
    assert missing.exit_code != 0


def test_leaderboard_html_escapes_and_shows_intervals_and_columns(scored):
    store = Store(scored.workspace)
    lb = lbm.build(store, store.get_competition(scored.competition_id))
    page = leaderboard_html(lb)
    parsed = _parse(page)
    text = "".join(parsed.text)
    assert "fail:Negation" in text and "alpha" in text and "bravo" in text
    alpha = next(e for e in lb.entries if e.team == "alpha")
    lo, hi = alpha.intervals["failure_rate"]  # every score carries its bootstrap interval
    assert f"[{lo:.5f}, {hi:.5f}]" in text
    assert f"{alpha.extra['fail:Negation']:.5f}" in text
    for note in lb.notes:
        assert note in html.unescape(page)
    hostile = Leaderboard(competition_id="c", title="T <b>&", phase="p", split="public", mode="best",
                          primary="m", direction="minimize", metric_order=["m"], columns_extra=["x<y"],
                          notes=["<img src=x onerror=alert(1)>"],
                          entries=[Entry(rank=1, team="<i>t</i>", submission_id=3, submitted_at="2026-01-01T00:00:00",
                                         metrics={"m": 0.5}, intervals={"m": (0.25, 0.75)}, extra={"x<y": "<u>"})])
    page = leaderboard_html(hostile)
    tags = _parse(page).tags
    assert not {"b", "img", "i", "u"} & set(tags)
    assert "[0.25000, 0.75000]" in page and "&lt;i&gt;t&lt;/i&gt;" in page and "x&lt;y" in page
