"""Reading image tarballs within limits, without an engine: what docker save writes passes, counted."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from referee.platform.core.errors import SubmissionRejected
from referee.submissions.archive import ArchiveLimits, copy_untagged

pytestmark = pytest.mark.hostile

LIMITS = ArchiveLimits(max_bytes=2**20, max_image_bytes=2**20, max_entries=1000)


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, *, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return buf.getvalue()


def test_a_layer_linked_before_it_is_written_is_accepted_and_counted_per_use(tmp_path):
    """docker save writes a repeated layer once and links to it; the link may come first in the tar."""
    content = layer({"app/model.bin": b"w" * 5000})
    src = tmp_path / "image.tar"
    with tarfile.open(src, "w") as tar:
        _add(tar, "a2/")
        _add(tar, "a2/layer.tar", link="../b1/layer.tar")
        _add(tar, "b1/")
        _add(tar, "b1/layer.tar", content)
        _add(tar, "config.json", json.dumps({"config": {"Volumes": {"/scratch": {}}}}).encode())
        _add(tar, "manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["victim:1"],
                                                "Layers": ["b1/layer.tar", "a2/layer.tar"]}]).encode())
        _add(tar, "repositories", b'{"victim": {"1": "x"}}')
    report = copy_untagged(src, tmp_path / "copy.tar", LIMITS, "image.tar")
    assert report.layers == 2 and report.image_bytes == 2 * 5000 and report.volumes == ["/scratch"]
    with tarfile.open(tmp_path / "copy.tar") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "repositories" not in names and manifest[0]["RepoTags"] is None  # the tags are gone


def test_limits_are_counted_across_layers(tmp_path):
    src = tmp_path / "image.tar"
    with tarfile.open(src, "w") as tar:
        for i in range(3):
            _add(tar, f"l{i}/layer.tar", layer({"big": b"\0" * 400_000}))
        _add(tar, "c.json", b"{}")
        _add(tar, "manifest.json", json.dumps([{"Config": "c.json", "Layers": [f"l{i}/layer.tar"
                                                                               for i in range(3)]}]).encode())
    with pytest.raises(SubmissionRejected) as err:
        copy_untagged(src, tmp_path / "copy.tar", ArchiveLimits(2**22, 2**20, 1000), "image.tar")
    assert err.value.code == "too_large" and "max_image_bytes" in str(err.value)
    assert not (tmp_path / "copy.tar").exists()
