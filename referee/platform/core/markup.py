"""Escaping and small tables for Markdown and HTML output (reports, leaderboard exports, plugin panels).

Everything that came from a user (team names, test names, example texts, messages) goes through
``escape_html`` in HTML and ``escape_md`` in Markdown table cells (pipes, newlines, backticks and
``<``/``>``/``&``, so a cell can never open a tag when the Markdown is rendered).
"""

from __future__ import annotations

import html
from typing import Any

from referee.platform.core.text import safe_text

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#666;font-size:.85em;white-space:nowrap}.wide{overflow-x:auto}
.bad{background:#fde2e1}.mid{background:#fff3cd}.good{background:#e3f4e1}.empty{color:#aaa}
code,.sig{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}.muted{color:#666}
"""


def escape_html(text: Any) -> str:
    """Escaped for HTML, with control characters (terminal escapes, bidi overrides) made visible."""
    return html.escape(safe_text("" if text is None else text, multiline=True), quote=True)


def escape_md(text: Any) -> str:
    """Text for a Markdown table cell or list item (control characters made visible)."""
    s = "" if text is None else str(text)
    s = safe_text(s.replace("\r", " ").replace("\n", " "))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("`", "\\`")


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines (every cell escaped) and a blank line after it."""
    out = ["| " + " | ".join(escape_md(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(escape_md(c) for c in r) + " |" for r in rows]
    return out + [""]


def html_table(head: list[str], rows: list[list[str]], *, raw: bool = False) -> str:
    """An HTML table; ``rows`` cells are escaped unless ``raw`` (then they are built ``<td>``/``<th>``)."""
    out = ["<table><thead><tr>" + "".join(f"<th>{escape_html(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + ("".join(r) if raw else "".join(f"<td>{escape_html(c)}</td>" for c in r)) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def html_page(title: str, body: str) -> str:
    """A standalone HTML page with referee's report style."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape_html(title)}</title>"
            f"<style>{PAGE_CSS}</style></head><body>\n{body}\n</body></html>\n")
