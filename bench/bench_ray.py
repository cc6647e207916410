"""Dispatch cost of referee's Ray backend against plain Ray tasks, and scheduler cost as the queue grows.

Part 1 (Ray): N no-op jobs (each runs ``true`` as a process on a Ray worker) through referee's
RayBackend (submit, bounded in-flight, poll), then the same N ``true`` processes as plain Ray tasks,
in the same run on the same local cluster. Prints seconds, per-job cost and the ratio.

Part 2 (scheduler): the Controller drains 1k / 10k / 100k queued submissions through an in-memory
backend (no engine: this is referee's own bookkeeping: claiming, job rows, polling, scoring a tiny
prediction file, hooks). Prints per-job microseconds at each size and a verdict computed from them:
near-linear when the per-job cost at the largest queue is less than twice that at the smallest (the
criterion bench_simulation.py uses too), with the fitted exponent of seconds ~ queued^k.

    python bench/bench_ray.py                      # both parts, 10,000 Ray jobs, 1k/10k/100k queue
    python bench/bench_ray.py --jobs 2000 --sizes 1000,10000 --skip-ray
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

NOOP = ["true"]


# -- part 1: Ray ------------------------------------------------------------------------------------
def bench_ray(n: int, num_cpus: int, max_in_flight: int) -> None:
    import ray

    from referee.platform.backends.ray import RayBackend, execute_job
    from referee.platform.core.jobs import JobSpec, Resources

    # a cluster of its own ("local": never someone else's), in its own temp dir, stopped by shutdown()
    temp_dir = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR",
             _temp_dir=temp_dir)

    @ray.remote(num_cpus=1)
    def plain(cmd: list[str]) -> int:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode

    runner = ray.remote(num_cpus=1, max_retries=0)(execute_job)

    with tempfile.TemporaryDirectory() as tmp:
        def specs(tag: str) -> list[JobSpec]:
            return [JobSpec(job_id=f"{tag}-s{i}-a1", submission_id=i, attempt=1, competition_id="bench",
                            output_dir=f"{tmp}/{tag}/s{i}", output_file="out.txt", command=NOOP,
                            resources=Resources(cpu=1, memory=512 * 2**20), timeout_s=60) for i in range(n)]

        # warm the worker pool so no path pays for starting workers
        ray.get([plain.remote(NOOP) for _ in range(num_cpus * 8)])

        start = time.perf_counter()
        codes = ray.get([plain.remote(NOOP) for _ in range(n)])
        t_plain = time.perf_counter() - start
        assert not any(codes), "a plain task failed"

        start = time.perf_counter()
        results = ray.get([runner.remote(j.to_dict(), "process") for j in specs("node")])
        t_node = time.perf_counter() - start
        assert all(r["status"].state.value == "succeeded" for r in results), "a runner task failed"

        backend = RayBackend(runner="process", max_in_flight=max_in_flight, poll_timeout_s=0.01)
        start = time.perf_counter()
        _drain(backend, specs("ref"))
        t_ref = time.perf_counter() - start
        backend.close()
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"Ray: {n} no-op jobs (each runs `true`) on a local cluster, {num_cpus} CPUs, "
          f"referee in-flight bound {max_in_flight}")
    print(f"  {'path':<52}{'seconds':>9}{'ms/job':>9}")
    rows = [("plain Ray tasks: subprocess.run(['true'])", t_plain),
            ("Ray tasks running referee's node-side job runner", t_node),
            ("referee RayBackend: submit all, bounded, poll", t_ref)]
    for label, t in rows:
        print(f"  {label:<52}{t:>9.2f}{1000 * t / n:>9.3f}")
    print(f"  referee overhead per job: {1000 * (t_ref - t_plain) / n:.3f} ms "
          f"(node-side runner {1000 * (t_node - t_plain) / n:.3f} ms, driver-side dispatch "
          f"{1000 * (t_ref - t_node) / n:.3f} ms); ratio referee/plain: {t_ref / t_plain:.2f}x")


def _drain(backend: Any, jobs: list[Any], window: int = 128) -> None:
    """Submit every job at once (the backend holds back what exceeds its in-flight bound), then poll the
    oldest unfinished ones until all have finished, as the scheduler would."""
    pending = [backend.submit(j) for j in jobs]
    while pending:
        head = pending[:window]
        statuses = backend.poll(head)
        for h, st in statuses.items():
            if st.state.final and st.state.value != "succeeded":
                raise SystemExit(f"job {h} failed: {st.reason} {st.message}")
        done = {h for h, st in statuses.items() if st.state.final}
        for h in done:
            backend.cleanup(h)
        pending = [h for h in head if h not in done] + pending[window:]


# -- part 2: scheduler scaling ----------------------------------------------------------------------
def _noop_kind_plugin() -> Any:
    """A job-running submission kind for the benchmark (every job runs the same no-op command)."""
    from referee.plugins.hookspecs import hookimpl
    from referee.plugins.records import SubmissionKindInfo

    class BenchNoopKind:
        @staticmethod
        @hookimpl
        def referee_submission_kinds() -> list[Any]:
            return [SubmissionKindInfo(name="bench-noop", detect=lambda p: False, ingest=lambda *a, **k: {},
                                       to_job=lambda sub, comp, store: {"command": NOOP})]

    return BenchNoopKind


def _fast_fake(output: str, fail: bool) -> Any:
    """FakeBackend with O(1) submit (the stock one counts running jobs by scanning all it has seen).

    ``fail``: every job exits non-zero, so the run measures dispatch bookkeeping without scoring.
    """
    from referee.platform.core.jobs import FailureReason, JobState, JobStatus, now_utc
    from referee.plugins.testing import FakeBackend

    class FastFake(FakeBackend):
        def submit(self, job: Any) -> str:
            self.jobs[job.job_id] = job
            self._polls[job.job_id] = 0
            return job.job_id

        def _finish(self, job: Any) -> JobStatus:
            if fail:
                t = now_utc()
                return JobStatus(JobState.FAILED, FailureReason.EXITED_NONZERO, "bench", exit_code=1,
                                 started_at=t, finished_at=t)
            return super()._finish(job)

    return FastFake(output=output)


def _scheduler_run(n: int, max_in_flight: int, root: Path, *, score: bool) -> tuple[float, int]:
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store

    d = root / f"q{n}-{score}"
    d.mkdir()
    (d / "ref.csv").write_text("id,label\na,1\nb,0\n")
    spec = {"id": "bench", "title": "Bench", "data": {"reference": "ref.csv"},
            "metrics": [{"scorer": "accuracy"}], "backend": {"name": "fake", "max_in_flight": max_in_flight}}
    (d / "c.yaml").write_text(yaml.safe_dump(spec))
    store = Store(d / "ws")
    comp = load_into_store(store, d / "c.yaml")
    store.seed_pending("bench", "bench-noop", [f"team{i % 50}" for i in range(n)])
    sched = Controller(store, comp, _fast_fake("id,label\na,0.9\nb,0.2\n", fail=not score),
                      max_in_flight=max_in_flight, poll_interval=0)
    start = time.perf_counter()
    summary = sched.run()
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed, summary.scored if score else summary.failed


def scaling_verdict(sizes: list[int], seconds: list[float]) -> str:
    """Near-linear when the per-job cost at the largest size is under twice that at the smallest."""
    if len(sizes) < 2:
        return "one size only: no scaling verdict"
    growth = (seconds[-1] / sizes[-1]) / (seconds[0] / sizes[0])
    k = math.log(seconds[-1] / seconds[0]) / math.log(sizes[-1] / sizes[0])
    verdict = "near-linear" if growth < 2.0 else "NOT near-linear"
    return (f"{verdict}: per-job cost x{growth:.2f} from {sizes[0]:,} to {sizes[-1]:,} queued "
            f"(seconds ~ queued^{k:.2f}; near-linear means under x2)")


def run_scheduler_part(sizes: list[int], full_sizes: list[int], max_in_flight: int) -> None:
    from referee.plugins.manager import PluginManager, set_plugin_manager

    set_plugin_manager(PluginManager(entrypoints=False, extra=[_noop_kind_plugin()]))
    print(f"Controller: drain N queued submissions through an in-memory backend (max_in_flight={max_in_flight})")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "warm").mkdir()
        _scheduler_run(200, max_in_flight, Path(tmp) / "warm", score=True)  # warm imports and caches
        for label, score, ns in (("dispatch only (jobs fail: claim, job rows, poll, finish)", False, sizes),
                                 ("full path (jobs succeed and are scored)", True, full_sizes)):
            if not ns:
                continue
            print(f"  {label}")
            print(f"  {'queued':>8}{'seconds':>10}{'us/job':>10}{'vs smallest':>13}")
            base = None
            took = []
            for n in ns:
                elapsed, done = _scheduler_run(n, max_in_flight, Path(tmp), score=score)
                if done != n:
                    raise SystemExit(f"only {done} of {n} submissions were finished")
                per = 1e6 * elapsed / n
                base = base or per
                took.append(elapsed)
                print(f"  {n:>8}{elapsed:>10.2f}{per:>10.1f}{per / base:>12.2f}x")
            print(f"  {scaling_verdict(ns, took)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000, help="no-op jobs for the Ray part")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--sizes", default="1000,10000,100000", help="queue sizes, dispatch only")
    ap.add_argument("--full-sizes", default="1000,10000", help="queue sizes with scoring ('' to skip)")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-scheduler", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_ray:
        bench_ray(args.jobs, args.num_cpus, args.max_in_flight)
    if not args.skip_scheduler:
        run_scheduler_part([int(s) for s in args.sizes.split(",") if s],
                           [int(s) for s in args.full_sizes.split(",") if s], args.max_in_flight)


if __name__ == "__main__":
    sys.exit(main())
