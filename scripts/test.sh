#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, type-checks, then unit and
# integration tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
cd "$here"
python="${RADMFA_VENV:-$here/.venv}/bin/python"
# Types first (pyproject.toml's [tool.mypy]: daemon/radmfa and tests/support); any error fails
# the run before a test starts. Its cache in .mypy_cache makes a re-run take about a second.
"$python" -m mypy
exec "$python" -m pytest "$@"
