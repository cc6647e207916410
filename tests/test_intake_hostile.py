"""Hostile container intake through the real CLI and the real engines: builds that fetch or steal,
tarballs that fill the disk, images that clash with the sandbox, strings that drive the terminal.

Every payload here is made by the test itself, small on disk, and refused within its limits: no
request reaches the host, no other team's image is named, peak disk and memory stay bounded, and no
escape sequence reaches a terminal.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, ROOT, prepare_example

pytestmark = [pytest.mark.docker, pytest.mark.hostile]
GOOD = EXAMPLES / "deepfake" / "code" / "good"
SECRET = "referee-secret-7f3a9c"

# A tiny runner: the real CLI in a child process that reports its own peak memory when it exits.
RUNNER = ("import atexit, sys\n"
          "def peak():\n"
          "    for line in open('/proc/self/status'):\n"
          "        if line.startswith('VmHWM:'):\n"
          "            sys.stderr.write('PEAK_KIB=' + line.split()[1] + '\\n')\n"
          "atexit.register(peak)\n"
          "from referee.platform.cli.main import main\n"
          "main(sys.argv[1:])\n")


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, peak_disk: int):
        self.proc, self.rc, self.stdout, self.stderr, self.peak_disk = proc, proc.returncode, proc.stdout, \
            proc.stderr, peak_disk
        m = re.search(r"PEAK_KIB=(\d+)", proc.stderr)
        self.peak_rss = int(m.group(1)) * 1024 if m else 0

    def json(self) -> dict:
        return json.loads(self.stdout)


def disk_usage(root: Path) -> int:
    """Bytes really allocated under ``root`` (sparse holes do not count, written zeros do)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def referee(ws: Path, *args: str, env: dict | None = None) -> Run:
    """``referee -w WS ARGS...`` as a child process, sampling the workspace's disk use while it runs.
    A ``submit`` registers its team on the way (these tests are about intake, not about teams)."""
    if args and args[0] == "submit" and "--team" in args:
        args = (*args, "--create-team")
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], disk_usage(ws))
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        proc = subprocess.run([sys.executable, "-c", RUNNER, "-w", str(ws), *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})},
                              timeout=300)
    finally:
        done.set()
        t.join()
    return Run(proc, max(peak[0], disk_usage(ws)))


