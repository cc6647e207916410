"""Receiving an upload: stream a multipart body to disk, stop past the size limit, then ``submit()``.

The body is parsed as it arrives (python-multipart's streaming parser), so an oversized upload is cut
off after ``limit`` bytes instead of being buffered whole, with or without a ``Content-Length``. The
file keeps its original name (made safe), so suffix-based kind detection (``.csv``, image ``.tar``)
works exactly as in the CLI.

Everything around the file is bounded too: at most ``MAX_FIELDS`` small fields of ``MAX_FIELD_BYTES``
each and ``MAX_FIELDS_TOTAL`` together, part headers as python-multipart allows them, and the raw body
at most the file limit plus ``MULTIPART_OVERHEAD``. A garbled body is a 400, not a server error.

The fields that come before the file part (the page form's CSRF value) are checked before a byte of
the file is written, and so is the file's name: a container image tarball is refused at once when
the competition's backend cannot run images.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, cast

from referee.platform.store import Store
from referee.platform.web.access import WebError
from referee.platform.web.auth import Principal

MAX_FIELD_BYTES = 4096  # one non-file form field
MAX_FIELDS = 16  # non-file parts in one upload
MAX_FIELDS_TOTAL = 32 * 1024  # bytes of all non-file fields together
MAX_PART_HEADER_BYTES = 16 * 1024  # the headers of one part (python-multipart caps them too, in newer versions)
MULTIPART_OVERHEAD = 256 * 1024  # headers, boundaries and the small fields around the file
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


def is_archive_name(filename: str | None) -> bool:
    return (filename or "").lower().endswith(ARCHIVE_SUFFIXES)


def runs_images(comp: Any) -> bool:
    """Whether the competition's backend can run a submitted container image."""
    from referee.submissions.containers import backend_runs_images
    return backend_runs_images(comp)


def check_upload_name(comp: Any, filename: str | None) -> None:
    """Refuse an image tarball for a competition whose backend cannot run images (before the body
    is read; the container submission kinds check the same again)."""
    if is_archive_name(filename) and not runs_images(comp):
        raise WebError(422, "submission_rejected",
                       f"competition {comp.id!r} runs on the {comp.backend.name!r} backend, which cannot run "
                       f"container images: upload a {comp.prediction.format} prediction file instead of an image "
                       f"tarball", source=safe_filename(filename))


def upload_limit(comp: Any, filename: str | None = None, cap: int | None = None) -> int:
    """Bytes allowed for one upload: ``prediction.max_bytes``, or for an image tarball (where the
    backend runs images) the sandbox's ``max_archive_bytes``; never more than ``cap``
    (``referee serve --max-upload``)."""
    limit = int(comp.prediction.max_bytes)
    if is_archive_name(filename) and runs_images(comp):
        try:
            from referee.platform.runtime.sandbox import SandboxPolicy
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


def _bad_request(message: str) -> WebError:
    return WebError(400, "bad_request", message)


