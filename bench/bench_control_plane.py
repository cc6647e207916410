"""Control-plane benchmark: API calls against AWS Batch at 200 jobs in flight, and GPU time lost when the
scheduler restarts on Ray, each next to a baseline measured in the same run.

Part 1 (Batch, moto's server over HTTP): N submissions through the Controller and the aws-batch backend
with 200 in flight; every call referee makes goes through boto3 to moto and is counted by operation.
moto's Batch would start a container per job; here each job instead holds its "instance" for a set time
and writes its prediction file (200 containers at once do not fit this machine), which changes nothing
about the calls referee makes. Baseline: the same run polling every 0.2 s with DescribeJobs unbudgeted
(what referee did before). Prints calls per job and per minute, and DescribeJobs per second while at
least 190 jobs were in flight                                                        goal: <= 1.0/s

Part 2 (Ray, a local cluster with one logical GPU): a 1-GPU job runs ~20 s; `referee run` is killed with
SIGKILL after 8 s and started again. GPU-seconds lost = GPU time of every run of the job minus the one
whose result counted. Baseline: the same restart when the job's supervisor dies with the scheduler (a
driver-owned Ray task, what referee did before)                                      goal: 0

    python bench/bench_control_plane.py [--jobs 400] [--in-flight 200] [--skip-ray] [--skip-batch]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from referee.platform.core.units import format_duration  # noqa: E402

N_ITEMS = 10


# -- part 1: Batch -----------------------------------------------------------------------------------
def _moto_jobs_hold_their_instance() -> None:
    """moto's Batch job: no container; it holds its instance for BENCH_SECONDS, then writes its output into
    the job's output volume (shared-fs mode) and succeeds."""
    from moto.batch.models import Job

    def run(self: Any) -> None:
        env = {e["name"]: e["value"] for e in self.container_overrides.get("environment", [])}
        self.job_started_at = __import__("datetime").datetime.now()
        self._start_attempt()
        end = time.monotonic() + float(env.get("BENCH_SECONDS", "1"))
        while time.monotonic() < end and not self.stop:
            time.sleep(0.2)
        volumes = {v["name"]: v["host"]["sourcePath"] for v in self.job_definition.container_properties["volumes"]}
        out = Path(volumes["output"]) / env["REFEREE_OUTPUT_FILE"]
        out.write_text("id,label\n" + "".join(f"i{k},0.7\n" for k in range(N_ITEMS)))
        self.exit_code = 0
        self._mark_stopped(success=not self.stop)

    Job.run = run  # type: ignore[method-assign]


def _bench_kind(seconds: Any) -> Any:
    from referee.plugins.hookspecs import hookimpl
    from referee.plugins.records import SubmissionKindInfo

    class BenchHold:
        @staticmethod
        @hookimpl
        def referee_submission_kinds() -> list[Any]:
            return [SubmissionKindInfo(name="bench-hold", detect=lambda p: False, ingest=lambda *a, **k: {},
                                       to_job=lambda sub, comp, store: {
                                           "image": "bench/hold:1", "command": ["true"],
                                           "env": {"BENCH_SECONDS": str(seconds(sub.id))}})]

    return BenchHold


def batch_run(root: Path, endpoint: str, session: Any, role: str, n: int, in_flight: int, *,
              baseline: bool) -> dict[str, Any]:
    from referee.platform.backends.aws_batch import AwsBatchBackend
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store

    tag = "baseline" if baseline else "referee"
    d = root / tag
    d.mkdir()
    (d / "ref.csv").write_text("id,label\n" + "".join(f"i{k},{k % 2}\n" for k in range(N_ITEMS)))
    spec = {"id": f"cp-{tag}", "title": "Control plane", "data": {"reference": "ref.csv"},
            "metrics": [{"scorer": "accuracy"}], "leaderboard": {"intervals": {"enabled": False}},
            "resources": {"cpu": 1, "memory": "1g", "timeout": "10m"},
            "backend": {"name": "aws-batch", "max_in_flight": in_flight}}
    (d / "c.yaml").write_text(yaml.safe_dump(spec))
    store = Store(d / "ws")
    comp = load_into_store(store, d / "c.yaml")
    store.seed_pending(comp.id, "bench-hold", [f"team{i % 50}" for i in range(n)])
    opts: dict[str, Any] = {"describe_rate": 10_000.0} if baseline else {}
    backend = AwsBatchBackend(job_queue=f"cp-{tag}", endpoint_url=endpoint, session=session,
                              create_queue={"service_role": role}, **opts)
    calls: collections.Counter[str] = collections.Counter()
    describes: list[float] = []

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1
        if model.name == "DescribeJobs":
            describes.append(time.monotonic())

    for client in (backend.batch, backend.logs_client):
        client.meta.events.register("before-call", lambda model, **kw: count(model, **kw))
    calls.clear()
    ctl = Controller(store, comp, backend, **({"poll_interval": 0.2} if baseline else {}))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), len(ctl._jobs)))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.monotonic()
    sampler.start()
    summary = ctl.run()
    stop.set()
    sampler.join()
    elapsed = time.monotonic() - start
    if summary.scored != n:
        raise SystemExit(f"{tag}: only {summary.scored} of {n} submissions were scored: {summary}")
    full = [t for t, k in samples if k >= in_flight * 0.95]
    window = (max(full) - min(full)) if len(full) > 1 else 0.0
    in_window = [t for t in describes if full and min(full) <= t <= max(full)]
    store.close()
    return {"calls": dict(calls), "elapsed": elapsed, "window": window,
            "describe_per_s": len(in_window) / window if window else float("nan")}


