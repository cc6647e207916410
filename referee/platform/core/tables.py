"""Readers for the table formats referee accepts: CSV, TSV, JSONL and one-line-per-item text.

Tables are read column-wise (a list of strings per column) with the source line of every row,
so a 1M-row file stays cheap and every error can name its line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from referee.platform.core.errors import SubmissionRejected

TXT_COLUMN = "text"
FORMATS = ("csv", "tsv", "jsonl", "txt")


@dataclass
class Table:
    columns: dict[str, list[str]]
    lines: list[int]  # source line of each row (1-based)
    header: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def line_of(self, row: int) -> int:
        return self.lines[row]


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if suffix in ("text",):
        return "txt"
    return "csv"


def _decode(data: bytes, source: str, encoding: str) -> str:
    if b"\x00" in data[:1 << 20] or b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise SubmissionRejected("binary data (NUL byte) found; upload a text file", line=line, source=source,
                                 hint=f"save the predictions as {encoding} text", code="bad_encoding")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SubmissionRejected(f"byte {exc.start} is not valid {encoding}", line=line, source=source,
                                 hint=f"re-save the file as {encoding}", code="bad_encoding") from None
    return text.removeprefix("\ufeff")


def read_table(path: Path, fmt: str, *, source: str | None = None, encoding: str = "utf-8",
               max_bytes: int | None = None, txt_column: str = TXT_COLUMN) -> Table:
    """Read a whole table. Raises ``SubmissionRejected`` with a line number on malformed input."""
    source = source or path.name
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise SubmissionRejected(f"file is {size:,} bytes, over the limit of {max_bytes:,} bytes",
                                 source=source, hint="remove unneeded columns or precision", code="oversize")
    if size == 0:
        raise SubmissionRejected("file is empty", source=source, hint="upload a file with predictions",
                                 code="empty")
    text = _decode(path.read_bytes(), source, encoding)
    if not text.strip():
        raise SubmissionRejected("file contains only whitespace", source=source, code="empty")
    if fmt in ("csv", "tsv"):
        return _read_delimited(text, "," if fmt == "csv" else "\t", source)
    if fmt == "jsonl":
        return _read_jsonl(text, source)
    if fmt == "txt":
        return _read_txt(text, txt_column)
    raise SubmissionRejected(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", source=source)


def _read_delimited(text: str, delimiter: str, source: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise SubmissionRejected(f"malformed header: {exc}", line=1, source=source) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise SubmissionRejected("the first line must be a header naming the columns", line=1, source=source)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise SubmissionRejected(f"duplicate column names {dupes} in the header", line=1, source=source)
    cols: list[list[str]] = [[] for _ in header]
    lines: list[int] = []
    width = len(header)
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                sep = "comma" if delimiter == "," else "tab"
                raise SubmissionRejected(f"expected {width} {sep}-separated fields ({', '.join(header)}), "
                                         f"found {len(row)}", line=reader.line_num, source=source)
            for c, v in zip(cols, row):
                c.append(v)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise SubmissionRejected(f"malformed row: {exc}", line=reader.line_num, source=source) from None
    if not lines:
        raise SubmissionRejected("the file has a header but no rows", source=source, code="empty")
    return Table(columns=dict(zip(header, cols)), lines=lines, header=header)


def _read_jsonl(text: str, source: str) -> Table:
    cols: dict[str, list[str]] = {}
    header: list[str] = []
    lines: list[int] = []
    # split on "\n" only: U+2028 and friends are legal inside JSON strings
    for lineno, raw in enumerate((r.removesuffix("\r") for r in text.split("\n")), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SubmissionRejected(f"not valid JSON ({exc.msg}, column {exc.colno})", line=lineno,
                                     source=source, hint="each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise SubmissionRejected(f"expected a JSON object, found {type(obj).__name__}", line=lineno,
                                     source=source)
        if not lines:
            header = list(obj)
            cols = {k: [] for k in header}
        if set(obj) != set(header):
            missing = sorted(set(header) - set(obj))
            extra = sorted(set(obj) - set(header))
            raise SubmissionRejected(f"keys differ from the first line (missing {missing}, extra {extra})",
                                     line=lineno, source=source)
        for k in header:
            v = obj[k]
            cols[k].append(v if isinstance(v, str) else json.dumps(v))
        lines.append(lineno)
    if not lines:
        raise SubmissionRejected("no JSON lines found", source=source, code="empty")
    return Table(columns=cols, lines=lines, header=header)


def _read_txt(text: str, column: str) -> Table:
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    rows = [r.removesuffix("\r") for r in rows]
    return Table(columns={column: rows}, lines=list(range(1, len(rows) + 1)), header=[column])


def write_table(path: Path, fmt: str, columns: dict[str, list]) -> None:
    """Write a column dict in one of the supported formats (used by examples and containers)."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt in ("csv", "tsv"):
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            w.writerow(names)
            w.writerows(zip(*(columns[c] for c in names)))
        elif fmt == "jsonl":
            for i in range(n):
                f.write(json.dumps({c: columns[c][i] for c in names}) + "\n")
        elif fmt == "txt":
            if len(names) != 1:
                raise ValueError("txt holds exactly one column")
            for v in columns[names[0]]:
                f.write(f"{v}\n")
        else:
            raise ValueError(f"unknown format {fmt!r}")
