#!/usr/bin/env bash
# Installs the stand-in bluetoothd the BLE radio is tested against: a private dbus-daemon
# (apt dbus), dbus-python and PyGObject from Debian (python3-dbus, python3-gi: the
# D-Bus main loop python-dbusmock runs on), and python-dbusmock pinned in requirements.txt
# in a venv at tests/peers/bluez/.venv (gitignored) that sees those system packages.
# Idempotent: does nothing when all is in place. Used when FIELDGATE_PEERS=1
# (tests/it/ble/bluez.rs).
set -euo pipefail
cd "$(dirname "$0")"
# The system interpreter: python3-dbus and python3-gi are built for it.
PYTHON=/usr/bin/python3
need=()
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus)
[ -x "$PYTHON" ] || need+=(python3)
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
"$PYTHON" -c 'import dbus, dbus.mainloop.glib' >/dev/null 2>&1 || need+=(python3-dbus)
"$PYTHON" -c 'import gi; from gi.repository import GLib' >/dev/null 2>&1 || need+=(python3-gi)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
stamp="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat .venv/.fieldgate-stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
rm -rf .venv
"$PYTHON" -m venv --system-site-packages .venv
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
.venv/bin/python -c 'import dbus, dbusmock; from gi.repository import GLib'
echo "$stamp" > .venv/.fieldgate-stamp
echo "BlueZ stand-in installed in $(pwd)/.venv: $(.venv/bin/pip freeze --local | grep -i '^python-dbusmock==')"