def part_batch(n: int, in_flight: int) -> list[tuple[str, str, str, bool | None]]:
    import boto3
    from moto.server import ThreadedMotoServer

    from referee.plugins.manager import PluginManager, reset_runtime

    def seconds(sid: int) -> int:
        return 15 + (sid * 13) % 31  # 15-45 s, deterministic

    reset_runtime(PluginManager(entrypoints=False, extra=[_bench_kind(seconds)]))
    _moto_jobs_hold_their_instance()
    from referee.platform.cli.localfleet import free_port
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import logging
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name="us-east-1")
        endpoint = f"http://127.0.0.1:{port}"
        trust = '{"Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}}]}'
        role = session.client("iam", endpoint_url=endpoint).create_role(
            RoleName="bench", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        with tempfile.TemporaryDirectory() as tmp:
            runs = {}
            for baseline in (False, True):
                label = "baseline: fixed 0.2 s polls, DescribeJobs unbudgeted" if baseline else "referee"
                print(f"  running {label} ({n} submissions, {in_flight} in flight) ...", flush=True)
                runs[baseline] = batch_run(Path(tmp), endpoint, session, role, n, in_flight, baseline=baseline)
    finally:
        server.stop()
    print(f"\nBatch against moto: {n} submissions, {in_flight} in flight, jobs of 15-45 s")
    ops = sorted(set(runs[False]["calls"]) | set(runs[True]["calls"]))
    print(f"  {'calls per job':<28}{'referee':>10}{'baseline':>10}    {'per minute':>10}{'baseline':>10}")
    for op in ops:
        a, b = runs[False]["calls"].get(op, 0), runs[True]["calls"].get(op, 0)
        print(f"  {op:<28}{a / n:>10.2f}{b / n:>10.2f}    {60 * a / runs[False]['elapsed']:>10.1f}"
              f"{60 * b / runs[True]['elapsed']:>10.1f}")
    ours, base = runs[False]["describe_per_s"], runs[True]["describe_per_s"]
    print(f"  DescribeJobs per second with >= {int(in_flight * 0.95)} in flight: {ours:.2f} "
          f"(over {runs[False]['window']:.0f}s; baseline {base:.2f}, {base / ours:.1f}x more)")
    print(f"  wall time: {runs[False]['elapsed']:.0f}s (baseline {runs[True]['elapsed']:.0f}s)")
    return [("DescribeJobs per second at 200 in flight", f"{ours:.2f}", "<= 1.00", ours <= 1.0),
            ("  baseline (fixed 0.2 s polls)", f"{base:.2f}", "", None)]


# -- part 2: Ray -------------------------------------------------------------------------------------
JOB = """
import os, pathlib, time
log = pathlib.Path(BENCH_LOG)
t0 = time.time()
with open(log, "a") as f:
    f.write(f"start {t0}\\n")
time.sleep(20)
with open(log, "a") as f:
    f.write(f"end {t0} {time.time()}\\n")
pathlib.Path(os.environ["REFEREE_OUTPUT"], os.environ["REFEREE_OUTPUT_FILE"]).write_text(
    "id,label\\n" + "".join(f"i{k},0.7\\n" for k in range(10)))
"""


def _start_ray(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    from referee.platform.cli.localfleet import _wait, free_port, ray_env
    port = free_port()
    log = root / "head.log"
    exe = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(exe), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=1",
                             "--include-dashboard=false", f"--temp-dir={root / 't'}", "--node-ip-address=127.0.0.1",
                             "--disable-usage-stats", "--include-log-monitor=false", "--no-monitor", "--block"],
                            env=ray_env(), stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    _wait(lambda: "Ray runtime started" in log.read_text(errors="replace"), "the Ray head", 180, proc, log)
    return proc, f"127.0.0.1:{port}"


def ray_restart(root: Path, address: str, *, supervisor_dies: bool) -> float:
    """GPU-seconds lost by one scheduler restart (see the module docstring)."""
    from referee.platform.cli.localfleet import ray_env
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    tag = "baseline" if supervisor_dies else "referee"
    d = root / tag
    (d / "code").mkdir(parents=True)
    log = d / "runs.log"
    (d / "code" / "predict.py").write_text(f"BENCH_LOG = {str(log)!r}\n" + JOB)
    (d / "ref.csv").write_text("id,label\n" + "".join(f"i{k},{k % 2}\n" for k in range(N_ITEMS)))
    (d / "c.yaml").write_text(yaml.safe_dump({
        "id": f"gpu-{tag}", "title": "GPU", "data": {"reference": "ref.csv"}, "metrics": [{"scorer": "accuracy"}],
        "resources": {"cpu": 1, "gpus": 1, "memory": "256m", "timeout": "5m"},
        "backend": {"name": "ray", "options": {"address": address, "runner": "process", "namespace": f"bench-{tag}"}}}))
    store = Store(d / "ws")
    comp = load_into_store(store, d / "c.yaml")
    sid = submit(store, comp, "alpha", d / "code")
    store.close()
    env = ray_env()
    cmd = [sys.executable, "-m", "referee.platform.cli", "-w", str(d / "ws"), "run", comp.id, "--no-progress"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + 180
    while not (log.exists() and "start" in log.read_text()):
        if time.monotonic() > end:
            raise SystemExit(f"{tag}: the job never started")
        time.sleep(0.2)
    time.sleep(8)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    stopped_at = float("inf")
    if supervisor_dies:  # what a driver-owned task did: it died with its driver, and its process with it
        import ray
        ray.init(address=address, namespace=f"bench-{tag}", logging_level="ERROR")
        for name in ray.util.list_named_actors():
            ray.kill(ray.get_actor(name))
        stopped_at = time.time()
        ray.shutdown()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if again.returncode != 0:
        raise SystemExit(f"{tag}: the second run failed: {again.stderr[-2000:]}")
    store = Store(d / "ws")
    if store.get_submission(sid).status != "scored":
        raise SystemExit(f"{tag}: not scored: {store.get_submission(sid).failure_message}")
    store.close()
    lines = log.read_text().split("\n")
    starts = sorted(float(x.split()[1]) for x in lines if x.startswith("start "))
    ends = {float(x.split()[1]): float(x.split()[2]) for x in lines if x.startswith("end ")}
    # every run but the last (whose result counted) held the GPU for nothing: until it ended, or until it
    # was stopped (at the latest when the next run started)
    gpus = 1
    return gpus * sum(min(ends.get(t0, stopped_at), nxt) - t0 for t0, nxt in zip(starts, starts[1:]))


def part_ray() -> list[tuple[str, str, str, bool | None]]:
    from referee.platform.cli.localfleet import _stop
    with tempfile.TemporaryDirectory(prefix="bench-cp-ray-", dir="/tmp") as tmp:
        head, address = _start_ray(Path(tmp))
        try:
            ours = ray_restart(Path(tmp), address, supervisor_dies=False)
            base = ray_restart(Path(tmp), address, supervisor_dies=True)
        finally:
            _stop(head, grace=20, group=False)
            from referee.platform.cli.localfleet import _pids_mentioning
            for pid in _pids_mentioning(str(Path(tmp) / "t")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    print("\nRay: a 1-GPU job of 20 s, `referee run` killed with SIGKILL after 8 s and run again")
    print(f"  GPU-seconds lost per scheduler restart: {ours:.1f} (baseline, supervisor dies with the scheduler: "
          f"{base:.1f} = {format_duration(base)})")
    return [("GPU-seconds lost per scheduler restart (Ray)", f"{ours:.1f}", "0", ours == 0),
            ("  baseline (driver-owned supervision)", f"{base:.1f}", "", None)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--in-flight", type=int, default=200)
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args(argv)
    rows: list[tuple[str, str, str, bool | None]] = []
    if not args.skip_batch:
        rows += part_batch(args.jobs, args.in_flight)
    if not args.skip_ray:
        rows += part_ray()
    print(f"\n{'measure':50} {'value':>10} {'goal':>10}  verdict")
    failed = False
    for name, value, goal, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        failed |= ok is False
        print(f"{name:50} {value:>10} {goal:>10}  {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
