"""Receiving an upload: stream a multipart body to disk, stop past the size limit, then ``submit()``.

The body is parsed as it arrives (python-multipart's streaming parser), so an oversized upload is cut
off after ``limit`` bytes instead of being buffered whole. The file keeps its original name (made
safe), so suffix-based kind detection (``.csv``, image ``.tar``) works exactly as in the CLI.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from referee.platform.store import Store
from referee.platform.web.access import WebError
from referee.platform.web.auth import Principal

MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small fields around the file
MAX_FIELD_BYTES = 4096
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # container image tarballs (submissions/containers.py)
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None) -> str:
    """The last path component with odd characters replaced; suffixes are kept."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _SAFE_CHARS.sub("_", base).strip("._") or "upload"
    if len(base) > 120:
        stem, dot, suffix = base.partition(".")
        base = stem[: 120 - len(suffix) - 1] + dot + suffix[-60:]
    return base


def upload_limit(comp: Any, filename: str | None = None, cap: int | None = None) -> int:
    """Bytes allowed for one upload: ``prediction.max_bytes``, or for an image tarball the sandbox's
    ``max_archive_bytes``; never more than ``cap`` (``referee serve --max-upload``)."""
    limit = int(comp.prediction.max_bytes)
    if (filename or "").lower().endswith(ARCHIVE_SUFFIXES):
        try:
            from referee.platform.sandbox import SandboxPolicy
            limit = max(limit, SandboxPolicy.for_competition(comp).max_archive_bytes)
        except ImportError:  # a build without container support
            pass
    return limit if cap is None else min(limit, cap)


@dataclass
class ReceivedUpload:
    """A saved upload in its own temporary directory (remove with ``cleanup``)."""

    directory: Path
    path: Path | None = None
    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _TooLarge(Exception):
    pass


class _StreamingForm:
    """Callbacks for python-multipart: file part to disk, small fields to memory."""

    def __init__(self, upload: ReceivedUpload, file_field: str, limit_for: Callable[[str], int]):
        self.upload, self.file_field, self.limit_for = upload, file_field, limit_for
        self.limit = limit_for("")
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._out: Any = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self._headers, self._name, self._value, self._out = {}, None, bytearray(), None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        if filename is not None and self._name == self.file_field:
            if self.upload.path is not None:
                raise WebError(400, "bad_request", f"send one file in field {self.file_field!r}, not several")
            self.upload.filename = filename.decode("utf-8", "replace") or "upload"
            self.upload.path = self.upload.directory / safe_filename(self.upload.filename)
            self.limit = self.limit_for(self.upload.filename)
            self._out = open(self.upload.path, "wb")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._out is not None:
            self.upload.size += n
            if self.upload.size > self.limit:
                raise _TooLarge()
            self._out.write(data[start:end])
        elif self._name is not None:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise WebError(400, "bad_request", f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._name:
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


async def receive_upload(headers: Any, stream: AsyncIterator[bytes], tmp_root: Path,
                         limit_for: Callable[[str], int], *, file_field: str = "file") -> ReceivedUpload:
    """Stream a multipart/form-data body into ``tmp_root``; 413 once the file passes
    ``limit_for(filename)`` bytes."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, opts = parse_options_header(headers.get("content-type", ""))
    boundary = opts.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise WebError(415, "unsupported_media_type",
                       f"send the submission as multipart/form-data with the file in field {file_field!r}")
    def too_large(limit: int) -> WebError:
        return WebError(413, "too_large", f"the upload is larger than this competition's limit of {limit} bytes",
                        limit=limit)

    most = max(limit_for(""), limit_for("image.tar"))
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > most + MULTIPART_OVERHEAD:
        raise too_large(most)  # refuse before reading the body
    tmp_root.mkdir(parents=True, exist_ok=True)
    upload = ReceivedUpload(directory=Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root)))
    form = _StreamingForm(upload, file_field, limit_for)
    parser = MultipartParser(boundary, form.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except _TooLarge:
        form.close()
        upload.cleanup()
        raise too_large(form.limit) from None
    except BaseException:
        form.close()
        upload.cleanup()
        raise
    form.close()
    if upload.path is None:
        upload.cleanup()
        raise WebError(422, "submission_rejected", f"no file in the upload: put it in form field {file_field!r}")
    return upload


def submit_upload(store: Store, comp: Any, team: str, upload: ReceivedUpload, *, phase: str | None = None) -> int:
    """Hand a saved upload to ``submit()`` (any kind: prediction file, image tarball, ...)."""
    from referee.submissions.submit import submit
    assert upload.path is not None
    return submit(store, comp, team, upload.path, phase=phase or None, filename=safe_filename(upload.filename))


async def accept_upload(request: Any, store: Store, comp: Any, who: Principal, *,
                        check_fields: Callable[[dict[str, str]], None] | None = None, cap: int | None = None) -> int:
    """The whole upload path of the API and the form: who may submit, stream to disk, ``submit()``.

    A team token submits for its team; a host token must name the team in a ``team`` field.
    """
    from starlette.concurrency import run_in_threadpool

    if not who.is_host and not who.member_of(comp.id):
        raise WebError(403, "forbidden", f"this token belongs to competition {who.competition_id!r}, "
                                         f"not {comp.id!r}")
    upload = await receive_upload(request.headers, request.stream(), store.root / "uploads",
                                  lambda name: upload_limit(comp, name, cap))
    try:
        if check_fields is not None:
            check_fields(upload.fields)
        team = who.team if not who.is_host else upload.fields.get("team", "").strip()
        if not team:
            raise WebError(422, "submission_rejected", "a host upload must name the team in form field 'team'")
        return await run_in_threadpool(submit_upload, store, comp, team, upload,
                                       phase=upload.fields.get("phase") or None)
    finally:
        upload.cleanup()