class _StreamingForm:
    """Callbacks for python-multipart: file part to disk, small fields to memory.

    ``before_file(filename, fields)`` runs once, with the fields seen so far, when the file part's
    headers are complete and before any of its bytes are written (or at the end when no file came).
    """

    def __init__(self, upload: ReceivedUpload, file_field: str, limit_for: Callable[[str], int],
                 before_file: Callable[[str | None, dict[str, str]], None] | None = None):
        self.upload, self.file_field, self.limit_for = upload, file_field, limit_for
        self.before_file = before_file
        self.checked = False
        self.limit = limit_for("")
        self.file_seen = False
        self.ended = False
        self.n_fields = 0
        self.field_bytes = 0
        self._header_bytes = 0
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
                "on_part_end": self.part_end, "on_end": self.end}

    def run_check(self, filename: str | None) -> None:
        if not self.checked:
            self.checked = True
            if self.before_file is not None:
                self.before_file(filename, dict(self.upload.fields))

    def part_begin(self) -> None:
        self._headers, self._name, self._value, self._out = {}, None, bytearray(), None
        self._header_bytes = 0

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise _bad_request(f"malformed multipart body: the headers of one part are longer than "
                               f"{MAX_PART_HEADER_BYTES} bytes")

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
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
            if self.file_seen:
                raise _bad_request(f"send one file in field {self.file_field!r}, not several")
            self.file_seen = True
            name = filename.decode("utf-8", "replace") or "upload"
            self.limit = self.limit_for(name)
            self.run_check(name)  # CSRF, image tarball allowed, declared size: before a byte is written
            self.upload.filename = name
            self.upload.path = self.upload.directory / safe_filename(name)
            self._out = open(self.upload.path, "wb")
            return
        self.n_fields += 1
        if self.n_fields > MAX_FIELDS:
            raise _bad_request(f"too many form fields: at most {MAX_FIELDS} besides the file {self.file_field!r}")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._out is not None:
            self.upload.size += n
            if self.upload.size > self.limit:
                raise _TooLarge()
            self._out.write(data[start:end])
        elif self._name is not None:
            self._value += data[start:end]
            self.field_bytes += n
            if len(self._value) > MAX_FIELD_BYTES:
                raise _bad_request(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")
            if self.field_bytes > MAX_FIELDS_TOTAL:
                raise _bad_request(f"the form fields besides the file are longer than {MAX_FIELDS_TOTAL} "
                                   f"bytes together")

    def part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._name:
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_upload(headers: Any, stream: AsyncIterator[bytes], tmp_root: Path,
                         limit_for: Callable[[str], int], *, file_field: str = "file",
                         before_file: Callable[[str | None, dict[str, str]], None] | None = None) -> ReceivedUpload:
    """Stream a multipart/form-data body into ``tmp_root``; 413 once the file passes
    ``limit_for(filename)`` bytes (or the body that much plus ``MULTIPART_OVERHEAD``), 400 for a
    malformed body or too many or too long fields. ``before_file(filename, fields)`` may refuse the
    upload when the file part begins, before any of the file is read."""
    from python_multipart.exceptions import FormParserError
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
    declared_text = headers.get("content-length")
    declared = int(declared_text) if declared_text and declared_text.isdigit() else None
    # A declared length past every limit is refused as soon as the file part's name is known (a few
    # hundred bytes in, after the CSRF check), so the answer can say why: too large, or an image
    # tarball where none can run. Without a Content-Length the bytes are counted as they arrive.
    excessive = declared is not None and declared > most + MULTIPART_OVERHEAD

    def check_declared(filename: str) -> None:
        if declared is not None and declared > limit_for(filename) + MULTIPART_OVERHEAD:
            raise _TooLarge()

    def before(filename: str | None, fields: dict[str, str]) -> None:
        if before_file is not None:
            before_file(filename, fields)
        if filename is not None:
            check_declared(filename)

    tmp_root.mkdir(parents=True, exist_ok=True)
    upload = ReceivedUpload(directory=Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root)))
    form = _StreamingForm(upload, file_field, limit_for, before)
    try:
        parser = MultipartParser(boundary, cast(Any, form.callbacks()))
    except FormParserError as exc:  # e.g. a boundary longer than RFC 2046 allows
        upload.cleanup()
        raise _bad_request(f"malformed multipart body: {exc}") from None
    received = 0
    try:
        async for chunk in stream:
            parser.write(chunk)  # the file part stops itself at its limit (part_data)
            # the raw body is capped too (preamble, epilogue; no Content-Length needed): at most
            # one chunk past the cap is ever read
            received += len(chunk)
            if form.file_seen:
                cap = form.limit + MULTIPART_OVERHEAD
            else:
                cap = MULTIPART_OVERHEAD if excessive else most + MULTIPART_OVERHEAD
            if received > cap:
                raise _TooLarge()
        parser.finalize()
        if not form.ended:
            raise _bad_request("the multipart body ended early (no closing boundary); send the upload again")
        form.run_check(None)
    except _TooLarge:
        form.close()
        upload.cleanup()
        raise too_large(form.limit if form.file_seen else most) from None
    except FormParserError as exc:
        form.close()
        upload.cleanup()
        raise _bad_request(f"malformed multipart body: {exc}") from None
    except BaseException:
        form.close()
        upload.cleanup()
        raise
    form.close()
    if upload.path is None:
        upload.cleanup()
        raise WebError(422, "submission_rejected", f"no file in the upload: put it in form field {file_field!r}")
    return upload


