"""Throughput of sandboxed container jobs: referee (Controller + DockerBackend) against a plain loop
of ``docker run`` with the same sandbox flags and the same parallelism, in the same run.

Both sides run M short jobs (the deepfake example's good numpy model) N at a time. referee's side also
validates and scores every output; the plain loop only checks that the file was written. Rounds
alternate (plain, referee, plain, referee, ...) so load from other processes hits both alike.
Prints each round, the totals and the ratio referee/plain (goal: at most 1.10).

    python bench/bench_docker.py --jobs 32 --parallel 4 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "deepfake"
CPU, MEMORY, TIMEOUT = 1, "512m", "120s"


def prepare(work: Path, parallel: int) -> tuple[Path, Path]:
    """The deepfake example with the docker backend; returns (competition.yaml, code dir)."""
    ex = work / "deepfake"
    shutil.copytree(EXAMPLE, ex, ignore=shutil.ignore_patterns("data", "submissions", "__pycache__"))
    subprocess.run([sys.executable, str(ex / "generate.py"), str(ex)], check=True)
    doc = yaml.safe_load((ex / "competition.yaml").read_text())
    # slots bound the containers running at once; the scheduler keeps a second batch queued in the
    # backend so a slot refills the moment a container ends, while the scheduler is still scoring.
    doc.update(limits={}, backend={"name": "docker", "max_in_flight": 2 * parallel, "options": {"slots": parallel}},
               resources={"cpu": CPU, "memory": MEMORY, "timeout": TIMEOUT})
    (ex / "competition.yaml").write_text(yaml.safe_dump(doc))
    return ex / "competition.yaml", ex / "code" / "good"


def plain_flags(policy, inputs: Path, out: Path) -> list[str]:
    """The sandbox as ``docker run`` flags (what referee's container_config sets through the API)."""
    uid, gid = policy.uid_gid()
    return ["--rm", "--network", "none", "--user", f"{uid}:{gid}", "--read-only",
            "--tmpfs", f"/tmp:rw,nosuid,nodev,size={policy.tmp_size}", "--shm-size", str(policy.shm_size),
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--ipc", "private",
            "--pids-limit", str(policy.pids_limit), "--memory", MEMORY, "--memory-swap", MEMORY, "--cpus", str(CPU),
            "--ulimit", f"nofile={policy.nofile}:{policy.nofile}", "--ulimit", "core=0:0",
            "--log-driver", "json-file", "--log-opt", f"max-size={policy.max_log_bytes}", "--log-opt", "max-file=2",
            "--mount", f"type=bind,src={inputs},dst={policy.input_mount},readonly",
            "--mount", f"type=bind,src={out},dst={policy.output_mount}",
            "-e", "HOME=/tmp", "-e", f"REFEREE_INPUT={policy.input_mount}",
            "-e", f"REFEREE_OUTPUT={policy.output_mount}", "-e", "REFEREE_OUTPUT_FILE=predictions.csv"]


def run_plain(image: str, comp, jobs: int, parallel: int, work: Path) -> float:
    from referee.platform.runtime.sandbox import SandboxPolicy
    policy = SandboxPolicy.for_competition(comp)
    uid, gid = policy.uid_gid()
    outs = []
    for i in range(jobs):
        out = work / f"out{i}"
        out.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(out, uid, gid)
        outs.append(out)

    def one(out: Path) -> None:
        proc = subprocess.run(["docker", "run", *plain_flags(policy, comp.input_path, out), image],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not (out / "predictions.csv").is_file():
            raise RuntimeError(f"docker run failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")

    t = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, outs))
    return time.perf_counter() - t


def run_referee(image: str, spec: Path, jobs: int, work: Path) -> float:
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    store = Store(work / "ws")
    comp = load_into_store(store, spec)
    for i in range(jobs):
        submit(store, comp, f"team{i % 8}", f"docker-image:{image}")
    t, cpu = time.perf_counter(), time.process_time()
    summary = Controller(store, comp, poll_interval=0.02).run()
    elapsed = time.perf_counter() - t
    print(f"  (referee process CPU: {time.process_time() - cpu:.2f}s)")
    if summary.scored != jobs:
        raise RuntimeError(f"referee scored {summary.scored} of {jobs}: {summary.to_dict()}")
    store.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=32, help="M: container jobs per side and round")
    ap.add_argument("--parallel", type=int, default=4, help="N: containers at once (referee's slots)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import docker

    from referee.platform.controller.competitions import load_into_store
    from referee.platform.runtime.images import ensure_base_image
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        print(f"skipped: no Docker engine answers ({exc}); start one with scripts/ensure-docker.sh")
        return
    ensure_base_image(client, log=lambda m: print(f"  base image: {m}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="referee-bench-") as tmp:
        work = Path(tmp)
        spec, code = prepare(work, args.parallel)
        setup = Store(work / "setup")
        comp = load_into_store(setup, spec)
        image = setup.get_submission(submit(setup, comp, "setup", code)).metadata["image"]
        subprocess.run(["docker", "run", "--rm", image, "true"], check=True)  # warm the page cache
        print(f"{args.jobs} jobs per side, {args.parallel} at a time, image {image[:19]}, "
              f"docker {client.version()['Version']}")
        plain_total = referee_total = 0.0
        for r in range(args.rounds):
            p = run_plain(image, comp, args.jobs, args.parallel, work / f"plain{r}")
            q = run_referee(image, spec, args.jobs, work / f"referee{r}")
            plain_total += p
            referee_total += q
            print(f"round {r + 1}: plain docker run loop {p:7.2f}s ({args.jobs / p:5.2f} jobs/s)   "
                  f"referee {q:7.2f}s ({args.jobs / q:5.2f} jobs/s)   ratio {q / p:.3f}")
        ratio = referee_total / plain_total
        print(f"total:   plain {plain_total:.2f}s   referee {referee_total:.2f}s   "
              f"ratio referee/plain = {ratio:.3f} (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
