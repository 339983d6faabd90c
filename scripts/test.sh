#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, type-checks, then unit and
# integration tests against the compiled build, then the unit tests against a pure one.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
cd "$here"
python="${RADMFA_VENV:-$here/.venv}/bin/python"
# Types first (pyproject.toml's [tool.mypy]: daemon/radmfa and tests/support); any error fails
# the run before a test starts. Its cache in .mypy_cache makes a re-run take about a second.
"$python" -m mypy
# The whole suite runs against the build install-deps.sh made: compiled with mypyc where a C
# compiler is present (radmfa --version says which). With no arguments, the unit tests then run
# once more against the same sources as pure Python (a copy of daemon/ without the extension
# modules, first on the path): a test that patches a module's internals can only see them there,
# and a compiled-only difference in behaviour shows up as a difference between the two runs.
"$python" -m radmfa --version
if [ $# -gt 0 ]; then exec "$python" -m pytest "$@"; fi
# Two processes, each taking whole test files (--dist loadfile: a file's module-scoped servers
# stay in one process; each process starts its own session-scoped slapd and PostgreSQL, on
# free ports). RADMFA_TEST_WORKERS=0 runs everything in this one process.
workers="${RADMFA_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  "$python" -m pytest
else
  "$python" -m pytest -n "$workers" --dist loadfile
fi
pure=$(mktemp -d)
trap 'rm -rf "$pure"' EXIT
cp -r "$here/daemon" "$pure/daemon"
find "$pure/daemon" -name '*.so' -delete
PYTHONPATH="$pure/daemon${PYTHONPATH:+:$PYTHONPATH}" "$python" -m radmfa --version
PYTHONPATH="$pure/daemon${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pytest -q tests/unit
