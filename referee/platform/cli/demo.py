"""`referee demo`: a fresh workspace, the example competitions, their sample submissions, leaderboards."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from referee.platform.core.errors import RefereeError

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
DEMO_MARKER = ".referee-demo"


def load_manifest(examples_dir: Path = EXAMPLES_DIR) -> list[dict[str, Any]]:
    path = examples_dir / "manifest.yaml"
    if not path.exists():
        raise RefereeError(f"no example manifest at {path} (the demo needs referee's source checkout)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))["examples"]


def prepare_example(entry: dict[str, Any], dest: Path, examples_dir: Path = EXAMPLES_DIR) -> Path:
    """Copy one example to ``dest`` and run its deterministic generator there."""
    src = examples_dir / entry["directory"]
    target = dest / entry["directory"]
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("data", "submissions", "__pycache__"),
                    dirs_exist_ok=True)
    subprocess.run([sys.executable, str(target / "generate.py"), str(target)], check=True)
    return target


def _docker_ready() -> bool:
    try:
        from referee.platform.runtime.engine import docker_client
        docker_client(timeout=5).ping()
        return True
    except Exception:
        return False


def _base_image_cached() -> bool:
    try:
        from referee.platform.runtime.engine import docker_client
        from referee.platform.runtime.images import BASE_IMAGE
        docker_client(timeout=5).images.get(BASE_IMAGE)
        return True
    except Exception:
        return False


def run_demo(workspace: Path, *, fresh: bool = True, with_containers: bool | None = None,
             out: Any = None, fleet: bool = False) -> dict[str, Any]:
    """Run the whole demo; returns a summary (used by tests). ``fleet``: the container samples run on a
    local two-node Ray cluster (a head that takes no jobs, a worker that cannot see the workspace)
    through a local registry, their inputs through an input store."""
    if fleet:
        return _run_on_fleet(workspace, fresh=fresh, out=out)
    return _run_demo(workspace, fresh=fresh, with_containers=with_containers, out=out)


def _run_on_fleet(workspace: Path, *, fresh: bool, out: Any) -> dict[str, Any]:
    import tempfile

    from referee.platform.cli.localfleet import start_demo_fleet
    if not (_docker_ready() and _base_image_cached()):
        raise RefereeError("`referee demo --fleet` needs a Docker engine and the base image (run `make images`)")
    workspace = workspace.resolve()
    if fresh:  # emptied before the worker node hides it (a directory replaced later would show through)
        _clear(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rf-demo-", dir="/tmp"))
    print("starting a registry and a two-node Ray cluster (about a minute) ...", flush=True)
    try:
        registry, ray_fleet = start_demo_fleet(root, hide=[workspace])
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    fleet = {"registry": {"url": f"{registry.address}/demo"},
             "backend": {"name": "ray", "max_in_flight": 4,
                         "options": {"address": ray_fleet.address, "input_store": str(root / "store"),
                                     "input_cache": str(root / "cache")}}}
    try:
        return _run_demo(workspace, fresh=False, with_containers=True, out=out, fleet=fleet)
    finally:
        import ray
        ray.shutdown()
        ray_fleet.stop()
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)


def _clear(workspace: Path) -> None:
    """Empty a demo workspace (only one that `referee demo` made)."""
    if workspace.exists() and any(workspace.iterdir()):
        if not (workspace / DEMO_MARKER).exists():
            raise RefereeError(f"{workspace} is not empty and was not made by `referee demo`; refusing to "
                               "replace it (choose another directory with -w, or `--keep`)")
        shutil.rmtree(workspace)


def _run_demo(workspace: Path, *, fresh: bool = True, with_containers: bool | None = None,
              out: Any = None, fleet: dict[str, Any] | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.markup import escape

    from referee.platform.cli.main import print_leaderboard
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.participation import host_create_team
    from referee.platform.controller.reconcile import Controller
    from referee.platform.leaderboard import build as lbm
    from referee.platform.leaderboard.render import render_leaderboard
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    con = out or Console(highlight=False)
    t0 = time.perf_counter()
    workspace = workspace.resolve()
    marker = workspace / DEMO_MARKER
    if fresh:
        _clear(workspace)
    store = Store(workspace)
    marker.write_text("made by `referee demo`; `referee demo` may delete and rebuild this directory\n")
    comps_dir = workspace / "competitions"
    exports = workspace / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    if with_containers is None:
        with_containers = _docker_ready() and _base_image_cached()
    summary: dict[str, Any] = {"workspace": str(workspace), "competitions": {}}
    for entry in load_manifest():
        if fleet and not entry.get("containers"):
            continue  # the fleet demo runs the container samples
        target = prepare_example(entry, comps_dir)
        if fleet:  # the same competition, on the fleet: one block changed, plus the registry
            spec = yaml.safe_load((target / "competition.yaml").read_text(encoding="utf-8"))
            spec.update(fleet)
            (target / "competition.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        comp = load_into_store(store, target / "competition.yaml")
        con.rule(f"[bold]{escape(comp.title)}[/bold] ({comp.id})")
        accepted, rejected = [], []
        samples = [] if fleet else list(entry.get("submissions", []))
        if with_containers:
            samples += list(entry.get("containers", []))
        for name in dict.fromkeys(s["team"] for s in samples):  # teams are records: created explicitly
            host_create_team(store, comp.id, name)
        for s in samples:
            path = target / s["file"]
            try:
                sid = submit(store, comp, s["team"], path, kind=s.get("kind"))
                accepted.append(sid)
                con.print(f"  submitted [green]#{sid}[/green] {s['team']:8} {escape(s['file'])}")
            except RefereeError as exc:
                rejected.append({"file": s["file"], "message": str(exc)})
                con.print(f"  [yellow]rejected[/yellow]  {s['team']:8} {escape(str(exc))}")
        result = Controller(store, comp).run()  # container examples declare the docker backend
        boards = {}
        for split in ("public", "private"):
            lb = lbm.build(store, comp, split=split)
            print_leaderboard(lb)
            for ext in ("md", "json", "csv"):
                (exports / f"{comp.id}-{split}.{ext}").write_text(render_leaderboard(lb, ext), encoding="utf-8")
            boards[split] = lb
        for sub in store.submissions(comp.id, status="failed"):
            con.print(f"  [red]#{sub.id} failed[/red] ({sub.failure_reason}): {escape(sub.failure_message or '')}")
        summary["competitions"][comp.id] = {"accepted": accepted, "rejected": rejected,
                                            "scored": result.scored, "failed": result.failed,
                                            "leaderboards": boards}
    elapsed = time.perf_counter() - t0
    summary["seconds"] = elapsed
    con.rule("done")
    con.print(f"demo finished in {elapsed:.1f}s")
    con.print(f"workspace:     {workspace}  (SQLite database referee.db, submissions under blobs/)")
    con.print(f"competitions:  {comps_dir}")
    con.print(f"leaderboards:  {exports}  (Markdown, JSON, CSV for each split)")
    if not with_containers:
        con.print("[dim]container submissions skipped: run `make images` (needs a Docker engine), then "
                  "`referee demo --with-containers`[/dim]")
    con.print(f"try:  referee -w {workspace} leaderboard deepfake --split private")
    return summary
