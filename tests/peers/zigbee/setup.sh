#!/usr/bin/env bash
# Installs the independent Zigbee host stacks fieldgate is checked against (idempotent):
# - zigbee-herdsman (npm, version pinned in package.json): its pure codec modules for the
#   differential codec/backup tests, and its Controller with the zstack adapter as a host
#   of `fieldgate emulate zigbee` (herdsman-host.js);
# - zigbee-herdsman-converters (npm, pinned in package.json; it brings its own
#   zigbee-herdsman) for the device definitions differential (definitions.js);
# - zigpy-znp (PyPI) in a virtualenv here (.venv), as a host of the emulator (zigpy_host.py).
# Used when FIELDGATE_PEERS=1 (tests/it/zigbee.rs, tests/it/emulate.rs) and by the codec
# benchmark.
set -euo pipefail
cd "$(dirname "$0")"
HERDSMAN="$(sed -n 's/.*"zigbee-herdsman": "\(.*\)".*/\1/p' package.json)"
CONVERTERS="$(sed -n 's/.*"zigbee-herdsman-converters": "\(.*\)".*/\1/p' package.json)"
if ! { [ -f node_modules/zigbee-herdsman/package.json ] &&
       grep -q "\"version\": \"$HERDSMAN\"" node_modules/zigbee-herdsman/package.json &&
       [ -d node_modules/@serialport/stream ] &&
       grep -q "\"version\": \"$CONVERTERS\"" node_modules/zigbee-herdsman-converters/package.json 2>/dev/null; }; then
  # package.json pins zigbee-on-host (only herdsman's `zoh` adapter uses it) to the newest
  # release the registry has: herdsman 11.1.1 asks for ^0.3.2, which is not published.
  npm install --no-audit --no-fund --silent
  echo "zigbee-herdsman $HERDSMAN and zigbee-herdsman-converters $CONVERTERS installed in $(pwd)/node_modules"
fi
ZIGPY_ZNP="${ZIGPY_ZNP_VERSION:-1.1.1}"
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('zigpy-znp') != '$ZIGPY_ZNP')" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "zigpy-znp==$ZIGPY_ZNP"
  echo "zigpy-znp $ZIGPY_ZNP installed in $(pwd)/.venv"
fi
