"""Showing text that someone else wrote: team names, file names, ids, log tails, rejection messages.

Every string a team controls may hold terminal escape sequences (``ESC [ ... m``, OSC 8 links,
cursor moves), a carriage return that overwrites a line, or bidirectional overrides that reorder
what a reader sees. ``safe_text`` makes such characters visible as ``\\x1b`` / ``\\u202e`` escapes,
so a team can neither forge lines such as "scored" nor restyle a host's terminal. The CLI, the web
pages and the CSV/Markdown/HTML exports show team-controlled strings through it; JSON keeps the exact
string, with every control character escaped by the encoder (``ensure_ascii``).
"""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable

# Bidirectional embeddings, overrides and isolates (the "Trojan Source" characters).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_KEEP_MULTILINE = frozenset("\n\t")


_SHORT = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    return _SHORT.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def needs_escape(ch: str, *, multiline: bool = False) -> bool:
    """Whether ``ch`` would act on a terminal or reorder text instead of showing as itself."""
    if multiline and ch in _KEEP_MULTILINE:
        return False
    if ch in _BIDI:
        return True
    cat = unicodedata.category(ch)
    # Cc: C0/C1 controls and DEL; Zl/Zp: line and paragraph separators; Cs: lone surrogates.
    return cat in ("Cc", "Zl", "Zp", "Cs")


def safe_text(value: Any, *, multiline: bool = False, limit: int | None = None) -> str:
    """``value`` as a string with control characters shown as escapes (``\\x1b``, ``\\u202e``).

    ``multiline`` keeps newlines and tabs (log tails); a carriage return is always escaped, so a
    line can never be overwritten. ``limit`` cuts the result to about that many characters.
    """
    text = "" if value is None else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    if text.isascii() and text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_escape(ch) if needs_escape(ch, multiline=multiline) else ch for ch in text)


def clip(value: Any, limit: int = 80) -> str:
    """A short ``repr``-like rendering of a value a team wrote, for error messages."""
    text = str(value)
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


def summarize(items: Iterable[Any], *, show: int = 5, quote: bool = True) -> str:
    """``'a', 'b', 'c' and 1,234 more``: a list that stays short however long it is."""
    shown: list[str] = []
    more = 0
    for item in items:
        if len(shown) < show:
            shown.append(clip(item, 60) if quote else safe_text(item, limit=60))
        else:
            more += 1
    text = ", ".join(shown)
    return text + (f" and {more:,} more" if more else "")
