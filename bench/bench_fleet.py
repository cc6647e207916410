"""Fleet benchmark: a two-node Ray cluster that shares nothing with the scheduler but a registry and an
input store, against the docker backend on one machine, measured in the same run.

Prints, with verdicts computed from the measurements:
  * per-job wall time of short container jobs: Ray (two nodes, image by digest, inputs from the store)
    over docker (one machine, local image, bind-mounted inputs)          goal: <= 1.2x
  * image pulls per node (the other engine's own event stream)          goal: 1 per image
  * input fetches per node (the node cache's fetch log)                 goal: 1 per tree
  * the scheduler's resident memory growth against input size           goal: flat

Needs root, dockerd, unshare, Ray and Debian's docker-registry (scripts/install.sh unpacks it).
    python bench/bench_fleet.py [--jobs 8] [--sizes 16m,256m,1g]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from referee.platform.core.jobs import JobSpec, JobState, Resources  # noqa: E402
from referee.platform.core.units import parse_size  # noqa: E402

WRITE = "import os; open(os.path.join(os.environ['REFEREE_OUTPUT'], 'p.txt'), 'w').write(str(len(os.listdir(os.environ['REFEREE_INPUT']))))"
READ_ALL = ("import os\nn = 0\nfor r, _, fs in os.walk(os.environ['REFEREE_INPUT']):\n    for x in fs:\n"
            "        with open(os.path.join(r, x), 'rb') as f:\n            while True:\n"
            "                b = f.read(1 << 20)\n                if not b: break\n                n += len(b)\n"
            "open(os.path.join(os.environ['REFEREE_OUTPUT'], 'p.txt'), 'w').write(str(n))\n")


def rss() -> int:
    with open("/proc/self/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS")).split()[1]) * 1024


def jobs_for(work: Path, tag: str, n: int, image: str, inp: Path, code: str) -> list[JobSpec]:
    out = []
    for i in range(n):
        d = work / f"{tag}-{i}" / "output"
        d.mkdir(parents=True)
        out.append(JobSpec(job_id=f"bench-{tag}-{i}", submission_id=i, attempt=1, competition_id="bench",
                           output_dir=str(d), output_file="p.txt", image=image, command=["python3", "-c", code],
                           input_dir=str(inp), resources=Resources(cpu=1, memory=256 * 2**20), timeout_s=600))
    return out


def run_all(backend, jobs: list[JobSpec]) -> float:
    t0 = time.perf_counter()
    handles = [backend.submit(j) for j in jobs]
    while True:
        st = backend.poll(handles)
        if all(s.state.final for s in st.values()):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    bad = [s for s in st.values() if s.state != JobState.SUCCEEDED]
    if bad:
        raise SystemExit(f"bench job failed: {bad[0]}")
    for h, j in zip(handles, jobs):
        backend.collect(h, j)
        backend.cleanup(h)
    return wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--sizes", default="16m,256m,1g")
    args = ap.parse_args()
    from referee.platform.cli.localfleet import LocalRegistry, RayFleet, SecondEngine, started, write_docker_config
    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.images import ensure_base_image
    from referee.platform.runtime.inputcache import fetch_count
    from referee.platform.runtime.registry import Registry, RegistrySettings

    root = Path(tempfile.mkdtemp(prefix="rf-bench-", dir="/tmp"))
    hidden = root / "hidden"  # the scheduler's files: the worker node cannot see them
    work = hidden / "work"
    work.mkdir(parents=True)
    inp = hidden / "input"
    inp.mkdir()
    (inp / "ids.csv").write_text("id\n" + "".join(f"x{i}\n" for i in range(1000)))
    host = docker_client()
    base = ensure_base_image(host)
    image_id = host.api.inspect_image(base)["Id"]
    registry = LocalRegistry(root / "registry", credentials=("bench", "bench-password"))
    engine = SecondEngine(root / "engine")
    cache, store = root / "cache", root / "store"
    ray_fleet = RayFleet(root / "ray", worker_docker_host=engine.host, hide=[hidden],
                         worker_env={"DOCKER_CONFIG": str(root / "docker-config")})
    with started(registry, engine, ray_fleet):
        print("starting: registry, second Docker engine, two-node Ray cluster ...", flush=True)
        registry.start()
        engine.start()
        write_docker_config(root / "docker-config", registry.address, ("bench", "bench-password"))
        ray_fleet.start()
        os.environ["REFEREE_BENCH_PW"] = "bench-password"
        settings = RegistrySettings(url=f"{registry.address}/bench", username="bench", password_env="REFEREE_BENCH_PW")
        ref = Registry(settings).push(host, image_id, "bench", "base")
        os.environ.update(RAY_AUTH_MODE="disabled")
        from referee.platform.backends.docker import DockerBackend
        from referee.platform.backends.ray import RayBackend
        docker = DockerBackend(slots=2)
        ray = RayBackend(address=ray_fleet.address, input_store=str(store), input_cache=str(cache), max_in_flight=2)
        since = time.time() - 1
        # warm-up: the node pulls the image and fetches the tree; docker's engine already has everything
        run_all(ray, jobs_for(work, "warm-ray", 2, ref, inp, WRITE))
        run_all(docker, jobs_for(work, "warm-docker", 2, image_id, inp, WRITE))
        n = args.jobs
        t_docker = run_all(docker, jobs_for(work, "docker", n, image_id, inp, WRITE)) / n
        t_ray = run_all(ray, jobs_for(work, "ray", n, ref, inp, WRITE)) / n
        events = engine.client().events(since=int(since), until=int(time.time()) + 1, decode=True,
                                        filters={"type": "image", "event": "pull"})
        pulls = len(list(events))
        fetches = fetch_count(cache)
        # memory: one job per input size, reading every byte; RSS measured around each
        growth = []
        for size_text in args.sizes.split(","):
            size = parse_size(size_text)
            tree = hidden / f"tree-{size_text}"
            tree.mkdir()
            with open(tree / "data.bin", "wb") as f:
                f.truncate(size)  # sparse here; really streamed to the store, the cache and the job
            before = rss()
            run_all(ray, jobs_for(work, f"mem-{size_text}", 1, ref, tree, READ_ALL))
            growth.append((size, rss() - before))
            shutil.rmtree(tree)
        ray.close()
        docker.close()
    ratio = t_ray / t_docker
    spread = max(g for _, g in growth) - min(g for _, g in growth)
    span = growth[-1][0] - growth[0][0]
    print()
    print(f"{'measure':44} {'value':>14} {'goal':>12}  verdict")
    rows = [
        ("per-job wall, docker one machine (s)", f"{t_docker:.3f}", "", ""),
        ("per-job wall, Ray two nodes (s)", f"{t_ray:.3f}", "", ""),
        ("Ray / docker per-job overhead", f"{ratio:.2f}x", "<= 1.20x", "PASS" if ratio <= 1.2 else "FAIL"),
        ("image pulls on the worker node (1 image)", str(pulls), "1", "PASS" if pulls == 1 else "FAIL"),
        (f"input fetches on the worker ({n + 2} jobs)", str(fetches), "1", "PASS" if fetches == 1 else "FAIL"),
    ]
    for size, g in growth:
        rows.append((f"driver RSS growth, {size / 2**20:.0f} MiB input (MiB)", f"{g / 2**20:.1f}", "", ""))
    rows.append(("RSS spread across sizes (MiB per GiB input)", f"{spread / 2**20 / (span / 2**30):.1f}",
                 "< 50", "PASS" if spread / (span / 2**30) < 50 * 2**20 else "FAIL"))
    for r in rows:
        print(f"{r[0]:44} {r[1]:>14} {r[2]:>12}  {r[3]}")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
