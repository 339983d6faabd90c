#!/usr/bin/env bash
# Installs radmfa into .venv/ and starts it on its embedded defaults: a demo users file as the
# password backend, the SQLite store, a TOTP token for the demo user (QR code printed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
exec "${RADMFA_VENV:-$here/.venv}/bin/radmfa" demo --dir "${RADMFA_DEMO_DIR:-$here/radmfa-demo}" "$@"
