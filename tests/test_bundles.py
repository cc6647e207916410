"""Competition bundles and data snapshots: pack, load, edit the source, reload, re-run; hostile archives."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from referee.platform.controller.bundles import BundleError, pack, unpack
from referee.platform.controller.competitions import load, load_into_store
from referee.platform.controller.reconcile import Controller
from referee.platform.core.errors import SpecError
from referee.platform.store import Store
from referee.submissions.submit import submit

pytestmark = [pytest.mark.accounts, pytest.mark.lifecycle]


def _with_pages(d: Path) -> Path:
    (d / "pages").mkdir(exist_ok=True)
    (d / "pages" / "overview.md").write_text("# Deepfakes\n\nFind them.\n")
    (d / "pages" / "rules.md").write_text("Be nice.\n")
    (d / "starting_kit").mkdir(exist_ok=True)
    (d / "starting_kit" / "baseline.py").write_text("print('hello')\n")
    return d


def test_pack_load_snapshot_reload(example, tmp_path):
    d = _with_pages(example("deepfake"))
    bundle = tmp_path / "deepfake.tar.gz"
    packed = pack(d, bundle)
    assert packed.competition_id == "deepfake" and packed.files > 5
    assert pack(d, tmp_path / "again.tar.gz").sha256 == packed.sha256  # reproducible
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert names[0] == "MANIFEST.json" and "pages/overview.md" in names and "starting_kit/baseline.py" in names
    assert not any("__pycache__" in n for n in names)

    store = Store(tmp_path / "ws")
    result = load(store, bundle)
    comp = result.competition
    assert not result.reloaded and comp.reference_path.is_relative_to(store.root / "data")
    assert comp.input_path is None or comp.input_path.is_relative_to(store.root / "data")
    kinds = {(k, n) for k, n, _, _ in result.files}
    assert {("page", "overview"), ("page", "rules"), ("starting_kit", "deepfake-starting-kit.zip")} <= kinds
    kit = next(r for r in store.competition_files("deepfake") if r.kind == "starting_kit")
    import zipfile
    with zipfile.ZipFile(store.blob_path(kit.sha256)) as zf:
        assert zf.read("starting_kit/baseline.py") == b"print('hello')\n"

    # a loaded competition keeps its snapshot: editing the host's source file changes nothing...
    sid = submit(store, comp, "alpha", d / "submissions" / "alpha__good.csv")
    Controller(store, comp).run()
    before = {(s.metric, s.split): s.value for s in store.scores(sid)}
    source_ref = d / "data" / "reference.csv"
    lines = source_ref.read_text().splitlines()
    flipped = [lines[0]] + [ln.replace(",1,", ",0,") if i % 3 == 0 else ln for i, ln in enumerate(lines[1:])]
    source_ref.write_text("\n".join(flipped) + "\n")
    assert store.get_competition("deepfake").reference_path.read_text() != source_ref.read_text()
    assert load(store, d / "competition.yaml").changed == ["reference"]  # ...until the host reloads
    reloaded = load(store, d / "competition.yaml")
    assert reloaded.changed == [] and reloaded.reloaded  # same data again: nothing changed
    # a reload that changes the data names the submissions scored against the old data
    source_ref.write_text("\n".join(lines) + "\n")
    ws = str(store.root)
    out = subprocess.run([sys.executable, "-m", "referee.platform.cli", "-w", ws, "competition", "load",
                          str(d / "competition.yaml"), "--rerun", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["changed"] == ["reference"] and report["stale"] == [sid] and report["rerun"] == [sid]
    assert store.get_submission(sid).status == "pending"
    Controller(store, store.get_competition("deepfake")).run()
    assert {(s.metric, s.split): s.value for s in store.scores(sid)} == pytest.approx(before)
    store.close()


def test_pack_refuses_what_a_bundle_cannot_carry(example, tmp_path):
    d = example("deepfake")
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the bundle")
    (d / "link.txt").symlink_to(outside)
    with pytest.raises(BundleError, match="link out of"):
        pack(d, tmp_path / "b.tar.gz")
    (d / "link.txt").unlink()
    text = (d / "competition.yaml").read_text()
    (d / "competition.yaml").write_text(text.replace("reference: data/reference.csv",
                                                     f"reference: {d / 'data' / 'reference.csv'}"))
    with pytest.raises(SpecError, match="absolute path"):
        pack(d, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def test_hostile_bundles_write_nothing_outside(tmp_path):
    store = Store(tmp_path / "ws")
    manifest = json.dumps({"format": 1, "files": {"competition.yaml": "0" * 64}}).encode()
    link = tarfile.TarInfo("data")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    hard = tarfile.TarInfo("h")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    cases = {
        "traversal": [_file("MANIFEST.json", manifest), _file("../../escaped.txt")],
        "absolute": [_file("MANIFEST.json", manifest), _file("/tmp/escaped-abs.txt")],
        "symlink": [_file("MANIFEST.json", manifest), (link, None), _file("data/passwd")],
        "hardlink": [_file("MANIFEST.json", manifest), (hard, None)],
        "no manifest": [_file("competition.yaml", b"id: x\n")],
        "bad hash": [_file("MANIFEST.json", manifest), _file("competition.yaml", b"id: x\n")],
    }
    for name, members in cases.items():
        bundle = _tar(tmp_path / f"{name.replace(' ', '-')}.tar.gz", members)
        with pytest.raises(BundleError):
            unpack(store, bundle)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped-abs.txt").exists()
    assert not (store.root / "bundles").exists() or not any((store.root / "bundles").iterdir())
    assert not any((store.root / "blobs" / "tmp").iterdir())
    not_tar = tmp_path / "junk.tar.gz"
    not_tar.write_bytes(os.urandom(64))
    with pytest.raises(BundleError, match="not a bundle"):
        load_into_store(store, not_tar)
    store.close()


def test_snapshot_keeps_a_reference_inside_the_inputs_visible(example, tmp_path):
    """A spec whose inputs hold the reference (a path inside, or a hard link) stays refusable after the
    snapshot: the stored reference is the copy inside the input snapshot."""
    d = example("deepfake")
    os.link(d / "data" / "reference.csv", d / "data" / "input" / "answers.csv")
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, d / "competition.yaml")
    assert comp.reference_path == comp.input_path / "answers.csv"
    from referee.submissions.containers import check_reference_hidden
    with pytest.raises(SpecError, match="hidden reference"):
        check_reference_hidden(comp)
    store.close()
