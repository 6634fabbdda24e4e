#!/usr/bin/env bash
# Installs the differential peers of the BLE codec (bthome-ble, bleparser, ruuvitag-sensor;
# pinned with their dependencies in requirements.txt and constraints.txt) into a venv at
# tests/peers/ble/.venv (gitignored). Idempotent: does nothing when the venv already holds
# these pins. Used when FIELDGATE_PEERS=1 (protocols/ble/tests/peers.rs) and by the
# benchmark (protocols/ble/examples/ble_decode_bench.rs). bthome-ble needs Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
stamp="$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat .venv/.fieldgate-stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bthome-ble needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
rm -rf .venv
"$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
echo "$stamp" > .venv/.fieldgate-stamp
echo "BLE peers installed in $(pwd)/.venv: $(.venv/bin/pip freeze | grep -i -E '^(bthome-ble|bleparser|ruuvitag.sensor)==' | tr '\n' ' ')"
