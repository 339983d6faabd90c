#!/usr/bin/env bash
# Installs everything the daemon and its test suite need: Debian packages for the real peers
# (slapd, radclient, pam_radius_auth, pamtester, a PostgreSQL server for the shared-store
# tests) and a virtualenv with the Python packages.
# Idempotent: does nothing that is already done.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${RADMFA_VENV:-$here/.venv}
# libldap2-dev libsasl2-dev: headers pip builds python-ldap with (it has no wheels).
# build-essential python3-dev: the C compiler and Python's headers, for python-ldap and for the
# modules mypyc compiles (setup.py; without them radmfa installs as pure Python).
# chromium chromium-driver: the portal's browser tests (the two packages match each other);
# zbar-tools: zbarimg, which reads the portal's QR code back.
# freeradius eapoltest: Wi-Fi (802.1X) tests, FreeRADIUS terminating EAP-TTLS in front of radmfa
# (contrib/freeradius-eap) with wpa_supplicant's eapol_test as the laptop. radsecproxy: the
# RadSec (RADIUS over TLS) client in front of the daemon in the tests.
want_deb=(slapd ldap-utils freeradius-utils libpam-radius-auth pamtester postgresql libldap2-dev libsasl2-dev
  build-essential python3-dev
  chromium chromium-driver zbar-tools freeradius eapoltest radsecproxy)
if [ "${1:-}" = "--bench" ]; then want_deb+=(freeradius-ldap); shift; fi

missing=()
for p in "${want_deb[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The postinsts would start a system slapd on :389, PostgreSQL on :5432 and radsecproxy; the tests start
  # their own (as the postgres user, on free loopback ports). policy-rc.d refuses every start.
  no_main=/etc/postgresql-common/createcluster.d/radmfa-install-deps.conf
  trap 'rm -f /usr/sbin/policy-rc.d "$no_main"' EXIT
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  # Nor is Debian's default "main" cluster created (postgresql-common reads this directory):
  # nothing of it would be used. Only for this install; the file goes with policy-rc.d.
  mkdir -p "$(dirname "$no_main")"
  printf 'create_main_cluster = false\n' > "$no_main"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d "$no_main"
  trap - EXIT
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.radmfa-installed"
# The editable install keeps the compiled modules (radmfa.native.COMPILED) beside their sources:
# one edited since the last build would run its old compiled code, so rebuild. With RADMFA_PURE=1
# a (re)build is pure.
compiled_changed() {
  local path
  for path in $(grep -o '"radmfa/[a-z_/]*\.py"' "$here/daemon/radmfa/native.py" | tr -d '"') \
    radmfa/native.py setup.py; do
    case $path in setup.py) path=$here/setup.py ;; *) path=$here/daemon/$path ;; esac
    [ "$path" -nt "$stamp" ] && return 0
  done
  return 1
}
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ] || compiled_changed; then
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$here[test]"
  touch "$stamp"
fi
