"""Container submission kinds on the real engine: detection, content-addressed intake, rejections."""

from __future__ import annotations

import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, need, prepare_example
from referee.errors import SpecError, SubmissionRejected
from referee.platform.competitions import load_into_store
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
        from referee.platform.spec import file_sha256
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
                    "build_failed", "referee-test/not-here"),
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
    assert blobs(store) == before and not store.submissions(comp.id)
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
