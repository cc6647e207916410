"""Competition bundles: one portable archive with the spec, its data, pages and starting kit.

``pack(DIR, OUT)`` writes a gzipped tar of every plain file under DIR (``competition.yaml``, the
data it names, ``pages/*.md``, ``starting_kit/``, anything else the host keeps there) plus
``MANIFEST.json`` with the sha256 of each file. The archive is reproducible: sorted members, fixed
times, owners and modes. ``unpack`` checks a bundle before anything is written (no absolute paths,
no ``..``, no links or devices, every file matches the manifest) and extracts it into the
workspace under ``bundles/<sha256 of the archive>/``; loading then snapshots the data as for any
spec. Bundles come from hosts, but a damaged or hostile archive must still not write outside its
directory.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from referee.platform.core.errors import RefereeError, SpecError
from referee.platform.core.hashing import file_sha256
from referee.platform.core.spec import load_competition
from referee.platform.store import Store

MANIFEST = "MANIFEST.json"
SPEC = "competition.yaml"
FORMAT = 1
SUFFIXES = (".tar.gz", ".tgz", ".referee")
IGNORED = {"__pycache__", ".git", ".hg", ".svn", ".ipynb_checkpoints", ".DS_Store", ".pytest_cache"}
MAX_MEMBERS = 200_000


class BundleError(RefereeError):
    """A bundle that cannot be packed or loaded: names the file and the problem."""


@dataclass(frozen=True)
class Packed:
    path: Path
    competition_id: str
    files: int
    bytes: int
    sha256: str


def is_bundle(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _collect(src: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED)
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise BundleError(f"{os.path.join(dirpath, d)}: a link; a bundle holds plain files only")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name in IGNORED or name.endswith(".pyc"):
                continue
            if path.is_symlink():
                if not _inside(path, src) or not path.resolve().is_file():
                    raise BundleError(f"{path}: a link out of {src}; copy the file in instead")
            elif not path.is_file():
                raise BundleError(f"{path}: not a regular file")
            out.append((path.relative_to(src).as_posix(), path))
    return sorted(out)


def pack(src: str | Path, out: str | Path) -> Packed:
    """Bundle directory ``src`` (which holds ``competition.yaml``) into ``out``."""
    src, out = Path(src), Path(out)
    if not (src / SPEC).is_file():
        raise BundleError(f"{src}: no {SPEC} here (pack the directory that holds the competition spec)")
    comp = load_competition(src / SPEC)  # validates the spec and that its data exist
    named = [("", comp.data, comp)] + [(f"phases[{i}].", p.data, comp.for_phase(p.name))
                                       for i, p in enumerate(comp.phases) if p.data is not None]
    for field_name, given, path in [(f"{prefix}data.{what}", getattr(data, what), getattr(view, f"{what}_path"))
                                    for prefix, data, view in named for what in ("reference", "input")]:
        if given is not None and given.is_absolute():
            raise SpecError(str(src / SPEC), [(field_name, f"{given} is an absolute path; give it relative to "
                                                           f"{SPEC} so the bundle can carry it")])
        if path is not None and not _inside(path, src):
            raise SpecError(str(src / SPEC), [(field_name, f"{path} lies outside {src}; move it into the "
                                                           "competition's directory so the bundle can carry it")])
    files = _collect(src)
    manifest = {"format": FORMAT, "competition": comp.id,
                "files": {rel: file_sha256(path) for rel, path in files}}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".bundle-")
    os.close(fd)
    total = 0
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            tar.addfile(_info(MANIFEST, len(data)), io.BytesIO(data))
            for rel, path in files:
                size = path.stat().st_size
                total += size
                with open(path, "rb") as f:
                    tar.addfile(_info(rel, size, executable=os.access(path, os.X_OK)), f)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Packed(out, comp.id, len(files), total, file_sha256(out))


def _info(name: str, size: int, executable: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
    info.mode = 0o755 if executable else 0o644
    return info


def _safe_name(name: str, bundle: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or any(part.startswith("/") for part in p.parts):
        raise BundleError(f"{bundle}: member {name!r} would land outside the bundle's directory; refusing it")
    return p


def unpack(store: Store, bundle: str | Path) -> Path:
    """Check and extract a bundle into the workspace; returns the path of its ``competition.yaml``."""
    bundle = Path(bundle)
    sha = file_sha256(bundle)
    dest = store.root / "bundles" / sha
    if (dest / SPEC).is_file():
        return dest / SPEC  # the same archive was unpacked (and checked) before
    staged = Path(tempfile.mkdtemp(dir=store.temp_dir(), prefix="bundle-"))
    try:
        try:
            tar = tarfile.open(bundle, mode="r:*")
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{bundle}: not a bundle ({exc}); make one with `referee competition pack DIR`") from None
        with tar:
            manifest: dict | None = None
            seen: set[str] = set()
            for n, member in enumerate(tar):
                if n >= MAX_MEMBERS:
                    raise BundleError(f"{bundle}: more than {MAX_MEMBERS} members")
                name = _safe_name(member.name, bundle)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"{bundle}: member {member.name!r} is a link or a device; a bundle holds "
                                      "plain files only")
                if str(name) in seen:
                    raise BundleError(f"{bundle}: member {member.name!r} appears twice")
                seen.add(str(name))
                source = tar.extractfile(member)
                assert source is not None
                if str(name) == MANIFEST:
                    manifest = json.loads(source.read(1 << 24) or b"{}")
                    continue
                target = staged / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as f:
                    shutil.copyfileobj(source, f, 1 << 20)
        if manifest is None or manifest.get("format") != FORMAT:
            raise BundleError(f"{bundle}: no {MANIFEST} of format {FORMAT}; make bundles with "
                              "`referee competition pack DIR`")
        expected: dict[str, str] = manifest.get("files", {})
        if set(expected) != seen - {MANIFEST}:
            missing = sorted(set(expected) - seen)
            extra = sorted(seen - {MANIFEST} - set(expected))
            raise BundleError(f"{bundle}: its files differ from its manifest (missing {missing[:5]}, "
                              f"unlisted {extra[:5]})")
        for rel, digest in expected.items():
            if file_sha256(staged / rel) != digest:
                raise BundleError(f"{bundle}: {rel} does not match its sha256 in {MANIFEST} (damaged archive?)")
        if not (staged / SPEC).is_file():
            raise BundleError(f"{bundle}: no {SPEC} at the top of the bundle")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, dest)
        except OSError:
            if not (dest / SPEC).is_file():
                raise
        return dest / SPEC
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
