"""The one registry of leaderboard output formats, and how a cell of each column kind is shown.

Built-in formats: ``table`` (the compact terminal table), ``json``, ``csv``, ``md`` and ``html`` (a
standalone page). Plugins add more through ``referee_leaderboard_renderers`` (a built-in name always
means the built-in). The CLI (``referee leaderboard --format``), the export API and the web pages all
render through here; extra columns are formatted by their ``kind`` alone (number, percent, rate,
currency, tier, p-value, flag, text), never by their key. Every format lists the ranked entries, then
the baselines (``Leaderboard.rows()``): rank "—" (empty in CSV, which has a ``baseline`` column).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from referee.platform.core.errors import RefereeError
from referee.platform.core.leaderboard import Entry, Leaderboard, LeaderboardColumn
from referee.platform.core.markup import escape_html, escape_md, html_page, html_table
from referee.platform.core.text import safe_text
from referee.plugins.manager import get_plugin_manager
from referee.plugins.records import LeaderboardRenderer

MAX_TERMINAL_METRICS = 4
MAX_TERMINAL_EXTRAS = 3
DIGITS = 5


# -- cells -----------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan"
    return f"{v:.4g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.2e}"


def _full(v: float, digits: int = DIGITS) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.4g}"


def cell_text(column: LeaderboardColumn, value: Any, *, compact: bool = False) -> str:
    """A cell as plain text: ``compact`` for the terminal and the web page, else for the exports."""
    if value is None:
        return ""
    kind = column.kind
    if kind == "flag":
        return "yes" if value is True else "" if value is False else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(cell_text(column, v, compact=compact) for v in value)
    if not _is_number(value):
        return str(value)
    if kind == "tier":
        return str(int(value))
    if kind == "percent":
        return f"{100 * value:.{1 if compact else 2}f}%"
    if kind == "currency":
        if compact:
            return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.2g}"
        return f"${value:,.4f}"
    return _short(value) if compact else _full(value)


def tier_class(tier: Any) -> str:
    """CSS class of a tier value (six colours, repeating); ``tier-none`` for no tier."""
    try:
        return f"tier-{(int(tier) - 1) % 6}"
    except (TypeError, ValueError):
        return "tier-none"


def rate_class(value: Any) -> str:
    """good / mid / bad for a ``rate`` (a fraction where lower is better)."""
    if not _is_number(value):
        return ""
    return "good" if value < 0.1 else "mid" if value < 0.4 else "bad"


def cell_html(column: LeaderboardColumn, value: Any) -> tuple[str, str]:
    """``(css classes of the cell, inner HTML)`` for the web page (compact numbers; — for no value)."""
    if value is None:
        return "num", "—"
    text = escape_html(cell_text(column, value, compact=True))
    if column.kind == "tier" and _is_number(value):
        return "num", f'<span class="tier-badge {tier_class(value)}">{text}</span>'
    if column.kind == "rate" and _is_number(value):
        return f"num rate-{rate_class(value)}", text
    return "num", text


def metric_cell(value: float | None, ci: tuple[float, float] | None, digits: int = DIGITS) -> str:
    """A metric with its interval, as the exports show it."""
    cell = "" if value is None else f"{value:.{digits}f}"
    if ci and value is not None:
        cell += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return cell


def _raw(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else safe_text(v)


def _columns(lb: Leaderboard) -> list[LeaderboardColumn]:
    return [lb.column(k) for k in lb.columns_extra]


BASELINE_RANK = "—"  # a baseline's rank cell: listed for comparison, ranked as no team


def rank_text(e: Entry) -> str:
    return BASELINE_RANK if e.rank is None else str(e.rank)


def team_text(e: Entry) -> str:
    return f"{e.team} (baseline)" if e.baseline else e.team


# -- built-in formats ------------------------------------------------------------------------------
def render_json(lb: Leaderboard) -> str:
    return lb.to_json() + "\n"


def render_csv(lb: Leaderboard) -> str:
    """Machine-readable: column keys as headers, raw values (full float precision)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "team", *map(safe_text, lb.metric_order),
                *[safe_text(f"{m}_ci_low") for m in lb.metric_order],
                *[safe_text(f"{m}_ci_high") for m in lb.metric_order],
                *map(safe_text, lb.columns_extra), "submission_id", "submitted_at", "baseline"])
    for e in lb.rows():  # a baseline: empty rank, baseline "yes"
        ci = [e.intervals.get(m) for m in lb.metric_order]
        w.writerow([_raw(e.rank), safe_text(e.team), *[_raw(e.metrics.get(m)) for m in lb.metric_order],
                    *[_raw(c[0]) if c else "" for c in ci], *[_raw(c[1]) if c else "" for c in ci],
                    *[_raw(e.extra.get(c)) for c in lb.columns_extra], e.submission_id, e.submitted_at,
                    "yes" if e.baseline else ""])
    return buf.getvalue()