@pytest.fixture
def comp(tmp_path):
    """The deepfake example on the Docker backend, loaded into a workspace through the CLI."""
    def make(**changes) -> tuple[Path, str]:
        ex = prepare_example("deepfake", tmp_path / f"c{len(list(tmp_path.iterdir()))}")
        doc = yaml.safe_load((ex / "competition.yaml").read_text())
        doc.update(**changes)
        (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
        ws = ex / "ws"
        run = referee(ws, "competition", "load", str(ex / "competition.yaml"), "--json")
        assert run.rc == 0, run.stderr
        return ws, run.json()["id"]
    return make


def dockerfile_dir(root: Path, name: str, dockerfile: str) -> Path:
    d = root / name
    shutil.copytree(GOOD, d)
    (d / "Dockerfile").write_text(dockerfile)
    return d


def images_labelled(client, label: str) -> list:
    return client.images.list(all=True, filters={"label": label})


# -- builds that fetch ------------------------------------------------------------------------------
@pytest.fixture
def secret_server():
    """An HTTP server on 127.0.0.1 that hands out a secret and counts who asked."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            body = SECRET.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def test_a_build_that_fetches_is_refused_before_anything_runs(tmp_path, docker_client, base_image, comp,
                                                              secret_server):
    port, hits = secret_server
    ws, cid = comp(limits={})
    attempts = {
        "add_url": (f"FROM {base_image}\nADD http://127.0.0.1:{port}/secret /secret\nCMD [\"cat\", \"/secret\"]\n",
                    2, "add-remote"),
        "add_variable": (f"FROM {base_image}\nARG U=http://127.0.0.1:{port}/secret\nADD $U /secret\n", 3,
                         "add-variables"),
        "from_registry": (f"FROM 127.0.0.1:{port}/secret:latest\nCMD [\"true\"]\n", 1, "from-allowed"),
        "syntax_frontend": (f"# syntax=127.0.0.1:{port}/frontend\nFROM {base_image}\n", 1, "directives"),
        "heredoc_smuggle": (f"FROM {base_image}\nRUN cat <<EOF\nADD http://127.0.0.1:{port}/secret /s\nEOF\n", 2,
                            "heredoc"),
    }
    for name, (dockerfile, line, rule) in attempts.items():
        run = referee(ws, "submit", cid, str(dockerfile_dir(tmp_path, name, dockerfile)), "--team", name, "--json")
        assert run.rc == 1, (name, run.stdout, run.stderr)
        err = run.json()
        assert err["error"] == "submission_rejected" and err["reason"] == "build_refused", (name, err)
        assert err["line"] == line and f"rule {rule}" in err["message"], (name, err)
        assert "Traceback" not in run.stderr
    assert hits == [], f"the host's server was asked for {hits}"
    # nothing was built: no image carries one of these contexts, on either engine
    status = referee(ws, "status", cid, "--json").json()
    assert sorted(s["team"] for s in status) == sorted(attempts) and {s["status"] for s in status} == {"failed"}
    from referee.platform.runtime.build_engine import ensure_build_engine
    build = ensure_build_engine()
    for s in status:
        detail = referee(ws, "status", cid, "--submission", str(s["id"]), "--json").json()
        assert detail["sha256"] and not images_labelled(docker_client, f"referee.context={detail['sha256']}")
        assert not images_labelled(build, f"referee.context={detail['sha256']}")
    assert SECRET not in json.dumps(status)


def test_the_build_engine_itself_cannot_reach_the_host(tmp_path, docker_client, base_image, secret_server):
    """Past the policy (a build run directly), the build engine's daemon has no network to fetch with."""
    from referee.platform.runtime import build_engine as engines
    from referee.platform.runtime.sandbox import SandboxPolicy
    from referee.submissions.build import allowed_bases, run_build
    from referee.submissions.build_policy import BuildPlan
    from referee.submissions.containers import build_context

    port, hits = secret_server
    ctx_dir = dockerfile_dir(tmp_path, "direct", f"FROM {base_image}\nADD http://127.0.0.1:{port}/s /s\n")
    build_context(ctx_dir, tmp_path / "ctx.tar", 2**30, "direct")
    policy = SandboxPolicy(build_timeout=60)
    bases, _ = allowed_bases(docker_client, policy)
    with engines.build_session() as engine:
        engine.hold_only(bases, docker_client, engines.DEFAULT_TRANSFER)
        held = {i["Id"] for i in engine.client.api.images(all=True)}
        assert held == set(bases.values())  # only the allowed bases: no other team's image to name
        try:
            from referee.platform.core.errors import SubmissionRejected
            with pytest.raises(SubmissionRejected) as err:
                run_build(engine.client, f"unix://{engines.socket_path(engine.root)}", tmp_path / "ctx.tar",
                          "referee-test/direct:1", {}, policy, BuildPlan(), source="direct", shared=False)
            assert "network is unreachable" in str(err.value) or "dial tcp" in str(err.value), str(err.value)
        finally:
            engine.clean(keep=set(bases.values()))
        assert {i["Id"] for i in engine.client.api.images(all=True)} == set(bases.values())
        assert not engine.client.api.containers(all=True)
    assert hits == []


# -- builds that steal ------------------------------------------------------------------------------
def test_another_teams_image_cannot_be_named_and_guessing_costs_quota(tmp_path, docker_client, base_image, comp):
    ws, cid = comp(limits={"per_team_per_day": 3})
    honest = referee(ws, "submit", cid, str(GOOD), "--team", "alpha", "--json")
    assert honest.rc == 0, honest.stderr
    detail = referee(ws, "status", cid, "--submission", str(honest.json()["id"]), "--json").json()
    victim = detail["metadata"]["image"].split(":")[1]
    prefix = victim[:12]
    attempts = {
        "from_prefix": (f"FROM {prefix}\nCMD [\"cat\", \"/app/predict.py\"]\n", 1, "from-allowed"),
        "copy_from_prefix": (f"FROM {base_image}\nCOPY --from={prefix} /app/predict.py /stolen.py\n"
                             "CMD [\"cat\", \"/stolen.py\"]\n", 2, "copy-from"),
        "mount_from_prefix": (f"FROM {base_image}\nRUN --mount=type=bind,from={prefix},target=/v cp /v/app/predict.py "
                              "/stolen.py\n", 2, "run-flags"),
    }
    for name, (dockerfile, line, rule) in attempts.items():
        run = referee(ws, "submit", cid, str(dockerfile_dir(tmp_path, name, dockerfile)), "--team", "bravo", "--json")
        err = run.json()
        assert run.rc == 1 and err["reason"] == "build_refused", (name, err)
        assert err["line"] == line and f"rule {rule}" in err["message"] and prefix in err["message"], (name, err)
    # the three refusals were charged: a fourth guess is over bravo's daily limit of 3
    fourth = referee(ws, "submit", cid, str(dockerfile_dir(tmp_path, "fourth", f"FROM sha256:{victim}\n")),
                     "--team", "bravo", "--json")
    assert fourth.rc == 1 and fourth.json()["error"] == "limit_exceeded", fourth.stdout
    rows = [s for s in referee(ws, "status", cid, "--json").json() if s["team"] == "bravo"]
    assert len(rows) == 3 and {r["failure_reason"] for r in rows} == {"build_failed"}


# -- tarballs that fill the disk ------------------------------------------------------------------
def _header(name: str, size: int, typeflag: bytes = b"0", *, extra: bytes = b"") -> bytes:
    """A raw 512-byte tar header (old GNU layout), so the test can write what tarfile will not."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = f"{size:011o}\0".encode()
    h[136:148] = b"00000000000\0"
    h[156:157] = typeflag
    h[257:265] = b"ustar  \0"
    h[345:345 + len(extra)] = extra
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


def _sparse_member(name: str, realsize: int) -> bytes:
    """A GNU sparse member: 512 stored bytes that unpack to ``realsize`` bytes."""
    h = bytearray(_header(name, 512, b"S"))
    h[386:398] = f"{realsize - 512:011o}\0".encode()  # one chunk: at the very end of the file
    h[398:410] = f"{512:011o}\0".encode()
    h[483:495] = f"{realsize:011o}\0".encode()
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h) + b"x" * 512


def _plain(name: str, data: bytes) -> bytes:
    pad = (-len(data)) % 512
    return _header(name, len(data)) + data + b"\0" * pad


def _manifest(layers: list[str], config: dict | None = None) -> bytes:
    cfg = json.dumps(config or {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["true"]},
                                "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    return (_plain("config.json", cfg) +
            _plain("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["x:1"],
                                                 "Layers": layers}]).encode()))


def sparse_bomb(path: Path) -> Path:
    path.write_bytes(_sparse_member("l1/layer.tar", 4 * 2**30) + _manifest(["l1/layer.tar"]) + b"\0" * 1024)
    return path


def gzip_layer_bomb(path: Path, gib: int = 2) -> Path:
    """A layer that gzip-decompresses to ``gib`` GiB (concatenated gzip members; about 2 MB per GiB)."""
    zeros = gzip.compress(bytes(64 * 2**20), compresslevel=9)
    size = gib * 2**30
    layer = io.BytesIO()
    layer.write(gzip.compress(_header("big.bin", size)))
    for _ in range(size // (64 * 2**20)):
        layer.write(zeros)
    layer.write(gzip.compress(b"\0" * 1024))
    path.write_bytes(_plain("l1/layer.tar", layer.getvalue()) + _manifest(["l1/layer.tar"]) + b"\0" * 1024)
    return path


def entries_bomb(path: Path, entries: int = 1_000_000) -> Path:
    """A gzip tarball of a million empty files, about 1 MB on disk."""
    block = _header("e/empty", 0) * 4096
    member = gzip.compress(block, compresslevel=9)
    with open(path, "wb") as f:
        for _ in range(entries // 4096):
            f.write(member)
        f.write(gzip.compress(_manifest([]) + b"\0" * 1024))
    return path


def layer_entries_bomb(path: Path, entries: int = 1_000_000) -> Path:
    """A layer of a million empty files (gzip members of repeated headers), about 0.5 MB on disk."""
    member = gzip.compress(_header("f", 0) * 4096, compresslevel=9)
    layer = member * (entries // 4096) + gzip.compress(b"\0" * 1024)
    path.write_bytes(_plain("l1/layer.tar", layer) + _manifest(["l1/layer.tar"]) + b"\0" * 1024)
    return path


def escaping_links(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("l1/layer.tar")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tar.addfile(info)
        for name, data in (("manifest.json", json.dumps([{"Config": "c.json", "Layers": ["l1/layer.tar"]}]).encode()),):
            i = tarfile.TarInfo(name)
            i.size = len(data)
            tar.addfile(i, io.BytesIO(data))
    return path


def traversal(path: Path) -> Path:
    path.write_bytes(_plain("../../evil", b"x") + _manifest([]) + b"\0" * 1024)
    return path


LIMITS = {"max_archive_bytes": "16m", "max_image_bytes": "64m", "max_archive_entries": 20000}
BOMBS = {
    "sparse": (sparse_bomb, "sparse file"),
    "gzip_layer": (gzip_layer_bomb, "bytes of layer contents once decompressed"),
    "entries": (entries_bomb, "more than 10,000 entries"),
    "layer_entries": (layer_entries_bomb, "limit of 20000 entries"),
    "link_outside": (escaping_links, "not a file of the archive"),
    "traversal": (traversal, "points outside the archive"),
}


def test_bomb_tarballs_are_refused_within_their_limits(tmp_path, docker_client, comp):
    ws, cid = comp(limits={}, sandbox=LIMITS)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tarball" * 100)
    baseline = referee(ws, "submit", cid, str(garbage), "--team", "t", "--json")  # same code path, no bomb
    assert baseline.rc == 1 and baseline.peak_rss > 0
    for name, (make, words) in BOMBS.items():
        bomb = make(tmp_path / f"{name}.tar")
        assert bomb.stat().st_size < 4 * 2**20, (name, bomb.stat().st_size)  # small on disk
        t = time.monotonic()
        run = referee(ws, "submit", cid, str(bomb), "--team", name, "--json")
        elapsed = time.monotonic() - t
        err = run.json()
        assert run.rc == 1 and err["error"] == "submission_rejected", (name, err)
        assert words in err["message"], (name, err["message"])
        assert elapsed < 60, (name, elapsed)
        # bounded: the workspace never held more than the archive limit, memory stayed near the baseline
        assert run.peak_disk < 16 * 2**20 + 2**20, (name, run.peak_disk)
        assert run.peak_rss < baseline.peak_rss + 64 * 2**20, (name, run.peak_rss, baseline.peak_rss)
    assert not [p for p in (ws / "blobs" / "tmp").iterdir()], "a partial copy was left behind"
    assert referee(ws, "status", cid, "--json").json() == []  # a bad tarball is not a build: not charged


# -- images that clash with the sandbox --------------------------------------------------------------
def test_volumes_over_the_sandbox_mounts_are_refused_at_intake(tmp_path, docker_client, base_image, comp):
    ws, cid = comp(limits={})
    df = dockerfile_dir(tmp_path, "vol_build", f"FROM {base_image}\nCOPY predict.py /app/\nVOLUME /data/input/cache\n"
                                               "CMD [\"python3\", \"/app/predict.py\"]\n")
    run = referee(ws, "submit", cid, str(df), "--team", "a", "--json")
    assert run.rc == 1 and run.json()["reason"] == "build_refused" and "rule volume" in run.json()["message"]

    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    tag = "referee-test/volume-clash:1"
    docker_client.api.import_image_from_data(rootfs.getvalue(), repository=tag.split(":")[0], tag="1",
                                             changes=['CMD ["/hello"]', "VOLUME /data/output"])
    try:
        archive = tmp_path / "clash.tar"
        with open(archive, "wb") as f:
            for chunk in docker_client.images.get(tag).save(named=True):
                f.write(chunk)
        run = referee(ws, "submit", cid, str(archive), "--team", "b", "--json")
        err = run.json()
        assert run.rc == 1 and err["reason"] == "image_invalid", err
        assert "VOLUME /data/output" in err["message"] and "/var/lib/docker" not in err["message"]
    finally:
        docker_client.images.remove(tag, force=True)


# -- strings that drive the terminal ------------------------------------------------------------------
EVIL_SCRIPT = r"""
import os, sys
out = os.environ["REFEREE_OUTPUT"]
for name in ["\x1b[2K\r#1 scored.csv", "\x1b]8;;http:evil.example\x07click\x1b]8;;\x07", "\u202eexe.csv"]:
    open(os.path.join(out, name), "w").write("x")
print("\x1b[2J\x1b[Hsubmission #1 scored\r\x1b[32mscored\x1b[0m \x07")
sys.exit(0)
"""


def test_escape_sequences_never_reach_the_terminal(tmp_path, docker_client, base_image, comp):
    ws, cid = comp(limits={})
    d = dockerfile_dir(tmp_path, "evil\x1b[31mname", f"FROM {base_image}\nCOPY evil.py /app/\n"
                                                       "CMD [\"python3\", \"/app/evil.py\"]\n")
    (d / "evil.py").write_text(EVIL_SCRIPT)
    # New team names are refused with control characters; a workspace from before that rule (whose teams
    # were migrated from submissions) can still hold such names, and they must show safely too.
    from referee.platform.store import Store
    legacy = Store(ws)
    for name in ("evil\x1b[2J\rteam", "\x1b]0;pwned\x07\u202eleader"):
        legacy.add_team(cid, name)
    legacy.close()
    assert referee(ws, "submit", cid, str(d), "--team", "evil\x1b[2J\rteam").rc == 0
    preds = Path(tmp_path).glob("c*/deepfake/submissions/alpha__good.csv")
    csv_file = next(iter(preds))
    assert referee(ws, "submit", cid, str(csv_file), "--team", "\x1b]0;pwned\x07\u202eleader").rc == 0
    assert referee(ws, "run", cid, "--no-progress").rc == 0
    outputs = [referee(ws, "status", cid), referee(ws, "status", cid, "--submission", "1"),
               referee(ws, "status", cid, "--submission", "2"), referee(ws, "leaderboard", cid),
               referee(ws, "leaderboard", cid, "--format", "md"), referee(ws, "leaderboard", cid, "--format", "csv"),
               referee(ws, "leaderboard", cid, "--format", "html"), referee(ws, "leaderboard", cid, "--format", "json"),
               referee(ws, "status", cid, "--json"), referee(ws, "status", cid, "--submission", "1", "--json")]
    for run in outputs:
        assert run.rc == 0, run.stderr
        for text in (run.stdout, run.stderr.split("PEAK_KIB=")[0]):
            assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u202a-\u202e\u2066-\u2069]", text), text[:2000]
    detail = outputs[1].stdout
    assert "no_output" in detail and "\\x1b[2K\\r#1 scored.csv" in detail  # the names, visibly escaped
    assert "\\x1b[2J\\x1b[Hsubmission #1 scored\\r" in detail  # the log tail, visibly escaped
    assert "evil\\x1b[2J\\rteam" in outputs[0].stdout
    # JSON stays exact: the escapes are JSON's, and decoding gives back the very strings
    assert json.loads(outputs[8].stdout)[0]["team"] == "evil\x1b[2J\rteam"
    assert "\x1b[2J" in json.loads(outputs[9].stdout)["log_tail"]


# -- builds that exhaust the host --------------------------------------------------------------------
SPAWN = """
import subprocess, sys
procs = []
for _ in range(1000):
    try:
        procs.append(subprocess.Popen(["sleep", "30"]))
    except OSError:
        break
print(f"STARTED {len(procs)}", flush=True)
sys.exit(1)
"""


@pytest.mark.parametrize("engine", ["dedicated", "shared"])
def test_builds_are_capped_and_failed_builds_leave_no_images(tmp_path, docker_client, base_image, comp, engine):
    ws, cid = comp(limits={}, sandbox={"build_pids": 64, "build_memory": "256m", "build_timeout": "60s",
                                       "build_engine": engine})
    fork = dockerfile_dir(tmp_path, "fork", f"FROM {base_image}\nCOPY spawn.py /\nRUN echo layer > /layer.txt\n"
                                            "RUN head -c 8000000 /dev/zero > /big.bin\nRUN python3 /spawn.py\n")
    (fork / "spawn.py").write_text(SPAWN)
    run = referee(ws, "submit", cid, str(fork), "--team", "fork", "--json")
    err = run.json()
    assert run.rc == 1 and err["reason"] == "build_failed", err
    started = int(re.search(r"STARTED (\d+)", err["message"]).group(1))
    assert 0 < started < 64, started  # the process cap held inside the RUN step
    # the images of the steps that did succeed are gone (named by id in the build's output)
    steps = set(re.findall(r" ---> ([0-9a-f]{12})\b", err["message"])) - {docker_client.images.get(base_image).short_id[7:]}
    assert steps, err["message"]
    for short in steps:
        with pytest.raises(Exception):
            docker_client.images.get(short)
    hog = dockerfile_dir(tmp_path, "hog", f"FROM {base_image}\nRUN python3 -c \"b = bytearray(1 << 30); print(len(b))\"\n")
    run = referee(ws, "submit", cid, str(hog), "--team", "hog", "--json")
    assert run.rc == 1 and run.json()["reason"] == "build_failed", run.stdout
    if engine == "dedicated":
        from referee.platform.runtime.build_engine import ensure_build_engine
        build = ensure_build_engine()
        assert {i.id for i in build.images.list(all=True)} <= {docker_client.images.get(base_image).id}
        assert not build.containers.list(all=True)