def submit_upload(store: Store, comp: Any, team: str, upload: ReceivedUpload, *, phase: str | None = None,
                  allow_closed_phase: bool = False, description: str | None = None, baseline: bool = False) -> int:
    """Hand a saved upload to ``submit()`` (any kind: prediction file, image tarball, ...).

    ``allow_closed_phase`` (hosts only) lets a named phase that is not open take the submission;
    a team's named phase must be open (``submit()`` refuses it otherwise).
    """
    from referee.submissions.submit import submit
    assert upload.path is not None
    extra: dict[str, Any] = {"allow_closed_phase": True} if allow_closed_phase and phase else {}
    if description:
        extra["description"] = description
    if baseline:
        extra["baseline"] = True
    return submit(store, comp, team, upload.path, phase=phase or None, filename=safe_filename(upload.filename),
                  **extra)


MAX_DESCRIPTION = 2000


async def accept_upload(request: Any, store: Store, comp: Any, who: Principal, *,
                        check_fields: Callable[[dict[str, str]], None] | None = None, cap: int | None = None) -> int:
    """The whole upload path of the API and the form: who may submit, stream to disk, ``submit()``.

    A team (a team token, or a signed-up member of a team, who has accepted the rules when the
    competition asks for that) submits for its team. An organiser
    (admin or better, or a host token) names an existing team in a ``team`` field, or files a
    baseline entry under the label in a ``baseline`` field. An optional ``description`` says what
    the submission is. ``check_fields`` sees the fields sent before the file part (the form's CSRF
    value) and may refuse the upload before any of the file is read.
    """
    from starlette.concurrency import run_in_threadpool

    from referee.platform.controller.participation import require_team
    from referee.platform.web.access import seat

    place = await run_in_threadpool(seat, store, who, comp.id)
    if not place.is_host and not place.team:
        raise WebError(403, "forbidden", place.elsewhere)
    if not place.is_host and who.is_user:  # a participant accepts the rules before the first submission
        from referee.platform.controller.phases import require_rules_accepted
        assert who.user_id is not None
        await run_in_threadpool(require_rules_accepted, store, comp, who.user_id)

    def before_file(filename: str | None, fields: dict[str, str]) -> None:
        if check_fields is not None:
            check_fields(fields)
        check_upload_name(comp, filename)

    upload = await receive_upload(request.headers, request.stream(), store.root / "uploads",
                                  lambda name: upload_limit(comp, name, cap), before_file=before_file)
    try:
        fields = upload.fields
        named, baseline = fields.get("team", "").strip(), fields.get("baseline", "").strip()
        description = " ".join(fields.get("description", "").split())[:MAX_DESCRIPTION] or None
        as_host = place.is_host and (named or baseline or not place.team)
        if as_host and baseline:
            team = baseline
        elif as_host:
            if not named:
                raise WebError(422, "submission_rejected", "a host upload must name the team in form field 'team' "
                                                           "(or a baseline label in field 'baseline')")
            team = (await run_in_threadpool(require_team, store, comp.id, named)).name
        else:
            assert place.team is not None
            team = place.team
        return await run_in_threadpool(submit_upload, store, comp, team, upload,
                                       phase=fields.get("phase") or None, allow_closed_phase=bool(as_host),
                                       description=description, baseline=bool(as_host and baseline))
    finally:
        upload.cleanup()