def _header(lb: Leaderboard) -> list[str]:
    return ["rank", "team", *lb.metric_order, *[c.title for c in _columns(lb)], "submission", "submitted_at"]


def _rows(lb: Leaderboard) -> list[list[str]]:
    cols = _columns(lb)
    out = []
    for e in lb.rows():
        cells = [rank_text(e), team_text(e), *[metric_cell(e.metrics.get(m), e.intervals.get(m))
                                               for m in lb.metric_order]]
        cells += [cell_text(c, e.extra.get(c.key)) for c in cols]
        cells += [f"#{e.submission_id}", e.submitted_at[:16].replace("T", " ")]
        out.append(cells)
    return out


def render_markdown(lb: Leaderboard) -> str:
    head = _header(lb)
    lines = [f"### {escape_md(lb.title)} — {escape_md(lb.phase)} / {lb.split} ({lb.mode}; "
             f"primary: {escape_md(lb.primary)}, {lb.direction})", "",
             "| " + " | ".join(escape_md(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in _rows(lb):
        lines.append("| " + " | ".join(escape_md(c) for c in r) + " |")
    lines += [""] + [f"> {escape_md(n)}" for n in lb.notes]
    return "\n".join(lines).rstrip() + "\n"


def render_html(lb: Leaderboard) -> str:
    """A standalone HTML page: ranks, metrics with intervals, extra columns, notes (all escaped)."""
    title = f"{lb.title} — {lb.phase} / {lb.split} leaderboard ({lb.mode})"
    cols = _columns(lb)
    rows = []
    for e in lb.rows():
        cells = [f'<td class="num">{escape_html(rank_text(e))}</td>', f"<td>{escape_html(team_text(e))}</td>"]
        for m in lb.metric_order:
            v, ci = e.metrics.get(m), e.intervals.get(m)
            extra = (f' <span class="ci">[{escape_html(_full(ci[0]))}, {escape_html(_full(ci[1]))}]</span>'
                     if ci and v is not None else "")
            cells.append(f'<td class="num">{escape_html("" if v is None else _full(v))}{extra}</td>')
        for c in cols:
            v = e.extra.get(c.key)
            cls = f" {rate_class(v)}" if c.kind == "rate" and _is_number(v) else ""
            cells.append(f'<td class="num{cls}" title="{escape_html(c.help)}">{escape_html(cell_text(c, v))}</td>')
        cells += [f'<td class="num">#{escape_html(e.submission_id)}</td>',
                  f"<td>{escape_html(e.submitted_at[:19].replace('T', ' '))}</td>"]
        rows.append(cells)
    body = [f"<h1>{escape_html(title)}</h1>",
            f"<p class=\"muted\">primary metric: {escape_html(lb.primary)} ({escape_html(lb.direction)}); "
            f"competition {escape_html(lb.competition_id)}</p>",
            f'<div class="wide">{html_table(_header(lb), rows, raw=True)}</div>' if rows
            else "<p>No scored submissions yet.</p>"]
    body += [f"<p class=\"muted\">{escape_html(n)}</p>" for n in lb.notes]
    return html_page(title, "\n".join(body))


def terminal_table(lb: Leaderboard) -> Any:
    """The compact terminal table (a ``rich`` Table): the primary metric with its interval, other
    metrics, and the extra columns that ask to be shown there; the exports have everything."""
    from rich.markup import escape
    from rich.table import Table

    extras = [c for c in _columns(lb) if c.terminal]
    metrics = lb.metric_order[:MAX_TERMINAL_METRICS]
    hidden = len(lb.metric_order) - len(metrics) + max(0, len(extras) - MAX_TERMINAL_EXTRAS)
    extras = extras[:MAX_TERMINAL_EXTRAS]
    caption = f"primary: {lb.primary} ({lb.direction})"
    if hidden:
        caption += f"; {hidden} more column(s) with --format md|csv|json|html"
    t = Table(title=escape(safe_text(f"{lb.title} — {lb.phase} / {lb.split} ({lb.mode})")),
              caption=escape(safe_text(caption)),
              caption_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("team", overflow="fold")
    for m in metrics:
        t.add_column(escape(safe_text(m)), justify="right")
    for c in extras:
        t.add_column(escape(safe_text(c.title)), justify="right")
    t.add_column("sub", justify="right")
    for e in lb.rows():
        cells = [rank_text(e), team_text(e)]
        for i, m in enumerate(metrics):
            v, ci = e.metrics.get(m), e.intervals.get(m)
            cell = "" if v is None else _short(v)
            if i == 0 and ci and v is not None:
                cell += f" ±{(ci[1] - ci[0]) / 2:.2g}"
            cells.append(cell)
        cells += [cell_text(c, e.extra.get(c.key), compact=True) for c in extras]
        cells.append(f"#{e.submission_id}")
        # team names and plugin values are text, never markup, and never terminal control sequences
        t.add_row(*(escape(safe_text(c)) for c in cells))
    return t


def print_table(lb: Leaderboard, console: Any) -> None:
    """The terminal table and the leaderboard's notes on a ``rich`` console."""
    from rich.markup import escape

    console.print(terminal_table(lb))
    for n in lb.notes:
        console.print(f"[dim]{escape(safe_text(n))}[/dim]")


def render_table(lb: Leaderboard) -> str:
    """The terminal table as plain text (no colours)."""
    from rich.console import Console

    buf = io.StringIO()
    print_table(lb, Console(file=buf, width=120, color_system=None, highlight=False))
    return buf.getvalue()


BUILTIN_RENDERERS: dict[str, LeaderboardRenderer] = {r.name: r for r in (
    LeaderboardRenderer("table", render_table, "text/plain; charset=utf-8", "txt", "the compact terminal table"),
    LeaderboardRenderer("json", render_json, "application/json", "json", "everything, machine-readable"),
    LeaderboardRenderer("csv", render_csv, "text/csv; charset=utf-8", "csv", "one row per entry, raw values"),
    LeaderboardRenderer("md", render_markdown, "text/markdown; charset=utf-8", "md", "a Markdown table"),
    LeaderboardRenderer("html", render_html, "text/html; charset=utf-8", "html", "a standalone HTML page"),
)}


def renderers() -> dict[str, LeaderboardRenderer]:
    """Every output format: the built-ins, then those plugins add."""
    return {**get_plugin_manager().leaderboard_renderers(), **BUILTIN_RENDERERS}


def renderer(fmt: str) -> LeaderboardRenderer:
    found = renderers()
    if fmt not in found:
        raise RefereeError(f"unknown leaderboard format {fmt!r}; known formats: {', '.join(sorted(found))}")
    return found[fmt]


def render_leaderboard(lb: Leaderboard, fmt: str) -> str:
    """``lb`` in the output format ``fmt`` (``RefereeError`` naming the known formats if there is none)."""
    return renderer(fmt).render(lb)
