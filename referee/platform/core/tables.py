"""Readers for the table formats referee accepts: CSV, TSV, JSONL and one-line-per-item text.

``open_rows`` reads a table one row at a time (each row's values in header order, with its source
line), in memory that does not grow with the file: prediction files of hundreds of megabytes are
validated without holding them (``submissions/intake.py`` keeps only compact arrays). ``read_table``
collects every row column-wise, for the small tables that are kept whole (references, suites).
Every error names its line.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.text import summarize

TXT_COLUMN = "text"
FORMATS = ("csv", "tsv", "jsonl", "txt")
_CHUNK = 1 << 16


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


def _check_bytes(path: Path, source: str, encoding: str, *, need_text: bool) -> None:
    """One pass over the raw bytes: no NUL (binary data), valid ``encoding`` throughout, and (with
    ``need_text``) something besides white space. Errors name the line."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset, newlines, blank = 0, 0, True
    with open(path, "rb") as f:
        while True:
            data = f.read(_CHUNK)
            nul = data.find(b"\x00")
            if nul >= 0:
                raise SubmissionRejected("binary data (NUL byte) found; upload a text file",
                                         line=newlines + data.count(b"\n", 0, nul) + 1, source=source,
                                         hint=f"save the predictions as {encoding} text", code="bad_encoding")
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                start = max(0, min(len(data), exc.start - (len(exc.object) - len(data))))
                raise SubmissionRejected(f"byte {offset + start} is not valid {encoding}",
                                         line=newlines + data.count(b"\n", 0, start) + 1, source=source,
                                         hint=f"re-save the file as {encoding}", code="bad_encoding") from None
            if not data:
                break
            blank = blank and not data.strip()
            offset += len(data)
            newlines += data.count(b"\n")
    if need_text and blank:
        raise SubmissionRejected("file contains only whitespace", source=source, code="empty")


