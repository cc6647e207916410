"""Reports: a submission's report as Markdown or HTML, and the panels plugins add to it.

The report shows the submission and every score with its interval, signature and provenance; then the
panels plugins return from ``referee_submission_panels`` (the CheckList matrix, for example), each with
the same content as Markdown and HTML. Everything that came from a user (team names, messages) is
escaped: ``escape_html`` for HTML, ``escape_md`` for Markdown (``referee.platform.core.markup``).

``referee report SUBMISSION_ID [--format md|html] [--split public|private|all] [-o FILE]``
"""

from __future__ import annotations

from typing import Any, Iterable

from referee.platform.core.jobs import SubmissionStatus
from referee.platform.core.markup import escape_html as _h
from referee.platform.core.markup import escape_md as _md
from referee.platform.core.markup import html_page, html_table, md_table
from referee.platform.reports.views import submission_detail
from referee.platform.store import Store
from referee.plugins.manager import get_plugin_manager
from referee.plugins.records import ReportPanel

SPLITS = ("public", "private")


# -- collecting ----------------------------------------------------------------------------------------
def panels(store: Store, sid: int, splits: Iterable[str] = SPLITS) -> list[ReportPanel]:
    """The report panels plugins make for a submission, from its scores on ``splits`` only."""
    sub = store.get_submission(sid)
    wanted = set(splits)
    scores = [r for r in (store.scores(sid) if sub.status is SubmissionStatus.SCORED else []) if r.split in wanted]
    comp = store.get_competition(sub.competition_id).for_phase(sub.phase, strict=False)
    found = get_plugin_manager().hook.referee_submission_panels(store=store, competition=comp, submission=sub,
                                                                 scores=scores)
    return [p for ps in reversed(found) for p in ps or []]  # in plugin registration order


def report_data(store: Store, sid: int, *, splits: Iterable[str] = SPLITS) -> dict[str, Any]:
    """The submission with its scores (only ``splits``), its competition's title and the plugins' panels."""
    d = submission_detail(store, sid)
    wanted = tuple(splits)
    d["scores"] = [s for s in d["scores"] if s["split"] in wanted]
    try:
        d["competition_title"] = store.get_competition(d["competition_id"]).title
    except Exception:
        d["competition_title"] = d["competition_id"]
    d["panels"] = panels(store, sid, wanted)
    return d


def _num(v: Any, digits: int = 5) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


# -- markdown ------------------------------------------------------------------------------------------
def render_markdown(d: dict[str, Any]) -> str:
    lines = [f"# Submission #{d['id']} — {_md(d['competition_title'])}", "",
             f"- team: {_md(d['team'])}", f"- phase: {_md(d['phase'])}", f"- kind: {_md(d['kind'])}",
             f"- status: {_md(d['status'])}", f"- submitted: {_md(d['created_at'])}",
             f"- sha256: {_md(d['sha256'])}", ""]
    if d.get("failure_reason"):
        lines += [f"**Failed ({_md(d['failure_reason'])})**: {_md(d.get('failure_message'))}", ""]
    if d["scores"]:
        lines += ["## Scores", ""]
        lines += md_table(["split", "metric", "value", "interval", "items", "signature"],
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
    for panel in d.get("panels", []):
        sub = f" ({_md(panel.subtitle)})" if panel.subtitle else ""
        lines += [f"## {_md(panel.title)}{sub}", "", panel.markdown.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


# -- html ----------------------------------------------------------------------------------------------
def render_html(d: dict[str, Any]) -> str:
    title = f"Submission #{d['id']} — {d['competition_title']}"
    info = [("team", d["team"]), ("phase", d["phase"]), ("kind", d["kind"]), ("status", d["status"]),
            ("submitted", d["created_at"]), ("sha256", d["sha256"])]
    parts = [f"<h1>{_h(title)}</h1>", html_table(["field", "value"], [[k, v] for k, v in info])]
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
        parts.append(html_table(["split", "metric", "value", "items", "signature and provenance"], rows, raw=True))
    for panel in d.get("panels", []):
        sub = f' <span class="muted">({_h(panel.subtitle)})</span>' if panel.subtitle else ""
        parts.append(f"<h2>{_h(panel.title)}{sub}</h2>")
        parts.append(panel.html)
    return html_page(title, "\n".join(parts))


def submission_fragment_html(store: Store, sid: int, include_private: bool = False,
                             splits: Iterable[str] | None = None) -> str:
    """The plugins' panels of a submission as one HTML fragment (for the web page); empty when none.
    From the scores of ``splits`` (default: the public split, both with ``include_private``)."""
    if splits is None:
        splits = SPLITS if include_private else ("public",)
    return "\n".join(f"<h3>{_h(p.title)}</h3>\n{p.html}" for p in panels(store, sid, splits))
