#!/usr/bin/env bash
# Make sure referee's build engine answers: a second dockerd, in a network namespace of its own, that
# Dockerfile submissions build on (see README, "Container intake"). Starting it needs root; without
# root, say what is missing and exit 1 (Dockerfile submissions are then refused, not built unsafely).
set -u
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || PY=python3
if "$PY" -m referee.platform.cli images build-engine status --json 2>/dev/null | grep -q '"running": true'; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n env "PATH=$PATH" "$PY" -m referee.platform.cli images build-engine start
  fi
  echo "referee: the build engine is not running and starting it needs root (a second dockerd, a network" >&2
  echo "         namespace and cgroups): run 'sudo referee images build-engine start' once" >&2
  exit 1
fi
for tool in dockerd unshare; do
  command -v "$tool" >/dev/null 2>&1 || { echo "referee: $tool is missing (apt-get install docker.io util-linux)" >&2; exit 1; }
done
exec "$PY" -m referee.platform.cli images build-engine start
