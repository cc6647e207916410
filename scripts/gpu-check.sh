#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, run one sandboxed container job that uses torch on CUDA
# through each backend that runs locally (docker, ray), and print what each saw.
#
#   scripts/gpu-check.sh                 # needs: an NVIDIA driver, a Docker engine with the NVIDIA runtime
#   REFEREE_GPU_IMAGE=my/torch:cuda scripts/gpu-check.sh   # an image with python3 and CUDA torch
#
# Without REFEREE_GPU_IMAGE it builds referee/gpu-check from the base image and the CUDA build of torch
# installed in the virtual environment (same Python 3.11 as the base image; no network needed).
# Exit status: 0 every backend ran on the GPU, 1 a backend failed, 2 this machine cannot run the check.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python3
say() { echo "gpu-check: $*" >&2; }

if ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -d /proc/driver/nvidia/gpus ]; then
  say "no NVIDIA GPU on this machine (no nvidia-smi, no /proc/driver/nvidia/gpus); run it on a GPU host"
  exit 2
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >&2
bash scripts/ensure-docker.sh || { say "no Docker engine"; exit 2; }
if ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  say "the Docker engine has no NVIDIA runtime: install nvidia-container-toolkit and run"
  say "  nvidia-ctk runtime configure --runtime=docker && restart dockerd (or set sandbox.gpu_driver: cdi)"
  exit 2
fi

IMAGE=${REFEREE_GPU_IMAGE:-}
if [ -z "$IMAGE" ]; then
  site=$("$PY" -c "import torch, os; assert torch.version.cuda, 'cpu'; print(os.path.dirname(os.path.dirname(torch.__file__)))" 2>/dev/null) || {
    say "the virtual environment's torch is not a CUDA build; set REFEREE_GPU_IMAGE to an image with CUDA torch"
    exit 2; }
  "$VENV/bin/referee" images build >&2 || exit 2
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  mkdir -p "$ctx/site"
  for pkg in torch torchgen functorch nvidia triton sympy mpmath networkx jinja2 markupsafe filelock fsspec typing_extensions.py; do
    [ -e "$site/$pkg" ] && cp -a "$site/$pkg" "$ctx/site/"
  done
  printf 'FROM referee/base-python:bookworm\nCOPY site /opt/torch-site\nENV PYTHONPATH=/opt/torch-site\n' > "$ctx/Dockerfile"
  docker build -q -t referee/gpu-check "$ctx" >&2 || exit 2
  IMAGE=referee/gpu-check
fi
say "image: $IMAGE"

exec "$PY" - "$IMAGE" <<'EOF'
import sys, tempfile, time
from pathlib import Path
from referee.platform.core.jobs import JobSpec, JobState, Resources

image = sys.argv[1]
code = ("import os, torch; assert torch.cuda.is_available(), 'CUDA not available in the container'; "
        "x = torch.randn(1024, 1024, device='cuda'); y = (x @ x).sum().item(); "
        "open(os.path.join(os.environ['REFEREE_OUTPUT'], 'gpu.txt'), 'w').write("
        "f'{torch.cuda.get_device_name(0)} cuda={torch.version.cuda} sum={y:.1f}')")

def job(tmp, name):
    out = Path(tmp) / name / "output"
    out.mkdir(parents=True)
    return JobSpec(job_id=f"gpu-check-{name}", submission_id=0, attempt=1, competition_id="gpu-check",
                   output_dir=str(out), output_file="gpu.txt", image=image, command=["python3", "-c", code],
                   resources=Resources(cpu=1, memory=8 * 2**30, gpus=1), timeout_s=600)

def run(backend, j):
    h = backend.submit(j)
    while not (st := backend.poll([h])[h]).state.final:
        time.sleep(0.2)
    backend.collect(h, j)
    out = Path(j.output_dir) / "gpu.txt"
    return st, (out.read_text() if out.exists() else backend.logs(h)[-500:])

failed = 0
with tempfile.TemporaryDirectory() as tmp:
    from referee.platform.backends.docker import DockerBackend
    from referee.platform.backends.ray import RayBackend
    for name, make in (("docker", lambda: DockerBackend(slots=1)), ("ray", lambda: RayBackend(num_cpus=2, num_gpus=1))):
        try:
            st, text = run(make(), job(tmp, name))
        except Exception as exc:  # noqa: BLE001
            st, text = None, f"{type(exc).__name__}: {exc}"
        ok = st is not None and st.state == JobState.SUCCEEDED
        failed += not ok
        print(f"{name:7} {'OK  ' if ok else 'FAIL'} {text if ok else (st.message if st else '') + ' ' + text}")
sys.exit(1 if failed else 0)
EOF
