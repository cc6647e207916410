"""Artifact stores: content-addressed files and directory trees in a local directory or an S3 bucket.

A remote backend that shares no file system with the host moves a job's inputs and outputs through
an artifact store. Inputs are uploaded once (a file is stored under its sha256, a tree under the
sha256 of its manifest), so 4,000 jobs over one test set upload it once. Outputs are per job and
live under ``jobs/<job id>/``.

Layout (the same in a directory and under ``s3://bucket/prefix``)::

    blobs/ab/ab12...      file contents, named by sha256
    blobs/cd/cd34...      a tree manifest: {"files": {"rel/path": {"sha256", "size"}}}
    jobs/<job id>/<name>  what a job wrote
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from referee.platform.core.errors import BackendError
from referee.platform.core.hashing import file_sha256

MANIFEST_VERSION = 1
COPY_CHUNK = 1 << 20


class OutputTooLarge(BackendError):
    """An object is larger than the cap it was read under (found before or while it streamed in)."""

    def __init__(self, location: str, limit: int, size: int | None = None):
        self.location, self.limit, self.size = location, limit, size
        seen = f"{size} bytes" if size is not None else "more"
        super().__init__(f"{location} is larger than the cap of {limit} bytes ({seen})")


def _copy_capped(src: Any, dst: Any, limit: int | None, location: str) -> int:
    """Copy a stream in chunks, stopping with ``OutputTooLarge`` as soon as it passes ``limit`` bytes."""
    total = 0
    while True:
        chunk = src.read(COPY_CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        if limit is not None and total > limit:
            raise OutputTooLarge(location, limit)
        dst.write(chunk)


def tree_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a directory tree: every regular file by relative POSIX path, sha256 and size.

    Symlinks are refused: an input tree is the host's data and must not point elsewhere.
    """
    root = Path(root)
    if not root.is_dir():
        raise BackendError(f"input directory {root} does not exist or is not a directory")
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise BackendError(f"{path}: symlinks are not allowed in an input tree (copy the file instead)")
        if path.is_file():
            files[rel] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return {"version": MANIFEST_VERSION, "files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def safe_relative(rel: str) -> PurePosixPath:
    """Refuse absolute paths and '..' in a manifest entry (a manifest may come from elsewhere)."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BackendError(f"unsafe path {rel!r} in an artifact manifest")
    return p


def blob_key(sha: str) -> str:
    return f"blobs/{sha[:2]}/{sha}"


def output_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{safe_relative(name)}"


class ArtifactStore(abc.ABC):
    """Content-addressed blobs and trees plus per-job outputs."""

    @abc.abstractmethod
    def _has(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _size(self, key: str) -> int | None: ...

    @abc.abstractmethod
    def _put_path(self, key: str, src: Path) -> None: ...

    @abc.abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _get_path(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        """Write the object to ``dest`` (atomically); raise BackendError when it is missing, and
        ``OutputTooLarge`` (leaving nothing at ``dest``) when it holds more than ``max_bytes``."""

    @abc.abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _delete_prefix(self, prefix: str) -> None: ...

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """A human-readable address of an object (a path or an s3:// URI)."""

    # -- blobs and trees ---------------------------------------------------------------------------
    def put_file(self, path: Path) -> str:
        """Store one file under its sha256 (skipped when already there); returns the sha256."""
        sha = file_sha256(Path(path))
        if not self._has(blob_key(sha)):
            self._put_path(blob_key(sha), Path(path))
        return sha

    def put_tree(self, root: Path) -> str:
        """Store a directory tree; returns the sha256 of its manifest. Unchanged files are not re-sent."""
        manifest = tree_manifest(Path(root))
        for rel, entry in manifest["files"].items():
            if not self._has(blob_key(entry["sha256"])):
                self._put_path(blob_key(entry["sha256"]), Path(root) / rel)
        data = manifest_bytes(manifest)
        from hashlib import sha256
        sha = sha256(data).hexdigest()
        if not self._has(blob_key(sha)):
            self._put_bytes(blob_key(sha), data)
        return sha

    def manifest(self, tree_sha: str) -> dict[str, Any]:
        try:
            doc = json.loads(self._get_bytes(blob_key(tree_sha)))
        except ValueError as exc:
            raise BackendError(f"artifact {self.location(blob_key(tree_sha))} is not a tree manifest: "
                               f"{exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
            raise BackendError(f"artifact {self.location(blob_key(tree_sha))} is not a tree manifest")
        return doc

    def get_file(self, sha: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._get_path(blob_key(sha), dest)
        got = file_sha256(dest)
        if got != sha:
            dest.unlink(missing_ok=True)
            raise BackendError(f"artifact {self.location(blob_key(sha))} is corrupt (sha256 {got})")
        return dest

    def get_tree(self, tree_sha: str, dest: Path) -> Path:
        """Materialise a stored tree under ``dest``; returns ``dest``."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, entry in self.manifest(tree_sha)["files"].items():
            self.get_file(entry["sha256"], dest / safe_relative(rel))
        return dest

    # -- per-job outputs ---------------------------------------------------------------------------
    def output_key(self, job_id: str, name: str) -> str:
        return output_key(job_id, name)

    def put_output(self, job_id: str, name: str, src: Path) -> str:
        key = output_key(job_id, name)
        self._put_path(key, Path(src))
        return key

    def has_output(self, job_id: str, name: str) -> bool:
        return self._has(output_key(job_id, name))

    def output_size(self, job_id: str, name: str) -> int | None:
        """Size in bytes of a job's output object, None when the job wrote none."""
        return self._size(output_key(job_id, name))

    def get_output(self, job_id: str, name: str, dest: Path, max_bytes: int | None = None) -> Path:
        """Download a job's output to ``dest``; with ``max_bytes``, an output past the cap (by its stated
        size, or by what actually streams in) raises ``OutputTooLarge`` and nothing is written."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._get_path(output_key(job_id, name), dest, max_bytes)
        return dest

    def delete_outputs(self, job_id: str) -> None:
        self._delete_prefix(f"jobs/{job_id}/")


class LocalArtifactStore(ArtifactStore):
    """Artifacts in a directory (a shared file system such as EFS or NFS, or a laptop's disk)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / safe_relative(key)

    def location(self, key: str) -> str:
        return str(self._path(key))

    def _has(self, key: str) -> bool:
        return self._path(key).is_file()

    def _size(self, key: str) -> int | None:
        p = self._path(key)
        return p.stat().st_size if p.is_file() else None

    def _put_path(self, key: str, src: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)

    def _get_path(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        src = self._path(key)
        if not src.is_file():
            raise BackendError(f"artifact {src} does not exist")
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise OutputTooLarge(str(src), max_bytes, size)
                _copy_capped(f, out, max_bytes, str(src))
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _get_bytes(self, key: str) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise BackendError(f"artifact {src} does not exist")
        return src.read_bytes()

    def _delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)


class S3ArtifactStore(ArtifactStore):
    """Artifacts under ``s3://bucket/prefix`` (boto3). Jobs reach them through presigned URLs.

    ``client`` is a boto3 S3 client; without one, a client is made from ``endpoint_url`` and
    ``region`` with the default credential chain.
    """

    def __init__(self, bucket: str, prefix: str = "referee", *, client: Any = None,
                 endpoint_url: str | None = None, region: str | None = None, create_bucket: bool = False):
        if not bucket:
            raise BackendError("S3 artifact store: a bucket name is required (backend option s3_bucket)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            import boto3
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.client = client
        if create_bucket:
            self._ensure_bucket(region)

    def _ensure_bucket(self, region: str | None) -> None:
        from botocore.exceptions import ClientError
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError:
            pass
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.client.create_bucket(**kwargs)

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def _has(self, key: str) -> bool:
        return self._size(key) is not None

    def _size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.key(key))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BackendError(f"S3 error reading {self.location(key)}: {exc}") from None

    def _put_path(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self.key(key))

    def _put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)

    def _get_path(self, key: str, dest: Path, max_bytes: int | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        if max_bytes is None:  # trusted content (inputs, blobs): boto3's parallel download
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
            os.close(fd)
            try:
                self.client.download_file(self.bucket, self.key(key), tmp)
                os.replace(tmp, dest)
            except ClientError as exc:
                raise BackendError(f"cannot download {self.location(key)}: {exc}") from None
            finally:
                Path(tmp).unlink(missing_ok=True)
            return
        # What a job wrote: refuse it by its stated size, and count what streams in (the size an object
        # claims is not trusted to bound what the connection delivers).
        where = self.location(key)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(key))
        except ClientError as exc:
            raise BackendError(f"cannot download {where}: {exc}") from None
        body = obj["Body"]
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                size = obj.get("ContentLength")
                if size is not None and int(size) > max_bytes:
                    raise OutputTooLarge(where, max_bytes, int(size))
                _copy_capped(body, out, max_bytes, where)
            os.replace(tmp, dest)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise BackendError(f"cannot download {where}: {type(exc).__name__}: {exc}") from None
        finally:
            body.close()
            Path(tmp).unlink(missing_ok=True)

    def _get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except ClientError as exc:
            raise BackendError(f"cannot read {self.location(key)}: {exc}") from None

    def _delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    # -- presigned URLs: a job gets exactly its inputs and its output, and no credentials ----------
    # Callers give the expiry: a job's URLs should live about as long as the job may (its timeout plus a
    # margin for queueing), never the 7-day maximum, so a URL that leaks (a log line) soon stops working.
    def presigned_get(self, key: str, expires_s: int) -> str:
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                                        "Key": self.key(key)},
                                                  ExpiresIn=int(expires_s))

    def presigned_put(self, key: str, expires_s: int) -> str:
        return self.client.generate_presigned_url("put_object", Params={"Bucket": self.bucket,
                                                                        "Key": self.key(key)},
                                                  ExpiresIn=int(expires_s))

    def stage_manifest(self, job_id: str, tree_sha: str | None, output_name: str, expires_s: int,
                       env: dict[str, str] | None = None) -> str:
        """Write a job's staging manifest (the input tree's hash, each file's sha256, size and presigned
        URL, the output's upload URL, and environment variables of its own) and return a presigned URL to
        it: the one value a job needs."""
        files: dict[str, dict[str, Any]] = {}
        if tree_sha is not None:
            for rel, entry in self.manifest(tree_sha)["files"].items():
                files[rel] = {"sha256": entry["sha256"], "size": entry["size"],
                              "url": self.presigned_get(blob_key(entry["sha256"]), expires_s)}
        doc = {"tree": tree_sha, "files": files, "output_name": output_name,
               "output_url": self.presigned_put(output_key(job_id, output_name), expires_s), "env": env or {}}
        key = f"jobs/{job_id}/.stage.json"
        self._put_bytes(key, json.dumps(doc).encode())
        return self.presigned_get(key, expires_s)

    def stage_array(self, job_id: str, stage_urls: list[str], expires_s: int) -> str:
        """An array job's staging document: child ``i`` stages from ``stage_urls[i]``; returns its URL."""
        key = f"jobs/{job_id}/.array.json"
        self._put_bytes(key, json.dumps({"stages": stage_urls}).encode())
        return self.presigned_get(key, expires_s)
