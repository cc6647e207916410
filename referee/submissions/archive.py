"""Reading an image tarball (``docker save``) within limits, before the engine sees a byte of it.

A tarball is a few kilobytes that can claim anything: a sparse member that expands to gigabytes, a
gzip layer that decompresses a thousandfold, a million empty entries, names with ``..`` or links that
point outside the archive. So intake reads it in two passes, in bounded memory, counting as it goes:

1. the outer tarball (decompressed if it is gzip/bzip2/xz/zstd) is copied to a plain, untagged
   tarball: every entry counted, every byte written counted, names and links checked, sparse members
   refused, the manifest's tags dropped (a submission must not re-point anyone's tags);
2. in that copy, every layer the manifest names is decompressed (as the engine would) and its own tar
   entries read: the decompressed size, the real size of every file (sparse files count in full, as
   the engine writes them) and the number of entries are added up against the image limits.

Only then is the copy loaded (``load_image_archive``). Limits come from the sandbox settings:
``max_archive_bytes`` (the tarball, and its copy), ``max_image_bytes`` (the layers' contents) and
``max_archive_entries`` (entries in the tarball and its layers together).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import posixpath
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.text import safe_text
from referee.platform.runtime.sandbox import SandboxPolicy, volume_collisions

_MAX_MANIFEST_BYTES = 1 << 20
_MAX_CONFIG_BYTES = 8 << 20
_MAX_HEADER_READ = 8 << 20  # a tar header (pax records, long names) larger than this is refused
_MAX_OUTER_ENTRIES = 10_000  # docker save writes 3 per layer and 3 more; images have at most ~128 layers
_CHUNK = 1 << 20
_DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, OSError, zlib.error,
                                                        lzma.LZMAError, ValueError)
HINT = "create it with `docker save IMAGE -o image.tar`"


@dataclass
class ArchiveLimits:
    max_bytes: int  # the tarball decompressed, and the copy written
    max_image_bytes: int  # the layers' contents: decompressed layer streams and their files' real sizes
    max_entries: int  # entries in the tarball plus entries in its layers

    @classmethod
    def for_policy(cls, policy: SandboxPolicy) -> "ArchiveLimits":
        return cls(policy.max_archive_bytes, policy.max_image_bytes, policy.max_archive_entries)


@dataclass
class ArchiveReport:
    """What reading the tarball counted (all within the limits)."""

    entries: int = 0
    bytes_written: int = 0
    image_bytes: int = 0
    layers: int = 0
    volumes: list[str] = field(default_factory=list)


class _Counter:
    def __init__(self, limits: ArchiveLimits, source: str):
        self.limits, self.source, self.report = limits, source, ArchiveReport()

    def too_large(self, what: str, limit: int, setting: str) -> SubmissionRejected:
        return SubmissionRejected(f"the image tarball is over the limit of {limit} {what}", source=self.source,
                                  code="too_large", hint=f"the limit is sandbox.{setting}")

    def archive_too_large(self) -> SubmissionRejected:
        return self.too_large("bytes once decompressed", self.limits.max_bytes, "max_archive_bytes")

    def image_too_large(self) -> SubmissionRejected:
        return self.too_large("bytes of layer contents once decompressed", self.limits.max_image_bytes,
                              "max_image_bytes")

    def entry(self) -> None:
        self.report.entries += 1
        if self.report.entries > self.limits.max_entries:
            raise self.too_large("entries (files in the tarball and its layers)", self.limits.max_entries,
                                 "max_archive_entries")

    def image_bytes(self, n: int) -> None:
        self.report.image_bytes += n
        if self.report.image_bytes > self.limits.max_image_bytes:
            raise self.image_too_large()


class _CappedReader:
    """A forward-seekable view of a stream that refuses to go past ``cap`` bytes or to read a single
    oversized header.

    tarfile seeks over member data to find the next header: a seek or a read past the cap raises at
    once, so a decompression bomb costs neither disk nor the time to inflate it.
    """

    def __init__(self, f: Any, cap: int, too_big: Callable[[], Exception], *, header_guard: bool = True):
        self._f, self._cap, self._too_big, self._guard = f, cap, too_big, header_guard
        self._pos = 0

    def read(self, n: int | None = -1) -> bytes:
        if self._guard and (n is None or n < 0 or n > _MAX_HEADER_READ):
            raise tarfile.ReadError(f"a tar header or member of {n} bytes read at once")
        room = self._cap + 1 - self._pos  # one byte past the cap tells "more than the cap" from "exactly"
        want = room if n is None or n < 0 else min(n, room)
        data = self._f.read(max(0, want))
        self._pos += len(data)
        if self._pos > self._cap:
            raise self._too_big()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._pos + offset if whence == os.SEEK_CUR else -1
        if target < self._pos:
            raise tarfile.ReadError("the tarball would have to be read backwards")
        if target > self._cap:
            raise self._too_big()
        while self._pos < target:  # skip forward by reading: decompressors cannot jump
            step = self._f.read(min(_CHUNK, target - self._pos))
            if not step:
                break
            self._pos += len(step)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()


class _Slice(io.RawIOBase):
    """Bytes ``[start, start+size)`` of a file, read-only."""

    def __init__(self, f: Any, start: int, size: int):
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)


def open_decompressed(f: Any, source: str) -> Any:
    """A reader of ``f`` decompressed (gzip, bzip2, xz or zstd by magic number), or ``f`` itself."""
    head = f.peek(6)[:6] if hasattr(f, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(f, "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f, "rb")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            import zstandard
        except ImportError:
            raise SubmissionRejected("zstd-compressed data needs the zstandard package, which is not installed here",
                                     source=source, code="image_invalid",
                                     hint="send the plain `docker save` tarball (or gzip it)") from None
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


def _safe_name(name: str) -> str | None:
    """The normalised member name, or None when it is absolute or climbs out of the archive."""
    if not name or name.startswith("/") or "\\" in name:
        return None
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def _iter_members(tar: tarfile.TarFile) -> Any:
    """Members one at a time, without tarfile's list of every member seen (a million entries would
    otherwise be a million objects kept until the end)."""
    while True:
        member = tar.next()
        tar.members = []  # type: ignore[attr-defined]  # tarfile's list of all members; unused here
        if member is None:
            return
        yield member


# -- pass 1: the outer tarball ---------------------------------------------------------------------
def copy_untagged(src: Path, dest: Path, limits: ArchiveLimits, source: str) -> ArchiveReport:
    """Check the tarball and write a plain, untagged copy of it to ``dest``; then check its layers."""
    counter = _Counter(limits, source)
    try:
        with open(src, "rb") as raw_file:
            raw = open_decompressed(raw_file, source)
            reader = _CappedReader(raw, limits.max_bytes, counter.archive_too_large)
            with tarfile.open(fileobj=cast(Any, reader), mode="r:") as tar, \
                    tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
                manifest = _copy_members(tar, out, counter)
                if manifest is None:
                    raise SubmissionRejected("not a `docker save` archive (no manifest.json)", source=source,
                                             code="image_invalid", hint=HINT)
                manifest[0]["RepoTags"] = None
                data = json.dumps(manifest).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
                counter.report.bytes_written = out.offset
        _check_layers(dest, manifest, counter, source)
    except SubmissionRejected:
        dest.unlink(missing_ok=True)
        raise
    except _DECOMPRESS_ERRORS as exc:
        dest.unlink(missing_ok=True)
        raise SubmissionRejected(f"not a readable tar archive: {safe_text(exc, limit=200)}", source=source,
                                 code="image_invalid") from None
    return counter.report


def _copy_members(tar: tarfile.TarFile, out: tarfile.TarFile, counter: _Counter) -> list[dict[str, Any]] | None:
    source = counter.source
    manifest: list[dict[str, Any]] | None = None
    names: set[str] = set()
    links: dict[str, tuple[str, str]] = {}  # name -> (target as written, target in the archive)
    outer = 0
    for member in _iter_members(tar):
        counter.entry()
        outer += 1
        if outer > _MAX_OUTER_ENTRIES:
            raise SubmissionRejected(f"the tarball holds more than {_MAX_OUTER_ENTRIES:,} entries; `docker save` "
                                     "writes a few per layer", source=source, code="too_large", hint=HINT)
        name = _safe_name(member.name)
        if name is None:
            raise SubmissionRejected(f"the tarball holds the path {safe_text(member.name, limit=120)!s}, which "
                                     "points outside the archive", source=source, code="image_invalid", hint=HINT)
        if member.issparse():
            raise SubmissionRejected(f"{safe_text(name, limit=120)} is a sparse file; `docker save` never writes "
                                     "one", source=source, code="image_invalid", hint=HINT)
        if name == "manifest.json":
            manifest = _read_manifest(tar, member, source)
            continue
        if name == "repositories":
            continue  # the tags, in the old format: dropped like the manifest's
        copy = tarfile.TarInfo(name)
        copy.mode, copy.mtime = member.mode & 0o755, int(member.mtime) if member.mtime > 0 else 0
        if member.isdir():
            copy.type = tarfile.DIRTYPE
            out.addfile(copy)
        elif member.isfile():
            copy.size = member.size
            if out.offset + member.size > counter.limits.max_bytes:
                raise counter.archive_too_large()
            out.addfile(copy, tar.extractfile(member))
        elif member.issym() or member.islnk():
            target = member.linkname
            resolved = _safe_name(posixpath.join(posixpath.dirname(name), target) if member.issym() else target)
            if resolved is None or target.startswith("/"):
                raise _outside_link(name, target, source)
            links[name] = (target, resolved)
            copy.type, copy.linkname = member.type, target
            out.addfile(copy)
        else:
            raise SubmissionRejected(f"{safe_text(name, limit=120)} is a device, pipe or other special file",
                                     source=source, code="image_invalid", hint=HINT)
        names.add(name)
        if out.offset > counter.limits.max_bytes:
            raise counter.archive_too_large()
    for name, (target, resolved) in links.items():  # docker save may link to a layer written later
        if resolved not in names:
            raise _outside_link(name, target, source)
    return manifest


def _outside_link(name: str, target: str, source: str) -> SubmissionRejected:
    return SubmissionRejected(f"{safe_text(name, limit=120)} links to {safe_text(target, limit=120)}, which is not "
                              "a file of the archive", source=source, code="image_invalid", hint=HINT)


def _not_a_manifest(source: str, why: str) -> SubmissionRejected:
    return SubmissionRejected(f"manifest.json is not a docker save manifest ({why})", source=source,
                              code="image_invalid", hint=HINT)


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, source: str) -> list[dict[str, Any]]:
    if not member.isfile():
        raise _not_a_manifest(source, "not a regular file")
    if member.size > _MAX_MANIFEST_BYTES:
        raise _not_a_manifest(source, f"{member.size} bytes, over {_MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise _not_a_manifest(source, f"not JSON: {safe_text(exc, limit=200)}") from None
    if not isinstance(manifest, list):
        raise _not_a_manifest(source, f"expected a list of images, found {type(manifest).__name__}")
    if len(manifest) != 1:
        raise SubmissionRejected(f"the tarball holds {len(manifest)} images; submit exactly one", source=source,
                                 code="image_invalid")
    entry = manifest[0]
    if not (isinstance(entry, dict) and isinstance(entry.get("Config"), str) and isinstance(entry.get("Layers"), list)
            and all(isinstance(layer, str) for layer in entry["Layers"])):
        raise _not_a_manifest(source, "its image entry needs a Config name and a list of Layers")
    return manifest


# -- pass 2: the layers, in the plain copy -----------------------------------------------------------
def _check_layers(copy: Path, manifest: list[dict[str, Any]], counter: _Counter, source: str) -> None:
    entry = manifest[0]
    index: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(copy, "r:") as tar:
        for member in _iter_members(tar):
            index[member.name] = member
        config_member = _resolve(index, entry["Config"], source)
        counter.report.volumes = _config_volumes(tar, config_member, source)
        counter.report.layers = len(entry["Layers"])
        sizes: dict[str, int] = {}
        for layer in entry["Layers"]:
            member = _resolve(index, layer, source)
            if member.name not in sizes:
                before = counter.report.image_bytes
                _scan_layer(copy, member, counter, source)
                sizes[member.name] = counter.report.image_bytes - before
            else:
                counter.image_bytes(sizes[member.name])  # the engine unpacks it again for every use


def _resolve(index: dict[str, tarfile.TarInfo], name: str, source: str) -> tarfile.TarInfo:
    seen = 0
    norm = _safe_name(name)
    while norm is not None and norm in index and seen < 8:
        member = index[norm]
        if member.isfile():
            return member
        if member.issym():
            norm = _safe_name(posixpath.join(posixpath.dirname(norm), member.linkname))
        elif member.islnk():
            norm = _safe_name(member.linkname)
        else:
            break
        seen += 1
    raise SubmissionRejected(f"the manifest names {safe_text(name, limit=120)}, which is not a file of the archive",
                             source=source, code="image_invalid", hint=HINT)


def _config_volumes(tar: tarfile.TarFile, member: tarfile.TarInfo, source: str) -> list[str]:
    if member.size > _MAX_CONFIG_BYTES:
        raise SubmissionRejected(f"the image config is {member.size} bytes, over {_MAX_CONFIG_BYTES}", source=source,
                                 code="image_invalid", hint=HINT)
    try:
        config = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    except (ValueError, RecursionError) as exc:
        raise SubmissionRejected(f"the image config is not JSON: {safe_text(exc, limit=200)}", source=source,
                                 code="image_invalid", hint=HINT) from None
    volumes = ((config.get("config") or {}).get("Volumes") or {}) if isinstance(config, dict) else {}
    return sorted(str(v) for v in volumes) if isinstance(volumes, dict) else []


def _scan_layer(copy: Path, member: tarfile.TarInfo, counter: _Counter, source: str) -> None:
    """Decompress one layer as the engine would and add up its entries and the real size of its files."""
    remaining = counter.limits.max_image_bytes - counter.report.image_bytes
    with open(copy, "rb") as f:
        data = io.BufferedReader(_Slice(f, member.offset_data, member.size), buffer_size=_CHUNK)
        stream = open_decompressed(data, source)
        reader = _CappedReader(stream, remaining, counter.image_too_large)
        try:
            with tarfile.open(fileobj=cast(Any, reader), mode="r:") as layer:
                for item in _iter_members(layer):
                    counter.entry()
                    name = item.name[2:] if item.name.startswith("./") else item.name
                    if name not in ("", ".") and _safe_name(name) is None:
                        raise SubmissionRejected(f"a layer holds the path {safe_text(item.name, limit=120)}, which "
                                                 "climbs out of the image", source=source, code="image_invalid")
                    if item.islnk() and _safe_name(item.linkname.lstrip("/")) is None:
                        raise SubmissionRejected(f"a layer hard-links {safe_text(item.name, limit=120)} to "
                                                 f"{safe_text(item.linkname, limit=120)}, outside the image",
                                                 source=source, code="image_invalid")
                    if item.isfile():
                        counter.image_bytes(item.size)  # the real size, holes of sparse files included
        except SubmissionRejected:
            raise
        except _DECOMPRESS_ERRORS as exc:
            raise SubmissionRejected(f"layer {safe_text(member.name, limit=120)} is not a readable tar archive: "
                                     f"{safe_text(exc, limit=200)}", source=source, code="image_invalid") from None


def refuse_colliding_volumes(volumes: list[str], policy: SandboxPolicy, source: str) -> None:
    """An image whose VOLUME covers a sandbox mount could never run: refuse it at intake."""
    clash = volume_collisions(volumes, policy)
    if clash:
        raise SubmissionRejected(f"the image declares VOLUME {', '.join(safe_text(c, limit=120) for c in clash)}, "
                                 f"where the sandbox mounts its inputs ({policy.input_mount}) and output "
                                 f"({policy.output_mount})", source=source, code="image_invalid",
                                 hint="remove the VOLUME line from the Dockerfile and rebuild")


# -- loading the checked copy ------------------------------------------------------------------------
def load_image_archive(client: Any, path: Path, tmp_dir: Path, policy: SandboxPolicy, *, source: str) -> str:
    """Check ``path`` within the limits, then ``docker load`` its untagged copy; the image id."""
    import docker.errors

    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, clean = tempfile.mkstemp(dir=tmp_dir, suffix=".tar")
    os.close(fd)
    try:
        report = copy_untagged(path, Path(clean), ArchiveLimits.for_policy(policy), source)
        refuse_colliding_volumes(report.volumes, policy, source)
        messages = []
        try:
            with open(clean, "rb") as f:
                for chunk in client.api.load_image(f):
                    if "error" in chunk:
                        raise SubmissionRejected(f"docker could not load the tarball: "
                                                 f"{safe_text(chunk['error'], limit=500)}", source=source,
                                                 code="image_invalid")
                    messages.append(str(chunk.get("stream", "")))
        except docker.errors.APIError as exc:
            raise SubmissionRejected(f"docker could not load the tarball: {safe_text(exc.explanation or exc, limit=500)}",
                                     source=source, code="image_invalid") from None
        found = re.findall(r"Loaded image ID: (sha256:[0-9a-f]{64})", "".join(messages))
        if len(set(found)) != 1:
            raise SubmissionRejected(f"expected one image in the tarball, docker reported: "
                                     f"{safe_text(''.join(messages), limit=500)}", source=source, code="image_invalid")
        return str(found[0])
    finally:
        Path(clean).unlink(missing_ok=True)
