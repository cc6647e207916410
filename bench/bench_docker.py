"""Throughput of sandboxed container jobs: referee (Controller + DockerBackend) against a plain Docker
SDK loop with identical sandbox flags, the same image and the same parallelism, in the same run.

Both sides run N short jobs (the deepfake example's good numpy model) P at a time:

* plain: P threads, each ``client.containers.run(**cfg, remove=True)`` per job and a check that the
  prediction file was written. ``cfg`` comes from referee's own ``container_config`` (the sandbox as
  Docker settings), so the flags are identical by construction: no network, non-root, read-only root,
  capped tmpfs, no capabilities, pids/memory/CPU limits, the same two mounts, labels and log config.
* referee: N submissions of the same image through ``Controller.run()`` with the docker backend at
  P slots and its default settings: claiming, job rows, the output tmpfs, supervision, log capture,
  copy-out, then validating and scoring every prediction file (the plain loop scores nothing).

Both sides are warmed up first (image in the page cache, clients connected, imports and caches
loaded). Rounds alternate the order (plain then referee, referee then plain, ...) so drifting load
from other processes hits both alike. Prints each round's milliseconds per job and ratio
referee/plain, the ratio of the totals, and the verdict against the goal (referee at most 1.10x the
plain loop), judged on the median round so that one round hit by a burst of outside load does not
decide it. Uses only the ``none`` network, which every engine has, so it also runs on an engine
started with ``--bridge=none``.

    python bench/bench_docker.py --jobs 16 --parallel 2 --rounds 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "deepfake"
CPU, MEMORY, TIMEOUT = 1, "512m", "120s"
GOAL = 1.10


def prepare(work: Path, parallel: int) -> tuple[Path, Path]:
    """The deepfake example on the docker backend with ``parallel`` slots; returns (competition.yaml,
    the good model's Dockerfile directory)."""
    ex = work / "deepfake"
    shutil.copytree(EXAMPLE, ex, ignore=shutil.ignore_patterns("data", "submissions", "__pycache__"))
    subprocess.run([sys.executable, str(ex / "generate.py"), str(ex)], check=True)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    # slots bound the containers running at once (the parallelism); the controller keeps a second
    # batch queued in the backend so a slot refills the moment a container ends.
    doc.update(limits={}, backend={"name": "docker", "max_in_flight": 2 * parallel, "options": {"slots": parallel}},
               resources={"cpu": CPU, "memory": MEMORY, "timeout": TIMEOUT})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    return ex / "competition.yaml", ex / "code" / "good"


class PlainLoop:
    """The baseline: the Docker SDK, one ``containers.run`` per job, ``parallel`` threads."""

    def __init__(self, image: str, comp: Any, parallel: int):
        import docker

        from referee.platform.runtime.engine import engine_cpus, image_volumes
        from referee.platform.runtime.sandbox import SandboxPolicy

        self.image, self.comp, self.parallel = image, comp, parallel
        self.client = docker.from_env(timeout=300)  # the SDK as anyone would use it
        self.policy = SandboxPolicy.for_competition(comp)
        self.volumes = image_volumes(self.client, image)
        self.cpus = engine_cpus(self.client)
        # referee mounts a capped tmpfs as the output dir when it can (root); the fsize ulimit is only
        # set without one. Use whichever referee uses here, so the container flags are the same.
        want = self.policy.output_tmpfs
        self.output_on_disk = not (want is True or (want == "auto" and os.geteuid() == 0))

    def run(self, jobs: int, work: Path) -> float:
        from referee.platform.core.jobs import JobSpec, Resources
        from referee.platform.core.units import parse_duration, parse_size
        from referee.platform.runtime.sandbox import container_config

        uid, gid = self.policy.uid_gid()
        specs = []
        for i in range(jobs):
            out = work / f"s{i}" / "output"
            out.mkdir(parents=True)
            specs.append(JobSpec(
                job_id=f"{self.comp.id}-plain-s{i}-a1", submission_id=i, attempt=1, competition_id=self.comp.id,
                output_dir=str(out), output_file="predictions.csv", image=self.image,
                input_dir=str(self.comp.input_path), resources=Resources(cpu=CPU, memory=parse_size(MEMORY)),
                timeout_s=parse_duration(TIMEOUT), sandbox=dict(self.comp.section_data("sandbox") or {}),
                labels={"referee.competition": self.comp.id, "referee.submission": str(i)}))

        def one(job: JobSpec) -> None:
            out = Path(job.output_dir)
            if os.geteuid() == 0:
                os.chown(out, uid, gid)
            else:
                os.chmod(out, 0o777)
            cfg = container_config(job, self.policy, output_source=out, image_volumes=self.volumes,
                                   deadline=time.time() + job.timeout_s, output_on_disk=self.output_on_disk,
                                   engine_cpus=self.cpus)
            self.client.containers.run(**cfg, remove=True)  # raises ContainerError on a non-zero exit
            if not (out / job.output_file).is_file():
                raise RuntimeError(f"{job.job_id}: {job.output_file} was not written")

        start = time.perf_counter()
        with ThreadPoolExecutor(self.parallel) as pool:
            list(pool.map(one, specs))
        return time.perf_counter() - start


def run_referee(image: str, spec: Path, jobs: int, work: Path) -> tuple[float, float]:
    """Seconds for referee's controller to run and score ``jobs`` submissions (and its CPU seconds)."""
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    store = Store(work)
    try:
        comp = load_into_store(store, spec)
        for i in range(jobs):
            submit(store, comp, f"team{i % 8}", f"docker-image:{image}")
        start, cpu = time.perf_counter(), time.process_time()
        summary = Controller(store, comp).run()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if summary.scored != jobs:
            raise RuntimeError(f"referee scored {summary.scored} of {jobs}: {summary.to_dict()}")
        return elapsed, cpu
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--jobs", type=int, default=16, help="N: container jobs per side and round")
    ap.add_argument("--parallel", type=int, default=2, help="P: containers at once (referee's slots)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=4, help="untimed jobs per side before the rounds")
    args = ap.parse_args()

    from referee.platform.controller.competitions import load_into_store
    from referee.platform.core.errors import BackendError
    from referee.platform.runtime.engine import require_engine
    from referee.platform.runtime.images import ensure_base_image
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    try:
        client = require_engine()
    except BackendError as exc:
        print(f"skipped: {exc}")
        return 0
    ensure_base_image(client, log=lambda m: print(f"  base image: {m}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="referee-bench-") as tmp:
        work = Path(tmp)
        spec, code = prepare(work, args.parallel)
        setup = Store(work / "setup")
        comp = load_into_store(setup, spec)
        image = setup.get_submission(submit(setup, comp, "setup", code)).metadata["image"]
        setup.close()
        print(f"{args.jobs} jobs per side and round, {args.parallel} at a time, {args.rounds} rounds, "
              f"image {image[:19]}, docker {client.version()['Version']}")

        plain = PlainLoop(image, comp, args.parallel)
        plain.run(args.warmup, work / "warm-plain")
        run_referee(image, spec, args.warmup, work / "warm-referee")

        rows = []
        for r in range(args.rounds):
            if r % 2 == 0:
                p = plain.run(args.jobs, work / f"plain{r}")
                q, cpu = run_referee(image, spec, args.jobs, work / f"referee{r}")
            else:
                q, cpu = run_referee(image, spec, args.jobs, work / f"referee{r}")
                p = plain.run(args.jobs, work / f"plain{r}")
            rows.append((p, q))
            print(f"round {r + 1}: plain SDK loop {1000 * p / args.jobs:6.0f} ms/job   "
                  f"referee {1000 * q / args.jobs:6.0f} ms/job (its process CPU {1000 * cpu / args.jobs:4.0f} ms/job)"
                  f"   ratio {q / p:.3f}", flush=True)
        plain_total = sum(p for p, _ in rows)
        referee_total = sum(q for _, q in rows)
        ratio = referee_total / plain_total
        median = statistics.median(q / p for p, q in rows)
        n = args.jobs * args.rounds
        verdict = "met" if median <= GOAL else "NOT met"
        print(f"total:   plain {1000 * plain_total / n:.0f} ms/job   referee {1000 * referee_total / n:.0f} ms/job   "
              f"ratio of totals {ratio:.3f}")
        print(f"verdict: median round ratio referee/plain = {median:.3f}; goal <= {GOAL:.2f}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
