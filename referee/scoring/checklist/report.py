"""The CheckList part of a submission's report: the capability x test-type matrix, per-test failure
rates and failing examples, as Markdown and as HTML (every text from a test or an example escaped)."""

from __future__ import annotations

from typing import Any

from referee.platform.core.markup import escape_html, escape_md, html_table, md_table
from referee.platform.store import ScoreRow
from referee.scoring.checklist.schema import TEST_TYPES

SPLITS = ("public", "private")


def checklist_sections(scores: list[ScoreRow]) -> list[tuple[str, str, dict[str, Any]]]:
    """(split, metric, checklist details) per split: the first metric of each split that has them,
    preferring one scored over the whole suite."""
    out = []
    for split in SPLITS:
        found = [s for s in scores if s.split == split and s.details.get("checklist")]
        found.sort(key=lambda s: "scope:all" not in (s.provenance.get("signature") or ""))
        if found:
            out.append((split, found[0].metric, found[0].details["checklist"]))
    return out


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * float(v):.1f}%"


def _cell_text(cell: dict[str, Any] | None) -> str:
    return "" if not cell else f"{_pct(cell['rate'])} ({cell['fails']}/{cell['n']})"


def _example_text(e: dict[str, Any]) -> str:
    probs = e.get("probs")
    conf = f" p={probs[e['pred']]:.2f}" if probs and e.get("pred") in probs else ""
    want = f", expected {e['expected']}" if e.get("expected") and e.get("role") == "case" else ""
    return f"[{e.get('role', '')}] {e.get('text', '')} → {e.get('pred', '')}{conf}{want}"


def checklist_markdown(details: dict[str, Any]) -> str:
    m = details["matrix"]
    lines = ["Failure rate (failed / test cases) by capability and test type:", ""]
    rows = [[cap, *[_cell_text(m["cells"][cap].get(t)) for t in TEST_TYPES],
             _cell_text(m["by_capability"][cap])] for cap in m["capabilities"]]
    rows.append(["all", *[_cell_text(m["by_type"].get(t)) for t in TEST_TYPES], _cell_text(m["overall"])])
    lines += md_table(["capability", *TEST_TYPES, "all"], rows)
    lines += md_table(["test", "capability", "type", "failure rate", "failed", "cases", "filtered"],
                      [[t["name"], t["capability"], t["type"], _pct(t["rate"]), str(t["fails"]), str(t["n"]),
                        str(t["filtered"])] for t in details["tests"]])
    for t in details["tests"]:
        if not t.get("failing"):
            continue
        lines += [f"**Failing examples — {escape_md(t['name'])}** ({escape_md(t['type'])}, "
                  f"{escape_md(t['capability'])})", ""]
        for case in t["failing"]:
            lines += [f"- case {case['case']}:"] + [f"  - {escape_md(_example_text(e))}" for e in case["examples"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _rate_class(rate: Any) -> str:
    if rate is None:
        return "empty"
    return "good" if rate < 0.1 else "mid" if rate < 0.4 else "bad"


def _html_cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return '<td class="empty">—</td>'
    return f'<td class="num {_rate_class(cell["rate"])}">{escape_html(_cell_text(cell))}</td>'


def checklist_html(details: dict[str, Any]) -> str:
    m = details["matrix"]
    rows = [[f"<th>{escape_html(cap)}</th>", *[_html_cell(m["cells"][cap].get(t)) for t in TEST_TYPES],
             _html_cell(m["by_capability"][cap])] for cap in m["capabilities"]]
    rows.append(["<th>all</th>", *[_html_cell(m["by_type"].get(t)) for t in TEST_TYPES], _html_cell(m["overall"])])
    parts = ["<p>Failure rate (failed / test cases) by capability and test type.</p>",
             html_table(["capability", *TEST_TYPES, "all"], rows, raw=True)]
    test_rows = [[f"<td>{escape_html(t['name'])}</td>", f"<td>{escape_html(t['capability'])}</td>",
                  f"<td>{escape_html(t['type'])}</td>",
                  f'<td class="num {_rate_class(t["rate"])}">{escape_html(_pct(t["rate"]))}</td>',
                  f'<td class="num">{escape_html(t["fails"])}</td>', f'<td class="num">{escape_html(t["n"])}</td>',
                  f'<td class="num">{escape_html(t["filtered"])}</td>'] for t in details["tests"]]
    parts.append(html_table(["test", "capability", "type", "failure rate", "failed", "cases", "filtered"],
                            test_rows, raw=True))
    for t in details["tests"]:
        if not t.get("failing"):
            continue
        parts.append(f"<h4>Failing examples — {escape_html(t['name'])} <span class=\"muted\">"
                     f"({escape_html(t['type'])}, {escape_html(t['capability'])})</span></h4><ul>")
        for case in t["failing"]:
            items = "".join(f"<li>{escape_html(_example_text(e))}</li>" for e in case["examples"])
            parts.append(f"<li>case {escape_html(case['case'])}<ul>{items}</ul></li>")
        parts.append("</ul>")
    return "\n".join(parts)
