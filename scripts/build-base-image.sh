#!/usr/bin/env bash
# Build referee's base images locally from Debian packages (debootstrap + docker import); no registry.
# Cached by tag and recipe: a current image is kept unless --force is given. Needs root and a Docker engine.
#   scripts/build-base-image.sh            # all base images (referee/base-python:bookworm)
#   scripts/build-base-image.sh --force python
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/ensure-docker.sh
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
exec "$VENV/bin/referee" images build "$@"
