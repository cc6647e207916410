"""Fleet benchmark: a two-node Ray cluster that shares nothing with the scheduler but a registry and an
input store, against the docker backend on one machine, measured in the same run.

Prints, with verdicts computed from the measurements:
  * per-job wall time of short container jobs: Ray (two nodes, image by digest, inputs from the store)
    over docker (one machine, local image, bind-mounted inputs), two at a time on each (docker's two
    slots, the worker node's two CPUs; median of 3 alternating rounds) and one at a time (latency,
    median over the jobs)                                                  goal: <= 1.2x
  * image pulls per node (the other engine's own event stream)          goal: 1 per image
  * input fetches per node (the node cache's fetch log)                 goal: 1 per tree
  * the scheduler's resident memory growth against input size           goal: flat

Needs root, dockerd, unshare, Ray and Debian's docker-registry (scripts/install.sh unpacks it).
    python bench/bench_fleet.py [--jobs 16] [--sizes 16m,256m,1g]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from referee.platform.core.jobs import JobSpec, JobState, Resources  # noqa: E402
from referee.platform.core.units import parse_size  # noqa: E402

WRITE = ("import os; open(os.path.join(os.environ['REFEREE_OUTPUT'], 'p.txt'), 'w')"
         ".write(str(len(os.listdir(os.environ['REFEREE_INPUT']))))")
READ_ALL = ("import os\nn = 0\nfor r, _, fs in os.walk(os.environ['REFEREE_INPUT']):\n    for x in fs:\n"
            "        with open(os.path.join(r, x), 'rb') as f:\n            while True:\n"
            "                b = f.read(1 << 20)\n                if not b: break\n                n += len(b)\n"
            "open(os.path.join(os.environ['REFEREE_OUTPUT'], 'p.txt'), 'w').write(str(n))\n")


ROUNDS = 3  # batches of jobs per backend; the median per-job time is reported


class PullCounter:
    """Counts an engine's image pulls from its live event stream until ``close``."""

    def __init__(self, client) -> None:
        self.stream = client.events(decode=True, filters={"type": "image", "event": "pull"})
        self.pulls: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.pulls.append(event.get("id", ""))
        except Exception:  # noqa: BLE001 - the stream closed
            pass

    def close(self) -> int:
        time.sleep(0.5)  # events of the last jobs still on their way
        self.stream.close()
        self.thread.join(5)
        return len(self.pulls)


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
    bad = [(h, s) for h, s in st.items() if s.state != JobState.SUCCEEDED]
    if bad:
        raise SystemExit(f"bench job {bad[0][0]} failed: {bad[0][1]}\n{backend.logs(bad[0][0])[-2000:]}")
    for h, j in zip(handles, jobs):
        backend.collect(h, j)
        backend.cleanup(h)
    return wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--sizes", default="16m,256m,1g")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rf-bench-", dir="/tmp"))
    try:
        measured = measure(root, args.jobs, args.sizes.split(","))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report(args.jobs, *measured)


