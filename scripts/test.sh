#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then unit and integration tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
cd "$here"
exec "${RADMFA_VENV:-$here/.venv}/bin/python" -m pytest "$@"
