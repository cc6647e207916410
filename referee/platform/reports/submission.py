"""Reports: a per-submission report (Markdown or HTML) and a standalone HTML leaderboard.

The submission report shows the submission, every score with its interval, signature and provenance,
and — for CheckList competitions — the capability x test-type matrix, per-test failure rates and
failing examples. Everything that came from a user (team names, test names, example texts, messages)
is escaped: ``html.escape`` for HTML, and for Markdown table cells pipes, newlines and ``<``/``>``/``&``.

``referee report SUBMISSION_ID [--format md|html] [--split public|private|all] [-o FILE]``
"""

from __future__ import annotations

import html
from typing import Any, Iterable

from referee.platform.core.text import safe_text
from referee.scoring.checklist.schema import TEST_TYPES

SPLITS = ("public", "private")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#666;font-size:.85em;white-space:nowrap}.wide{overflow-x:auto}
.bad{background:#fde2e1}.mid{background:#fff3cd}.good{background:#e3f4e1}.empty{color:#aaa}
code,.sig{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}.muted{color:#666}
"""


# -- collecting ----------------------------------------------------------------------------------------
def report_data(store: Any, sid: int, *, splits: Iterable[str] = SPLITS) -> dict[str, Any]:
    """The submission with its scores (only ``splits``) and its competition's title."""
    from referee.platform.reports.views import submission_detail

    d = submission_detail(store, sid)
    wanted = set(splits)
    d["scores"] = [s for s in d["scores"] if s["split"] in wanted]
    try:
        d["competition_title"] = store.get_competition(d["competition_id"]).title
    except Exception:
        d["competition_title"] = d["competition_id"]
    return d


def checklist_sections(scores: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(split, metric, checklist details) per split: the first metric of each split that has them,
    preferring one scored over the whole suite."""
    out = []
    for split in SPLITS:
        found = [s for s in scores if s["split"] == split and isinstance(s.get("details"), dict)
                 and s["details"].get("checklist")]
        found.sort(key=lambda s: "scope:all" not in (s.get("signature") or ""))
        if found:
            out.append((split, found[0]["metric"], found[0]["details"]["checklist"]))
    return out


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * float(v):.1f}%"


def _num(v: Any, digits: int = 5) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def _cell_text(cell: dict[str, Any] | None) -> str:
    return "" if not cell else f"{_pct(cell['rate'])} ({cell['fails']}/{cell['n']})"


def _example_text(e: dict[str, Any]) -> str:
    probs = e.get("probs")
    conf = f" p={probs[e['pred']]:.2f}" if probs and e.get("pred") in probs else ""
    want = f", expected {e['expected']}" if e.get("expected") and e.get("role") == "case" else ""
    return f"[{e.get('role', '')}] {e.get('text', '')} → {e.get('pred', '')}{conf}{want}"


# -- markdown ------------------------------------------------------------------------------------------
def _md(text: Any) -> str:
    s = "" if text is None else str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\r", " ").replace("\n", " ").replace("`", "\\`")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
    return out + [""]


def checklist_markdown(details: dict[str, Any]) -> list[str]:
    m = details["matrix"]
    lines = ["Failure rate (failed / test cases) by capability and test type:", ""]
    rows = [[cap, *[_cell_text(m["cells"][cap].get(t)) for t in TEST_TYPES],
             _cell_text(m["by_capability"][cap])] for cap in m["capabilities"]]
    rows.append(["all", *[_cell_text(m["by_type"].get(t)) for t in TEST_TYPES], _cell_text(m["overall"])])
    lines += _md_table(["capability", *TEST_TYPES, "all"], rows)
    lines += _md_table(["test", "capability", "type", "failure rate", "failed", "cases", "filtered"],
                       [[t["name"], t["capability"], t["type"], _pct(t["rate"]), str(t["fails"]), str(t["n"]),
                         str(t["filtered"])] for t in details["tests"]])
    for t in details["tests"]:
        if not t.get("failing"):
            continue
        lines += [f"**Failing examples — {_md(t['name'])}** ({_md(t['type'])}, {_md(t['capability'])})", ""]
        for case in t["failing"]:
            lines += [f"- case {case['case']}:"] + [f"  - {_md(_example_text(e))}" for e in case["examples"]]
        lines.append("")
    return lines


def render_markdown(d: dict[str, Any]) -> str:
    lines = [f"# Submission #{d['id']} — {_md(d['competition_title'])}", "",
             f"- team: {_md(d['team'])}", f"- phase: {_md(d['phase'])}", f"- kind: {_md(d['kind'])}",
             f"- status: {_md(d['status'])}", f"- submitted: {_md(d['created_at'])}",
             f"- sha256: {_md(d['sha256'])}", ""]
    if d.get("failure_reason"):
        lines += [f"**Failed ({_md(d['failure_reason'])})**: {_md(d.get('failure_message'))}", ""]
    if d["scores"]:
        lines += ["## Scores", ""]
        lines += _md_table(["split", "metric", "value", "interval", "items", "signature"],
                           [[s["split"], s["metric"], _num(s["value"]),
                             f"[{_num(s['ci_low'])}, {_num(s['ci_high'])}]" if s.get("ci_low") is not None else "",
                             str(s.get("n_items") or ""), s.get("signature") or ""] for s in d["scores"]])
        lines += ["Provenance:", ""]
        for s in d["scores"]:
            p = s.get("provenance") or {}
            libs = ", ".join(f"{k} {v}" for k, v in sorted((p.get("libraries") or {}).items()))
            lines.append(f"- {_md(s['split'])} / {_md(s['metric'])}: scorer {_md(p.get('scorer'))} "
                         f"{_md(p.get('scorer_version'))}, referee {_md(p.get('referee_version'))}, "
                         f"reference sha256 {_md(p.get('reference_sha256'))}; {_md(libs)}")
        lines.append("")
    for split, metric, cl in checklist_sections(d["scores"]):
        lines += [f"## CheckList — {_md(split)} split (from metric {_md(metric)})", ""]
        lines += checklist_markdown(cl)
    return "\n".join(lines).rstrip() + "\n"


# -- html ----------------------------------------------------------------------------------------------
def _h(text: Any) -> str:
    """Escaped for HTML, with control characters (terminal escapes, bidi overrides) made visible."""
    return html.escape(safe_text("" if text is None else text, multiline=True), quote=True)


def _rate_class(rate: Any) -> str:
    if rate is None:
        return "empty"
    return "good" if rate < 0.1 else "mid" if rate < 0.4 else "bad"


def _html_table(head: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    """``rows`` cells are escaped unless ``raw`` (then they are already-built ``<td>`` elements)."""
    out = ["<table><thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + ("".join(r) if raw else "".join(f"<td>{_h(c)}</td>" for c in r)) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _html_cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return '<td class="empty">—</td>'
    return f'<td class="num {_rate_class(cell["rate"])}">{_h(_cell_text(cell))}</td>'


def checklist_html(details: dict[str, Any]) -> str:
    m = details["matrix"]
    rows = [[f"<th>{_h(cap)}</th>", *[_html_cell(m["cells"][cap].get(t)) for t in TEST_TYPES],
             _html_cell(m["by_capability"][cap])] for cap in m["capabilities"]]
    rows.append(["<th>all</th>", *[_html_cell(m["by_type"].get(t)) for t in TEST_TYPES], _html_cell(m["overall"])])
    parts = ["<p>Failure rate (failed / test cases) by capability and test type.</p>",
             _html_table(["capability", *TEST_TYPES, "all"], rows, raw=True)]
    test_rows = [[f"<td>{_h(t['name'])}</td>", f"<td>{_h(t['capability'])}</td>", f"<td>{_h(t['type'])}</td>",
                  f'<td class="num {_rate_class(t["rate"])}">{_h(_pct(t["rate"]))}</td>',
                  f'<td class="num">{_h(t["fails"])}</td>', f'<td class="num">{_h(t["n"])}</td>',
                  f'<td class="num">{_h(t["filtered"])}</td>'] for t in details["tests"]]
    parts.append(_html_table(["test", "capability", "type", "failure rate", "failed", "cases", "filtered"],
                             test_rows, raw=True))
    for t in details["tests"]:
        if not t.get("failing"):
            continue
        parts.append(f"<h4>Failing examples — {_h(t['name'])} <span class=\"muted\">({_h(t['type'])}, "
                     f"{_h(t['capability'])})</span></h4><ul>")
        for case in t["failing"]:
            items = "".join(f"<li>{_h(_example_text(e))}</li>" for e in case["examples"])
            parts.append(f"<li>case {_h(case['case'])}<ul>{items}</ul></li>")
        parts.append("</ul>")
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_h(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def render_html(d: dict[str, Any]) -> str:
    title = f"Submission #{d['id']} — {d['competition_title']}"
    info = [("team", d["team"]), ("phase", d["phase"]), ("kind", d["kind"]), ("status", d["status"]),
            ("submitted", d["created_at"]), ("sha256", d["sha256"])]
    parts = [f"<h1>{_h(title)}</h1>", _html_table(["field", "value"], [[k, v] for k, v in info])]
    if d.get("failure_reason"):
        parts.append(f"<p class=\"bad\"><b>Failed ({_h(d['failure_reason'])})</b>: {_h(d.get('failure_message'))}</p>")
    if d["scores"]:
        parts.append("<h2>Scores</h2>")
        rows = []
        for s in d["scores"]:
            p = s.get("provenance") or {}
            ci = (f' <span class="ci">[{_h(_num(s["ci_low"]))}, {_h(_num(s["ci_high"]))}]</span>'
                  if s.get("ci_low") is not None else "")
            libs = ", ".join(f"{k} {v}" for k, v in sorted((p.get("libraries") or {}).items()))
            rows.append([f"<td>{_h(s['split'])}</td>", f"<td>{_h(s['metric'])}</td>",
                         f'<td class="num">{_h(_num(s["value"]))}{ci}</td>',
                         f'<td class="num">{_h(s.get("n_items") or "")}</td>',
                         f'<td><span class="sig">{_h(s.get("signature"))}</span><br><span class="muted">'
                         f'scorer {_h(p.get("scorer_version"))}, reference sha256 '
                         f'{_h((p.get("reference_sha256") or "")[:16])}…; {_h(libs)}</span></td>'])
        parts.append(_html_table(["split", "metric", "value", "items", "signature and provenance"], rows, raw=True))
    for split, metric, cl in checklist_sections(d["scores"]):
        parts.append(f"<h2>CheckList — {_h(split)} split <span class=\"muted\">(metric {_h(metric)})</span></h2>")
        parts.append(checklist_html(cl))
    return _page(title, "\n".join(parts))


def submission_fragment_html(store: Any, sid: int, include_private: bool = False) -> str:
    """The CheckList part of a submission's report as an HTML fragment (for the web page); empty when none."""
    d = report_data(store, sid, splits=SPLITS if include_private else ("public",))
    return "\n".join(f"<h3>CheckList — {_h(split)} split</h3>\n" + checklist_html(cl)
                     for split, _, cl in checklist_sections(d["scores"]))


def leaderboard_html(lb: Any) -> str:
    """A standalone HTML page of a ``Leaderboard``: ranks, metrics with intervals, extra columns, notes."""
    title = f"{lb.title} — {lb.phase} / {lb.split} leaderboard ({lb.mode})"
    head = lb.header()
    rows = []
    for e in lb.entries:
        cells = [f'<td class="num">{_h(e.rank)}</td>', f"<td>{_h(e.team)}</td>"]
        for m in lb.metric_order:
            v, ci = e.metrics.get(m), e.intervals.get(m)
            extra = (f' <span class="ci">[{_h(_num(ci[0]))}, {_h(_num(ci[1]))}]</span>'
                     if ci and v is not None else "")
            cells.append(f'<td class="num">{_h(_num(v))}{extra}</td>')
        cells += [f'<td class="num">{_h(_num(e.extra.get(c)))}</td>' for c in lb.columns_extra]
        cells += [f'<td class="num">#{_h(e.submission_id)}</td>',
                  f"<td>{_h(e.submitted_at[:19].replace('T', ' '))}</td>"]
        rows.append(cells)
    body = [f"<h1>{_h(title)}</h1>",
            f"<p class=\"muted\">primary metric: {_h(lb.primary)} ({_h(lb.direction)}); "
            f"competition {_h(lb.competition_id)}</p>",
            f'<div class="wide">{_html_table(head, rows, raw=True)}</div>' if rows
            else "<p>No scored submissions yet.</p>"]
    body += [f"<p class=\"muted\">{_h(n)}</p>" for n in lb.notes]
    return _page(title, "\n".join(body))
