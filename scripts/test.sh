#!/usr/bin/env bash
# Run the whole test suite against real engines (Docker engine started when possible).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/ensure-docker.sh || echo "referee: continuing without a Docker engine (Docker tests will skip, or fail under REFEREE_REQUIRE_ENGINES=1)" >&2
bash scripts/ensure-build-engine.sh || echo "referee: continuing without the build engine (Dockerfile builds are refused; their tests skip, or fail under REFEREE_REQUIRE_ENGINES=1)" >&2
# The architecture is checked, not hoped for: the layer contracts (import-linter) and the types (mypy).
echo "referee: checking the layers (lint-imports) and the types (mypy)..." >&2
"$VENV/bin/lint-imports" --no-cache >/tmp/referee-lint-imports.log 2>&1 || { cat /tmp/referee-lint-imports.log; exit 1; }
"$VENV/bin/mypy" || exit 1
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