def measure(root: Path, n: int, sizes: list[str]) -> tuple[tuple[float, float], tuple[float, float], int, int,
                                                       list[tuple[int, int]], dict]:
    """Start the fleet's parts under ``root``, then time and count; everything is stopped on the way out."""
    from referee.platform.backends.docker import DockerBackend
    from referee.platform.backends.ray import RayBackend
    from referee.platform.cli.localfleet import LocalRegistry, RayFleet, SecondEngine, started, write_docker_config
    from referee.platform.runtime.engine import docker_client
    from referee.platform.runtime.images import ensure_base_image
    from referee.platform.runtime.inputcache import fetch_count
    from referee.platform.runtime.registry import Registry, RegistrySettings

    hidden = root / "hidden"  # the scheduler's files: the worker node cannot see them
    work = hidden / "work"
    work.mkdir(parents=True)
    inp = hidden / "input"
    inp.mkdir()
    (inp / "ids.csv").write_text("id\n" + "".join(f"x{i}\n" for i in range(1000)))
    host = docker_client()
    image_id = host.api.inspect_image(ensure_base_image(host))["Id"]
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
        print(f"  Ray cluster up: {ray_fleet.timings}", flush=True)
        os.environ["REFEREE_BENCH_PW"] = "bench-password"
        settings = RegistrySettings(url=f"{registry.address}/bench", username="bench", password_env="REFEREE_BENCH_PW")
        ref = Registry(settings).push(host, image_id, "bench", "base")
        os.environ.update(RAY_AUTH_MODE="disabled")
        docker = DockerBackend(slots=2)
        # two jobs at a time on each: docker's two slots, the worker node's two CPUs (each job asks for one)
        ray = RayBackend(address=ray_fleet.address, input_store=str(store), input_cache=str(cache))
        pulls_seen = PullCounter(engine.client())  # live: the engine keeps only its last 256 events
        # warm-up: the node pulls the image and fetches the tree; docker's engine already has everything
        run_all(ray, jobs_for(work, "warm-ray", 2, ref, inp, WRITE))
        run_all(docker, jobs_for(work, "warm-docker", 2, image_id, inp, WRITE))
        # The two alternate, round by round and job by job, and medians are kept: this machine's other
        # load then weighs on both alike.
        rounds: dict[str, list[float]] = {"docker": [], "ray": [], "docker-1": [], "ray-1": []}
        for r in range(ROUNDS):
            rounds["docker"].append(run_all(docker, jobs_for(work, f"docker-{r}", n, image_id, inp, WRITE)) / n)
            rounds["ray"].append(run_all(ray, jobs_for(work, f"ray-{r}", n, ref, inp, WRITE)) / n)
        for i in range(n):  # latency: one job at a time, submit to final status
            rounds["docker-1"].append(run_all(docker, jobs_for(work, f"docker-1-{i}", 1, image_id, inp, WRITE)))
            rounds["ray-1"].append(run_all(ray, jobs_for(work, f"ray-1-{i}", 1, ref, inp, WRITE)))
        t_docker, t_ray, lat_docker, lat_ray = (statistics.median(rounds[k])
                                                for k in ("docker", "ray", "docker-1", "ray-1"))
        pulls = pulls_seen.close()
        fetches = fetch_count(cache)
        # memory: one job per input size, reading every byte; RSS measured around each
        growth = []
        for size_text in sizes:
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
    return (t_docker, t_ray), (lat_docker, lat_ray), pulls, fetches, growth, dict(ray_fleet.timings)


def report(n: int, through: tuple[float, float], latency: tuple[float, float], pulls: int, fetches: int,
           growth: list[tuple[int, int]], timings: dict) -> int:
    """Print the table with verdicts computed from the measurements; non-zero exit when a goal is missed."""
    t_docker, t_ray = through
    ratio = t_ray / t_docker
    lat_ratio = latency[1] / latency[0]
    spread = max(g for _, g in growth) - min(g for _, g in growth)
    span = growth[-1][0] - growth[0][0]
    per_gib = spread / (span / 2**30)
    rows = [
        ("Ray cluster start: head, worker (s)", f"{timings.get('head')}, {timings.get('worker')}", "", ""),
        (f"{n} jobs, 2 at a time: per job, docker one machine (s)", f"{t_docker:.3f}", "", ""),
        (f"{n} jobs, 2 at a time: per job, Ray two nodes (s)", f"{t_ray:.3f}", "", ""),
        ("  Ray / docker", f"{ratio:.2f}x", "<= 1.20x", "PASS" if ratio <= 1.2 else "FAIL"),
        ("one job at a time: latency, docker (s)", f"{latency[0]:.3f}", "", ""),
        ("one job at a time: latency, Ray two nodes (s)", f"{latency[1]:.3f}", "", ""),
        ("  Ray / docker", f"{lat_ratio:.2f}x", "<= 1.20x", "PASS" if lat_ratio <= 1.2 else "FAIL"),
        ("image pulls on the worker node (1 image)", str(pulls), "1", "PASS" if pulls == 1 else "FAIL"),
        (f"input fetches on the worker ({(ROUNDS + 1) * n + 2} jobs)", str(fetches), "1", "PASS" if fetches == 1 else "FAIL"),
    ]
    for size, g in growth:
        rows.append((f"driver RSS growth, {size / 1e6:.0f} MB input (MiB)", f"{g / 2**20:.1f}", "", ""))
    rows.append(("RSS spread across sizes (MiB per GiB input)", f"{per_gib / 2**20:.1f}", "< 50",
                 "PASS" if per_gib < 50 * 2**20 else "FAIL"))
    print()
    print(f"{'measure':50} {'value':>12} {'goal':>10}  verdict")
    for r in rows:
        print(f"{r[0]:50} {r[1]:>12} {r[2]:>10}  {r[3]}")
    return 1 if any(r[3] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
