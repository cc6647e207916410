"""Container submission kinds on the real engine: detection, content-addressed intake, rejections."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, prepare_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.core.errors import SpecError, SubmissionRejected
from referee.platform.store import Store
from referee.submissions.submit import detect_kind, submit

pytestmark = pytest.mark.docker
GOOD = EXAMPLES / "deepfake" / "code" / "good"




@pytest.fixture
def comp_store(tmp_path):
    def make(**changes):
        ex = prepare_example("deepfake", tmp_path / f"c{len(list(tmp_path.iterdir()))}")
        doc = yaml.safe_load((ex / "competition.yaml").read_text())
        doc.update(limits={}, **changes)
        (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
        store = Store(ex / "ws")
        return store, load_into_store(store, ex / "competition.yaml")
    return make


def blobs(store: Store) -> set[str]:
    return {p.name for p in (store.root / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp"}


def dockerfile_dir(root: Path, name: str, dockerfile: str) -> Path:
    d = root / name
    shutil.copytree(GOOD, d)
    (d / "Dockerfile").write_text(dockerfile)
    return d


def test_detection(tmp_path, docker_client, base_image):
    (tmp_path / "image.tar").write_bytes(b"")
    (tmp_path / "preds.csv").write_text("id,label\n")
    assert detect_kind(GOOD) == "dockerfile"
    assert detect_kind(tmp_path / "image.tar") == "docker-archive"
    assert detect_kind("docker-image:whatever:1") == "docker-image"
    assert detect_kind(base_image) == "docker-image"  # an existing local image, by name
    assert detect_kind(str(tmp_path / "preds.csv")) == "predictions"
    assert detect_kind("referee-test/no-such-image:1") == "predictions"  # then rejected as a missing file


def test_dockerfile_dir_is_content_addressed(tmp_path, docker_client, base_image, comp_store):
    store, comp = comp_store()
    first = store.get_submission(submit(store, comp, "alpha", GOOD))
    copy = tmp_path / "copy"
    shutil.copytree(GOOD, copy)
    (copy / "predict.py").touch()  # times and owners are not content
    t = time.monotonic()
    second = store.get_submission(submit(store, comp, "bravo", copy))
    assert time.monotonic() - t < 5  # the same context is not built twice
    assert first.sha256 == second.sha256 and first.metadata["image"] == second.metadata["image"]
    assert store.blob_path(first.sha256).is_file()  # the build context, to rebuild elsewhere
    with tarfile.open(store.blob_path(first.sha256)) as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "predict.py"]
    tag = first.metadata["tag"]
    assert tag == f"referee-sub/{first.sha256[:12]}:latest"
    assert docker_client.images.get(tag).id == first.metadata["image"]
    (copy / "predict.py").write_text((copy / "predict.py").read_text() + "\n# changed\n")
    assert store.get_submission(submit(store, comp, "charlie", copy)).sha256 != first.sha256


def test_image_tarball_is_loaded_without_its_tags(tmp_path, docker_client, base_image, comp_store):
    store, comp = comp_store()
    good_image = store.get_submission(submit(store, comp, "alpha", GOOD)).metadata["image"]
    base_id = docker_client.images.get(base_image).id
    victim = "referee-test/victim:1"
    docker_client.images.get(good_image).tag(victim)
    archive = tmp_path / "good.tar"
    try:
        with open(archive, "wb") as f:
            for chunk in docker_client.images.get(victim).save(named=True):
                f.write(chunk)
        docker_client.images.get(base_image).tag(victim)  # the tag the tarball names now points elsewhere
        sub = store.get_submission(submit(store, comp, "bravo", archive))
        assert sub.kind == "docker-archive" and sub.metadata["image"] == good_image
        from referee.platform.core.hashing import file_sha256
        assert sub.sha256 == file_sha256(archive) and store.blob_path(sub.sha256).is_file()
        assert docker_client.images.get(victim).id == base_id  # a submission cannot re-point a tag
    finally:
        docker_client.images.remove(victim)


def test_local_image_needs_a_command(docker_client, base_image, comp_store):
    store, comp = comp_store()
    with pytest.raises(SubmissionRejected) as err:
        submit(store, comp, "alpha", f"docker-image:{base_image}")
    assert err.value.code == "no_command" and "CMD" in str(err.value)
    store2, comp2 = comp_store(sandbox={"command": ["python3", "-c", "print(1)"]})
    sub = store2.get_submission(submit(store2, comp2, "alpha", f"docker-image:{base_image}"))
    assert sub.kind == "docker-image" and sub.sha256 == docker_client.images.get(base_image).id.split(":")[1]
    with pytest.raises(SubmissionRejected) as err:
        submit(store2, comp2, "alpha", "docker-image:referee-test/never-built:1")
    assert "no local image" in str(err.value)


def test_bad_images_are_rejected_and_nothing_is_stored(tmp_path, docker_client, base_image, comp_store):
    store, comp = comp_store(sandbox={"build_timeout": "4s"})
    before = blobs(store)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tarball" * 100)
    cases = {
        "garbage": (garbage, "image_invalid", "not a readable tar"),
        "run_fails": (dockerfile_dir(tmp_path, "run_fails", f"FROM {base_image}\nRUN false\nCMD [\"true\"]\n"),
                      "build_failed", "RUN false"),
        "needs_network": (dockerfile_dir(tmp_path, "needs_network", (
            f"FROM {base_image}\n"
            "RUN python3 -c \"import socket; socket.create_connection(('deb.debian.org', 80), 3)\"\n"
            "CMD [\"true\"]\n")), "build_failed", "create_connection"),
        "no_base": (dockerfile_dir(tmp_path, "no_base", "FROM referee-test/not-here:1\nCMD [\"true\"]\n"),
                    "build_refused", "referee-test/not-here"),
        "no_cmd": (dockerfile_dir(tmp_path, "no_cmd", f"FROM {base_image}\nCOPY predict.py /app/\n"),
                   "no_command", "no CMD"),
        "slow_build": (dockerfile_dir(tmp_path, "slow_build", f"FROM {base_image}\nRUN sleep 60\nCMD [\"true\"]\n"),
                       "build_failed", "longer than 4s"),
    }
    for name, (source, code, words) in cases.items():
        t = time.monotonic()
        with pytest.raises(SubmissionRejected) as err:
            submit(store, comp, name, source)
            pytest.fail(f"{name} was accepted")
        assert err.value.code == code and words in str(err.value), (name, str(err.value))
        assert time.monotonic() - t < 30, name
    assert blobs(store) == before
    # A refused or failed build counts like a submission (the engine did the work); a bad tarball does not.
    failed = store.submissions(comp.id)
    assert sorted(s.team for s in failed) == sorted(set(cases) - {"garbage"})
    assert all(s.status == "failed" and s.failure_reason == "build_failed" and s.counts_toward_quota == 1
               for s in failed)
    time.sleep(1)
    building = [c for c in docker_client.containers.list() if "sleep 60" in " ".join(c.attrs["Config"]["Cmd"] or [])]
    assert not building, "the timed-out build is still running"


def test_inputs_holding_the_reference_are_refused(tmp_path, docker_client, base_image):
    ex = prepare_example("deepfake", tmp_path)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    doc["data"]["input"] = "data"  # the reference lives in data/
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, ex / "competition.yaml")
    with pytest.raises(SpecError) as err:
        submit(store, comp, "alpha", GOOD)
    assert "data.input" in str(err.value) and "hidden reference" in str(err.value)


# -- review fixes ----------------------------------------------------------------------------------
def tiny_image(docker_client, tag: str, changes: list[str] | None = None) -> str:
    """A one-file image made with `docker import` (no base layers: saves and loads in a blink)."""
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        info = tarfile.TarInfo(f"hello-{tag.replace('/', '-').replace(':', '-')}.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    repo, _, name = tag.rpartition(":")
    docker_client.api.import_image_from_data(rootfs.getvalue(), repository=repo, tag=name, changes=changes or [])
    return docker_client.images.get(tag).id


def save(docker_client, image: str, dest: Path) -> Path:
    with open(dest, "wb") as f:
        for chunk in docker_client.images.get(image).save(named=True):
            f.write(chunk)
    return dest


def tar_with(dest: Path, files: dict[str, bytes], *, gz: bool = False) -> Path:
    with (gzip.open(dest, "wb", compresslevel=1) if gz else open(dest, "wb")) as raw, \
            tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def image_exists(docker_client, ref: str) -> bool:
    import docker.errors
    try:
        docker_client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def test_rejected_tarball_never_deletes_the_hosts_image(tmp_path, docker_client, comp_store):
    """`docker load` of an image the engine already has answers with its id: a rejection must not remove it."""
    store, comp = comp_store()
    host_tag = "referee-test/host-image-no-cmd:1"
    host_id = tiny_image(docker_client, host_tag)  # no CMD: intake rejects it
    try:
        archive = save(docker_client, host_tag, tmp_path / "host.tar")
        with pytest.raises(SubmissionRejected) as err:
            submit(store, comp, "alpha", archive)
        assert err.value.code == "no_command"
        assert image_exists(docker_client, host_tag) and docker_client.images.get(host_tag).id == host_id
        # An image that only the rejected tarball brought is removed again.
        docker_client.images.remove(host_tag)
        assert not image_exists(docker_client, host_id)
        with pytest.raises(SubmissionRejected):
            submit(store, comp, "alpha", archive)
        assert not image_exists(docker_client, host_id)
        assert not store.submissions(comp.id)
    finally:
        if image_exists(docker_client, host_tag):
            docker_client.images.remove(host_tag)


def test_compressed_tarball_is_capped_once_decompressed(tmp_path, docker_client, comp_store):
    store, comp = comp_store(sandbox={"max_archive_bytes": "8m"})
    manifest = json.dumps([{"Config": "c.json", "RepoTags": None, "Layers": ["layer.tar"]}]).encode()
    bomb = tar_with(tmp_path / "bomb.tar.gz", {"manifest.json": manifest, "layer.tar": bytes(64 * 2**20)}, gz=True)
    assert bomb.stat().st_size < 1_000_000  # well under the limit as submitted
    t = time.monotonic()
    with pytest.raises(SubmissionRejected) as err:
        submit(store, comp, "alpha", bomb)
    assert err.value.code == "too_large" and "8000000" in str(err.value) and "decompressed" in str(err.value)
    assert time.monotonic() - t < 10
    assert not [p for p in (store.root / "blobs" / "tmp").iterdir()], "the partial copy was left behind"
    assert not store.submissions(comp.id)

    tag = "referee-test/tiny-with-cmd:1"  # a real compressed tarball under the cap still goes through
    image_id = tiny_image(docker_client, tag, changes=['CMD ["/hello"]'])
    try:
        plain = save(docker_client, tag, tmp_path / "tiny.tar")
        packed = tmp_path / "tiny.tar.gz"
        packed.write_bytes(gzip.compress(plain.read_bytes()))
        sub = store.get_submission(submit(store, comp, "bravo", packed))
        assert sub.kind == "docker-archive" and sub.metadata["image"] == image_id
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.mark.parametrize("content", [b"[1]", b"{}", b"not json", b"[{\"Config\": 1}]", b'[{"Layers": "x"}]',
                                     b"\xff\xfe"])
def test_tarball_with_a_malformed_manifest_is_rejected(tmp_path, docker_client, comp_store, content):
    store, comp = comp_store()
    archive = tar_with(tmp_path / "odd.tar", {"manifest.json": content, "layer.tar": b"x" * 10})
    with pytest.raises(SubmissionRejected) as err:
        submit(store, comp, "alpha", archive)
    assert err.value.code == "image_invalid"
    assert "manifest.json is not a docker save manifest" in str(err.value), str(err.value)
    assert not store.submissions(comp.id)


def test_container_kinds_are_refused_on_the_local_backend(tmp_path, docker_client, base_image, comp_store):
    store, comp = comp_store(backend={"name": "local"})
    archive = tar_with(tmp_path / "image.tar", {"manifest.json": b"[]"})
    before = {i.id for i in docker_client.images.list(all=True)}
    for source in (GOOD, archive, f"docker-image:{base_image}"):
        with pytest.raises(SubmissionRejected) as err:
            submit(store, comp, "alpha", source)
        text = str(err.value)
        assert "local backend" in text and "cannot run container images" in text, text
    assert not store.submissions(comp.id) and {i.id for i in docker_client.images.list(all=True)} == before