class Rows:
    """A table opened for reading row by row: ``header`` and, iterated, ``(line, values)``."""

    def __init__(self, path: Path, fmt: str, *, source: str, encoding: str, txt_column: str):
        self.path, self.fmt, self.source, self.encoding = path, fmt, source, encoding
        newline = "" if fmt in ("csv", "tsv") else "\n"  # JSON strings may hold U+2028 and friends
        # the bytes were checked (_check_bytes): decoding cannot fail here
        self._text = open(path, encoding=encoding, errors="strict", newline=newline, buffering=_CHUNK)
        self.header: list[str] = []
        self._rows: Iterator[tuple[int, list[str]]]
        if fmt in ("csv", "tsv"):
            self._rows = self._delimited("," if fmt == "csv" else "\t")
        elif fmt == "jsonl":
            self._rows = self._jsonl()
        elif fmt == "txt":
            self.header = [txt_column]
            self._rows = self._txt()
        else:
            raise SubmissionRejected(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", source=source)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self._rows

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> "Rows":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _lines(self) -> Iterator[str]:
        first = next(self._text, None)
        return iter(()) if first is None else itertools.chain((first.removeprefix("\ufeff"),), self._text)

    def _delimited(self, delimiter: str) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(self._lines(), delimiter=delimiter, strict=True)
        source = self.source
        try:
            header = next(reader)
        except csv.Error as exc:
            raise SubmissionRejected(f"malformed header: {exc}", line=1, source=source) from None
        except StopIteration:
            header = []
        header = [h.strip() for h in header]
        if not any(header):
            raise SubmissionRejected("the first line must be a header naming the columns", line=1, source=source)
        seen: set[str] = set()
        dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
        if dupes:
            raise SubmissionRejected(f"duplicate column names {summarize(dupes)} in the header", line=1,
                                     source=source)
        self.header = header
        return self._delimited_rows(reader, len(header), delimiter)

    def _delimited_rows(self, reader: Any, width: int, delimiter: str) -> Iterator[tuple[int, list[str]]]:
        any_row = False
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != width:
                    sep = "comma" if delimiter == "," else "tab"
                    raise SubmissionRejected(f"expected {width} {sep}-separated fields "
                                             f"({summarize(self.header, quote=False)}), found {len(row)}",
                                             line=reader.line_num, source=self.source)
                any_row = True
                yield reader.line_num, row
        except csv.Error as exc:
            raise SubmissionRejected(f"malformed row: {exc}", line=reader.line_num, source=self.source) from None
        if not any_row:
            raise SubmissionRejected("the file has a header but no rows", source=self.source, code="empty")

    def _jsonl(self) -> Iterator[tuple[int, list[str]]]:
        lines = enumerate((ln.removesuffix("\n").removesuffix("\r") for ln in self._lines()), start=1)
        for lineno, raw in lines:
            if raw.strip():
                obj = self._json_object(raw, lineno)
                self.header = list(obj)
                return self._jsonl_rows(lineno, obj, lines)
        raise SubmissionRejected("no JSON lines found", source=self.source, code="empty")

    def _json_object(self, raw: str, lineno: int) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SubmissionRejected(f"not valid JSON ({exc.msg}, column {exc.colno})", line=lineno,
                                     source=self.source, hint="each line must be one JSON object") from None
        except RecursionError:
            raise SubmissionRejected("the JSON is nested too deeply", line=lineno, source=self.source) from None
        if not isinstance(obj, dict):
            raise SubmissionRejected(f"expected a JSON object, found {type(obj).__name__}", line=lineno,
                                     source=self.source)
        return obj

    def _jsonl_rows(self, first_line: int, first: dict[str, Any],
                    lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
        header = self.header
        keys = set(header)
        yield first_line, [_as_text(first[k]) for k in header]
        for lineno, raw in lines:
            if not raw.strip():
                continue
            obj = self._json_object(raw, lineno)
            if obj.keys() != keys:
                missing = sorted(keys - set(obj))
                extra = sorted(set(obj) - keys)
                raise SubmissionRejected(f"keys differ from the first line (missing [{summarize(missing)}], extra "
                                         f"[{summarize(extra)}])", line=lineno, source=self.source)
            yield lineno, [_as_text(obj[k]) for k in header]

    def _txt(self) -> Iterator[tuple[int, list[str]]]:
        for lineno, line in enumerate(self._lines(), start=1):
            yield lineno, [line.removesuffix("\n").removesuffix("\r")]


def _as_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def open_rows(path: Path, fmt: str, *, source: str | None = None, encoding: str = "utf-8",
              max_bytes: int | None = None, txt_column: str = TXT_COLUMN) -> Rows:
    """Open a table for reading row by row (close it, or use it as a context manager).

    Raises ``SubmissionRejected`` with a line number on malformed input, here or while iterating.
    A text file of empty lines is a table of empty rows (empty hypotheses); other formats must hold
    more than white space.
    """
    source = source or path.name
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise SubmissionRejected(f"file is {size:,} bytes, over the limit of {max_bytes:,} bytes",
                                 source=source, hint="remove unneeded columns or precision", code="oversize")
    if size == 0:
        raise SubmissionRejected("file is empty", source=source, hint="upload a file with predictions",
                                 code="empty")
    if fmt not in FORMATS:
        raise SubmissionRejected(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", source=source)
    _check_bytes(path, source, encoding, need_text=fmt != "txt")
    return Rows(path, fmt, source=source, encoding=encoding, txt_column=txt_column)


def read_table(path: Path, fmt: str, *, source: str | None = None, encoding: str = "utf-8",
               max_bytes: int | None = None, txt_column: str = TXT_COLUMN) -> Table:
    """Read a whole table column-wise. Raises ``SubmissionRejected`` with a line number on malformed input."""
    with open_rows(path, fmt, source=source, encoding=encoding, max_bytes=max_bytes, txt_column=txt_column) as rows:
        cols: list[list[str]] = []
        lines: list[int] = []
        for line, values in rows:
            if not cols:
                cols = [[] for _ in rows.header]
            for c, v in zip(cols, values):
                c.append(v)
            lines.append(line)
        if not cols:
            cols = [[] for _ in rows.header]
        return Table(columns=dict(zip(rows.header, cols)), lines=lines, header=list(rows.header))


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
